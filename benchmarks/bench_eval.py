"""Evaluation speed: questions per minute of ``speechkeep eval`` for ``t2t s2t ppl asr`` together.

    python benchmarks/bench_eval.py --model runs/distill_cmp/runs/full --data runs/distill_cmp/data/eval --limit 256

Runs the real command (:func:`speechkeep.evaluate.run.evaluate`) on the first ``--limit`` items of a spoken
evaluation set, once per setting, and prints per setting: the wall time, questions/min (every task of one
question counted once, as a user waits for them), the seconds of each task, and how many of the
predictions (answers and transcripts) are identical to the first setting's, with the accuracy and WER each
gets. The first setting is what ``eval`` did before this benchmark (batches of 16, a cache grown step by
step); the others are today's default (batches of 64, a static cache) and its neighbours. The features are
read from the data's cache (``data build features=true``), as a comparison does. Run it alone on the
machine: one torch job at a time. Target (issue 17): at least 60 questions/min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

SETTINGS = {"before": (16, "dynamic"), "bs64-dynamic": (64, "dynamic"), "default": (64, "static"),
            "bs128-static": (128, "static")}
"""name -> (batch size, KV cache); 'before' is what eval did before this benchmark, 'default' what it does now."""


def _predictions(out: Path) -> dict:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return {(r["task"], r["id"]): r.get("response", r.get("hypothesis")) for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="auto", help="a saved SpeechLLM or run directory ('auto': the shipped aligned "
                                                     "front-end of the bundled models)")
    ap.add_argument("--data", required=True, help="a spoken manifest (or its directory) with cached features")
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--tasks", default="t2t,s2t,ppl,asr")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, of: " + ", ".join(f"{k} (bs {b}, {c} cache)" for k, (b, c) in SETTINGS.items()))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from speechkeep.evaluate.run import EvalConfig, evaluate

    model = args.model
    if model == "auto":
        from speechkeep.config import load_config
        from speechkeep.train.config import TrainConfig
        from speechkeep.train.loop import resolve_init

        model = resolve_init(load_config(TrainConfig, None, ["init_from=auto"]))
    tasks = args.tasks.split(",")
    results, first = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for k, name in enumerate(args.settings.split(",")):
            bs, cache = SETTINGS[name]
            out = Path(tmp) / str(k)
            m = evaluate(EvalConfig(model=str(model), data=args.data, out=str(out), tasks=tasks, limit=args.limit,
                                    batch_size=bs, kv_cache=cache))
            preds = _predictions(out)
            first = first or preds
            same = sum(preds[key] == first[key] for key in first)
            res = {"batch_size": bs, "kv_cache": cache, "seconds": m["seconds"],
                   "questions_per_min": round(60 * m["n"] / m["seconds"], 1), "seconds_per_task": m["seconds_per_task"],
                   "identical_predictions": f"{same}/{len(first)}",
                   **{t: m[t]["accuracy"] for t in ("t2t", "s2t") if t in m},
                   **({"asr_wer": m["asr"]["wer"]} if "asr" in m else {})}
            results[name] = res
            print(f"{name}: {res['seconds']:.0f} s for {m['n']} questions x {len(tasks)} tasks = "
                  f"{res['questions_per_min']:.0f} questions/min; per task {res['seconds_per_task']}; identical "
                  f"predictions {res['identical_predictions']}; "
                  + ", ".join(f"{t} {res[t]:.4f}" for t in ("t2t", "s2t", "asr_wer") if t in res), flush=True)
    if len(results) > 1:
        names = list(results)
        base = results[names[0]]["seconds"]
        for name in names[1:]:
            print(f"speed-up of '{name}' over '{names[0]}': {base / results[name]['seconds']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(model), "data": args.data, "limit": args.limit,
                                               "tasks": tasks, "threads": args.threads, "results": results}, indent=1))


if __name__ == "__main__":
    main()
