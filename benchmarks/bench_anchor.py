"""Cost per step of strategy=anchor against full fine-tuning (issue 19's goal: <= 1.1x), on the bundled
models from the shipped aligned front-end, same data, batch and steps.

    python benchmarks/bench_anchor.py --data runs/distill_cmp/data/train/manifest.jsonl [--steps 10]

Each run trains ``--steps`` optimizer steps; the first step (warm-up: allocations, the importance pass of
anchor happens before it) is left out of the timing, read from each run's metrics.csv. Run it alone.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path


def step_seconds(run: Path) -> float:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    t = [float(r["elapsed_s"]) for r in rows if r.get("elapsed_s")]
    return (t[-1] - t[0]) / max(1, len(t) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--importance", default=None, help="an importance run of the pre-trained LLM (else computed at start)")
    args = ap.parse_args()

    from speechkeep.config import load_config
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import train

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("full", ["strategy=full"]),
                            ("anchor", ["strategy=anchor"] + ([f"anchor.importance={args.importance}"] if args.importance else [])),
                            ("full again", ["strategy=full"])):
            run = Path(tmp) / name.replace(" ", "_")
            ov = ["init_from=auto", "model.llm=bundled:smollm2-135m", "model.speech_encoder=bundled:whisper-tiny.en",
                  f"data.train={args.data}", f"data.batch_size={args.batch_size}", f"max_steps={args.steps}",
                  "log_every=1", f"save_every={args.steps}", f"output_dir={run}", "optim.lr=5e-5", "seed=0"] + extra
            train(load_config(TrainConfig, None, ov), progress=False)
            out[name] = step_seconds(run)
            print(f"{name}: {out[name]:.2f} s/step", flush=True)
    full = (out["full"] + out["full again"]) / 2
    print(f"anchor / full = {out['anchor'] / full:.3f} (full measured before and after anchor: "
          f"{out['full']:.2f}, {out['full again']:.2f} s/step)")


if __name__ == "__main__":
    main()
