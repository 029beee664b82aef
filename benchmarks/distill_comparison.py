"""Issue 14's measured comparison: lora vs distill (CE + both KL channels) vs distill (t2t channel only)
vs full, on the same data, steps, seed and starting front-end, evaluated on the 1,205 clean held-out
WebQuestions questions (heldout + devtest) spoken by the held-out voice.

    python benchmarks/distill_comparison.py --out runs/distill_cmp [--steps 300] [--train-data DIR]

Every cell (data build, evaluation, training run) is resumable and skipped when finished, so a killed
run is restarted with the same command. Writes ``results.json`` and ``report.md`` (T2T, S2T, retention,
modality gap, perplexities with 95% bootstrap intervals; exact McNemar tests of each strategy against
``lora`` and No-FT). Run it alone on the machine (one torch job at a time).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

LLM = "bundled:smollm2-135m"
ENCODER = "bundled:whisper-tiny.en"
EVAL_VOICE = "piper-joe-high"

# name -> (label, train overrides)
CELLS = {
    "lora": ("lora (r=8)", ["strategy=lora"]),
    "full": ("full fine-tuning", ["strategy=full", "optim.lr={full_lr}"]),
    "distill_t2t": ("distill, LoRA student, CE + KL t2t", ["strategy=distill", "distill.student=lora",
                                                          "distill.weights={{ce: 1, kl_t2t: 1, kl_s2t: 0}}"]),
    "distill": ("distill, LoRA student, CE + KL t2t + KL s2t", ["strategy=distill", "distill.student=lora",
                                                               "distill.weights={{ce: 1, kl_t2t: 1, kl_s2t: 1}}"]),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/distill_cmp")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps of every strategy")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak lr of LoRA parameters (lora, distill)")
    ap.add_argument("--full-lr", type=float, default=5e-5, help="peak lr of the LLM's weights under full fine-tuning")
    ap.add_argument("--n-train", type=int, default=400, help="trainmodel questions (the demo's training set)")
    ap.add_argument("--train-data", default=None, help="an existing spoken training set (e.g. the demo's runs/demo/data/train)")
    ap.add_argument("--eval-questions", default="webquestions:clean", help="default: heldout + devtest (1,205)")
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--only", default=None, help="comma-separated strategy cells (default: all)")
    args = ap.parse_args()

    from speechkeep.config import load_config
    from speechkeep.data.build import DataBuildConfig, build_dataset
    from speechkeep.data.tts import VOICES
    from speechkeep.evaluate.run import EvalConfig, evaluate
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import resolve_init, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = json.loads((out / "times.json").read_text()) if (out / "times.json").exists() else {}

    def timed(name, fn):
        t = time.perf_counter()
        r = fn()
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        (out / "times.json").write_text(json.dumps(times, indent=1))
        return r

    common = dict(teacher=LLM, max_new_tokens=32, speech_encoder=ENCODER, encode_mode="variable", features=True)
    train_data = Path(args.train_data) if args.train_data else out / "data" / "train"
    if not args.train_data:
        log(f"cell data/train: {args.n_train} trainmodel questions, training voices")
        timed("data_train", lambda: build_dataset(DataBuildConfig(
            questions="webquestions:trainmodel", out=str(train_data), limit=args.n_train,
            voices=[v for v in VOICES if v != EVAL_VOICE], split="train", **common)))
    log(f"cell data/eval: {args.eval_questions} spoken by {EVAL_VOICE}")
    eval_dir = out / "data" / "eval"
    if not (eval_dir / "manifest.jsonl").exists() or not (eval_dir / "build_info.json").exists():
        timed("data_eval", lambda: build_dataset(DataBuildConfig(
            questions=args.eval_questions, out=str(eval_dir), limit=args.eval_limit, voices=[EVAL_VOICE], split="eval",
            **common)))
    eval_data = str(eval_dir / "manifest.jsonl")

    def run_eval(name, model, tasks, baseline=None):
        dest = out / "eval" / name
        if (dest / "metrics.json").exists():
            log(f"cell eval/{name}: done")
            return json.loads((dest / "metrics.json").read_text())
        log(f"cell eval/{name}: {model} {tasks}")
        return timed(f"eval_{name}", lambda: evaluate(EvalConfig(model=model, data=eval_data, out=str(dest), tasks=tasks,
                                                                 max_new_tokens=48, baseline=baseline, overwrite=True)))

    noft = run_eval("noft", LLM, ["t2t", "cascade", "ppl"])
    init = resolve_init(load_config(TrainConfig, None, [f"model.llm={LLM}", f"model.speech_encoder={ENCODER}", "init_from=auto"]))
    aligned = run_eval("aligned", init, ["s2t"])

    names = args.only.split(",") if args.only else list(CELLS)
    results = {"noft": noft, "aligned": aligned}
    for name in names:
        label, extra = CELLS[name]
        run_dir = out / "runs" / name
        if (run_dir / "summary.json").exists():
            log(f"cell train/{name}: done")
        else:
            log(f"cell train/{name}: {args.steps} steps")
            ov = [f"init_from={init}", "optim.adaptor_lr=1e-4", f"model.llm={LLM}", f"model.speech_encoder={ENCODER}",
                  "model.encode_mode=variable", f"data.train={train_data / 'manifest.jsonl'}",
                  f"data.batch_size={args.batch_size}", f"optim.lr={args.lr}", f"max_steps={args.steps}",
                  f"output_dir={run_dir}", "save_every=25", "resume=true", "seed=0"]
            ov += [e.format(full_lr=args.full_lr) for e in extra]
            timed(f"train_{name}", lambda: train(load_config(TrainConfig, None, ov)))
        results[name] = run_eval(name, str(run_dir), ["t2t", "s2t", "ppl"], baseline=str(out / "eval" / "noft" / "metrics.json"))
    write_report(out, args, names, results, times)


def write_report(out: Path, args, names, results, times) -> None:
    from speechkeep.evaluate.report import markdown_table, outcomes, paired

    ev = out / "eval"
    noft = results["noft"]
    rows = [("No-FT (text LLM as is)", {"t2t": noft["t2t"]}),
            ("cascade (Whisper tiny.en -> text LLM)", {"s2t": noft["cascade"]}),
            ("aligned front-end, before any strategy", {"t2t": noft["t2t"], **results["aligned"]})]
    summaries = {}
    for name in names:
        summaries[name] = json.loads((out / "runs" / name / "summary.json").read_text())
        rows.append((f"{CELLS[name][0]}, {summaries[name]['steps']} steps", results[name]))
    comps = {}
    for name in names:
        comps[f"{name} T2T vs No-FT T2T"] = paired(outcomes(ev / name, "t2t"), outcomes(ev / "noft", "t2t"))
    for name in names:
        if name != "lora" and "lora" in names:
            comps[f"{name} T2T vs lora T2T"] = paired(outcomes(ev / name, "t2t"), outcomes(ev / "lora", "t2t"))
            comps[f"{name} S2T vs lora S2T"] = paired(outcomes(ev / name, "s2t"), outcomes(ev / "lora", "s2t"))
    ppl = {name: results[name].get("ppl") for name in ["noft", *names]}
    sec_per_step = {name: summaries[name]["seconds"] / max(1, summaries[name]["steps"]) for name in names}
    report = "\n".join([
        "# lora vs distill vs full (issue 14)",
        "",
        f"Same data ({args.n_train} spoken trainmodel questions, teacher answers as targets), {args.steps} steps of "
        f"{args.batch_size}, seed 0, from the shipped aligned front-end; LoRA r=8 lr {args.lr:g}, full lr {args.full_lr:g}. "
        f"Eval: {noft['n']} clean held-out questions ({args.eval_questions}) spoken by {EVAL_VOICE}; greedy, 48 new tokens.",
        "",
        markdown_table(rows, base=noft),
        "",
        "Perplexity of the held-out teacher answers (text input / speech input): "
        + "; ".join(f"{k} {v['text']:.2f}" + (f" / {v['speech']:.2f}" if v and v.get("speech") else "")
                    for k, v in ppl.items() if v),
        "",
        "Training seconds per step (1 process; see times.json): " + ", ".join(f"{k} {v:.2f}" for k, v in sec_per_step.items()),
        "",
        "Paired comparisons (A - B on the same questions; exact McNemar; significant at p < 0.05):",
        "",
        *[f"- {k}: {c.describe()}" for k, c in comps.items()],
    ])
    (out / "report.md").write_text(report + "\n")
    (out / "results.json").write_text(json.dumps({"results": results, "comparisons": {k: c.to_dict() for k, c in comps.items()},
                                                  "train_summaries": summaries, "times": times,
                                                  "args": vars(args)}, indent=1, default=str))
    print(report)


if __name__ == "__main__":
    main()
