"""Training step time in fp32 and in bf16 autocast (``precision=bf16``), per strategy, on the bundled models
from the shipped aligned front-end, same data, batch, seed and steps.

    python benchmarks/bench_precision.py --data runs/upscale_cmp/data/train/manifest.jsonl [--steps 10]

On a CPU whose matrix units take bfloat16 (Intel AMX, AVX512-BF16: ``grep -o amx_bf16 /proc/cpuinfo``) the
matmuls run several times faster in bf16; weights and optimizer state stay fp32 (autocast). Prints s/step
(the first step, warm-up, left out; read from each run's metrics.csv), the ratio bf16/fp32 and how far the
bf16 run's per-step training loss is from the fp32 run's (same batches). The fp32 run of each strategy is
measured before and after its bf16 run (the mean is used), so a machine whose load drifts shows it. Run it
alone.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path


def read_run(run: Path) -> tuple[float, list[float]]:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    t = [float(r["elapsed_s"]) for r in rows if r.get("elapsed_s")]
    return (t[-1] - t[0]) / max(1, len(t) - 1), [float(r["loss"]) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a spoken training manifest (data build)")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--strategies", nargs="+", default=["full", "lora"])
    args = ap.parse_args()

    from speechkeep.config import load_config
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import train

    print("| strategy | fp32 s/step (before, after) | bf16 s/step | bf16 / fp32 | mean abs. loss difference | "
          "fp32 loss, last step | bf16 loss, last step |")
    print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies:
            res = {}
            for name, precision in (("fp32", "fp32"), ("bf16", "bf16"), ("fp32 again", "fp32")):
                run = Path(tmp) / f"{strategy}_{name.replace(' ', '_')}"
                ov = ["init_from=auto", "model.llm=bundled:smollm2-135m", "model.speech_encoder=bundled:whisper-tiny.en",
                      f"data.train={args.data}", f"data.batch_size={args.batch_size}", f"max_steps={args.steps}",
                      "log_every=1", f"save_every={args.steps}", f"output_dir={run}", "seed=0",
                      f"strategy={strategy}", f"precision={precision}"]
                train(load_config(TrainConfig, None, ov), progress=False)
                res[name] = read_run(run)
            (f1, l32), (b, l16), (f2, _) = res["fp32"], res["bf16"], res["fp32 again"]
            f = (f1 + f2) / 2
            diff = sum(abs(x - y) for x, y in zip(l16, l32)) / len(l32)
            print(f"| {strategy} | {f:.2f} ({f1:.2f}, {f2:.2f}) | {b:.2f} | {b / f:.2f}x | {diff:.4f} | "
                  f"{l32[-1]:.4f} | {l16[-1]:.4f} |", flush=True)


if __name__ == "__main__":
    main()
