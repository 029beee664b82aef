"""Measured strategy comparisons on the bundled models: the same data, steps, seed and starting front-end,
evaluated on the 1,205 clean held-out WebQuestions questions (heldout + devtest) spoken by the held-out voice.

    python benchmarks/strategy_comparison.py --preset distill --out runs/distill_cmp [--steps 300]
    python benchmarks/strategy_comparison.py --preset upscale --out runs/upscale_cmp [--reuse runs/distill_cmp]

Presets (``beyond``: issue 19's anchor, importance-guided LoRA, layer_lr, full and lora, then the
importance-guided restoration sweep of the full run):
- ``distill`` (issue 14): lora vs distill (CE + both KL channels) vs distill (t2t channel only) vs full,
  trained on spoken QA; evaluated on T2T, S2T and perplexity; paired tests against ``lora`` and No-FT.
- ``upscale`` (issue 15, seed 003): full and lora vs upscale transformer interleaved, ebranchformer
  interleaved and ebranchformer top, trained on spoken QA + ASR (as the seed trains on ASR); evaluated
  on T2T, S2T, ASR WER and perplexity; paired tests against ``full`` and No-FT and the seed's
  degradation reduction (drop_full - drop_X) / drop_full with its bootstrap interval; last, ebranchformer
  with ``upscale.speech_only=true`` (text input = the base LLM by construction: what does it cost S2T?).

Every cell (data build, evaluation, training run) is resumable and skipped when finished, so a killed
run is restarted with the same command. ``--reuse DIR`` takes the data and No-FT cells of another
comparison directory (same questions and voice) instead of recomputing them. Writes ``results.json``
and ``report.md``. Run it alone on the machine (one torch job at a time), or with OMP_NUM_THREADS=1
beside one other 1-thread job.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

LLM = "bundled:smollm2-135m"
ENCODER = "bundled:whisper-tiny.en"
EVAL_VOICE = "piper-joe-high"

# name -> (label, train overrides); {full_lr} and {upscale_lr} are filled from the arguments
CELLS = {
    "lora": ("lora (r=8)", ["strategy=lora"]),
    "full": ("full fine-tuning", ["strategy=full", "optim.lr={full_lr}"]),
    "distill_t2t": ("distill, LoRA student, CE + KL t2t", ["strategy=distill", "distill.student=lora",
                                                          "distill.weights={{ce: 1, kl_t2t: 1, kl_s2t: 0}}"]),
    "distill": ("distill, LoRA student, CE + KL t2t + KL s2t", ["strategy=distill", "distill.student=lora",
                                                               "distill.weights={{ce: 1, kl_t2t: 1, kl_s2t: 1}}"]),
    "upscale_transformer": ("upscale, 8 transformer blocks interleaved",
                            ["strategy=upscale", "upscale.block=transformer", "upscale.placement=interleaved",
                             "upscale.lr={upscale_lr}"]),
    "upscale_ebranchformer": ("upscale, 8 E-Branchformer blocks interleaved",
                              ["strategy=upscale", "upscale.block=ebranchformer", "upscale.placement=interleaved",
                               "upscale.lr={upscale_lr}"]),
    "upscale_ebranchformer_top": ("upscale, 8 E-Branchformer blocks on top",
                                  ["strategy=upscale", "upscale.block=ebranchformer", "upscale.placement=top",
                                   "upscale.lr={upscale_lr}"]),
    "upscale_ebranchformer_speech_only": ("upscale, 8 E-Branchformer blocks interleaved, speech positions only",
                                          ["strategy=upscale", "upscale.block=ebranchformer",
                                           "upscale.placement=interleaved", "upscale.speech_only=true",
                                           "upscale.lr={upscale_lr}"]),
    "layer_lr": ("layer_lr (eq. 3, lambda 0.4)", ["strategy=layer_lr", "optim.lr={full_lr}", "layer_lr.importance={importance}"]),
    "anchor": ("anchor, full student", ["strategy=anchor", "optim.lr={full_lr}", "anchor.importance={importance}",
                                        "anchor.strength={anchor_strength}"]),
    "lora_importance": ("lora (r=8 budget), importance-guided placement",
                        ["strategy=lora", "lora.placement=importance", "lora.importance={importance}"]),
}

PRESETS = {
    "distill": dict(title="lora vs distill vs full (issue 14)", cells=["lora", "distill", "distill_t2t", "full"],
                    train_tasks="{qa: 1}", eval_tasks=["t2t", "s2t", "ppl"], reference="lora"),
    "upscale": dict(title="multimodal depth up-scaling vs full and lora (issue 15, seed 003)",
                    cells=["upscale_ebranchformer", "full", "upscale_transformer", "lora", "upscale_ebranchformer_top",
                           "upscale_ebranchformer_speech_only"],
                    train_tasks="{qa: 1, asr: 1}", eval_tasks=["t2t", "s2t", "asr", "ppl"], reference="full"),
    "beyond": dict(title="beyond the seeds: importance-guided restoration, anchor, importance-guided LoRA (issue 19)",
                   cells=["anchor", "lora_importance", "layer_lr", "full", "lora"], restore=True,
                   train_tasks="{qa: 1}", eval_tasks=["t2t", "s2t", "ppl"], reference="full"),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="distill")
    ap.add_argument("--out", default=None, help="default: runs/<preset>_cmp")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps of every strategy")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak lr of LoRA parameters (lora, distill)")
    ap.add_argument("--full-lr", type=float, default=5e-5, help="peak lr of the LLM's weights under full fine-tuning")
    ap.add_argument("--upscale-lr", type=float, default=2e-4, help="peak lr of the new blocks under upscale")
    ap.add_argument("--anchor-strength", type=float, default=1e5, help="anchor.strength of the anchor cell")
    ap.add_argument("--restore-sweep", default="0.5,1,3,10", help="percentages of the restore cell (preset beyond)")
    ap.add_argument("--n-train", type=int, default=400, help="trainmodel questions (the demo's training set)")
    ap.add_argument("--train-data", default=None, help="an existing spoken training set (e.g. the demo's runs/demo/data/train)")
    ap.add_argument("--eval-questions", default="webquestions:clean", help="default: heldout + devtest (1,205)")
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--reuse", default=None, help="another comparison directory whose data and No-FT cells to use")
    ap.add_argument("--reuse-cells", default="", help="comma-separated strategy cells (run + eval) to take from --reuse "
                                                         "(only where that run's train_config.json has the same settings)")
    ap.add_argument("--only", default=None, help="comma-separated strategy cells (default: the preset's)")
    args = ap.parse_args()
    preset = PRESETS[args.preset]
    args.out = args.out or f"runs/{args.preset}_cmp"

    from speechkeep.config import load_config
    from speechkeep.data.build import DataBuildConfig, build_dataset
    from speechkeep.data.tts import VOICES
    from speechkeep.evaluate.run import EvalConfig, evaluate
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import resolve_init, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.reuse:  # link (never copy or move) the other directory's finished shared cells
        for rel in ("data/train", "data/eval", "eval/noft"):
            src, dst = Path(args.reuse).resolve() / rel, out / rel
            if src.exists() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(src, dst, target_is_directory=True)
                log(f"cell {rel}: reused from {src}")
        for name in [c for c in args.reuse_cells.split(",") if c]:
            for rel in (f"runs/{name}", f"eval/{name}"):
                src, dst = Path(args.reuse).resolve() / rel, out / rel
                if src.exists() and not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(src, dst, target_is_directory=True)
                    log(f"cell {rel}: reused from {src}")
    times_path = out / "times.json"

    def timed(name, fn):
        t = time.perf_counter()
        r = fn()
        times = json.loads(times_path.read_text()) if times_path.exists() else {}
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        times_path.write_text(json.dumps(times, indent=1))
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
    aligned = run_eval("aligned", init, [t for t in preset["eval_tasks"] if t in ("s2t", "asr")])

    importance = out / "importance" / "pretrained_text"
    if any("{importance}" in e for n in preset["cells"] for e in CELLS[n][1]) or preset.get("restore"):
        if (importance / "importance.safetensors").exists():
            log("cell importance/pretrained_text: done")
        else:
            log("cell importance/pretrained_text: textual importance of the pre-trained LLM (1/30 of the training set)")
            timed("importance_pretrained_text", lambda: pretrained_importance(init, train_data / "manifest.jsonl", importance))

    names = args.only.split(",") if args.only else list(preset["cells"])
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
                  f"data.tasks={preset['train_tasks']}",
                  f"data.batch_size={args.batch_size}", f"optim.lr={args.lr}", f"max_steps={args.steps}",
                  f"output_dir={run_dir}", "save_every=25", "resume=true", "seed=0"]
            ov += [e.format(full_lr=args.full_lr, upscale_lr=args.upscale_lr, importance=importance,
                            anchor_strength=args.anchor_strength) for e in extra]
            timed(f"train_{name}", lambda: train(load_config(TrainConfig, None, ov)))
        results[name] = run_eval(name, str(run_dir), preset["eval_tasks"], baseline=str(out / "eval" / "noft" / "metrics.json"))
        write_report(out, args, preset, [n for n in names if n in results], results)
    if preset.get("restore") and (out / "runs" / "full" / "summary.json").exists():
        from speechkeep.importance.restore import RestoreConfig, run_restore

        dest = out / "restore" / "full"
        log(f"cell restore/full: sweep {args.restore_sweep}% of the full run's LLM weights back")
        timed("restore_full", lambda: run_restore(RestoreConfig(
            run=str(out / "runs" / "full"), importance=str(importance), out=str(dest),
            sweep=[float(x) for x in args.restore_sweep.split(",")], data=eval_data, tasks=["t2t", "s2t"],
            finetuned_eval=str(out / "eval" / "full"))))
        print((dest / "curve.csv").read_text())


def pretrained_importance(init: str, manifest: Path, out: Path) -> None:
    """Textual importance (abs_sum) of the starting model's LLM on a seeded 1/30 of the training set."""
    from speechkeep.importance.runs import batched, queries_from_manifest, save_importance
    from speechkeep.importance.taylor import compute_importance
    from speechkeep.models.persistence import load_speech_llm

    model, _ = load_speech_llm(init)
    queries = queries_from_manifest(str(manifest), "text", model, 1 / 30, None, None, seed=0)
    res = compute_importance(model, batched(queries, 8))
    res.meta.update({"model": init, "data": str(manifest), "input": "text", "fraction": 1 / 30})
    save_importance(out, res.scores, res.meta)


def write_report(out: Path, args, preset: dict, names: list[str], results: dict) -> None:
    from speechkeep.evaluate.report import asr_errors, markdown_table, outcomes, paired, paired_wer
    from speechkeep.evaluate.stats import degradation_reduction

    ev = out / "eval"
    noft = results["noft"]
    times = json.loads((out / "times.json").read_text()) if (out / "times.json").exists() else {}
    rows = [("No-FT (text LLM as is)", {"t2t": noft["t2t"]}),
            ("cascade (Whisper tiny.en -> text LLM)", {"s2t": noft["cascade"]}),
            ("aligned front-end, before any strategy", {"t2t": noft["t2t"], **results["aligned"]})]
    summaries = {}
    for name in names:
        summaries[name] = json.loads((out / "runs" / name / "summary.json").read_text())
        rows.append((f"{CELLS[name][0]}, {summaries[name]['steps']} steps", results[name]))
    ref = preset["reference"]
    comps = {}
    for name in names:
        comps[f"{name} T2T vs No-FT T2T"] = paired(outcomes(ev / name, "t2t"), outcomes(ev / "noft", "t2t"))
    for name in names:
        if name != ref and ref in names:
            comps[f"{name} T2T vs {ref} T2T"] = paired(outcomes(ev / name, "t2t"), outcomes(ev / ref, "t2t"))
            comps[f"{name} S2T vs {ref} S2T"] = paired(outcomes(ev / name, "s2t"), outcomes(ev / ref, "s2t"))
    if "asr" in preset["eval_tasks"]:
        for name in names:
            if name != ref and ref in names:
                comps[f"{name} ASR WER vs {ref} ASR WER"] = paired_wer(asr_errors(ev / name), asr_errors(ev / ref))
    reductions = {}
    if "full" in names:
        base, full = outcomes(ev / "noft", "t2t"), outcomes(ev / "full", "t2t")
        ids = sorted(base)
        for name in names:
            if name != "full":
                x = outcomes(ev / name, "t2t")
                reductions[name] = degradation_reduction([base[i] for i in ids], [full[i] for i in ids], [x[i] for i in ids])
    ppl = {name: results[name].get("ppl") for name in ["noft", *names]}
    sec_per_step = {name: summaries[name].get("train_seconds", summaries[name]["seconds"]) / max(1, summaries[name]["steps"]) for name in names}
    trainable = {name: summaries[name].get("trainable_params") for name in names}

    def wer(m):
        a = m.get("asr")
        if not a:
            return "-"
        ci = a.get("ci95")
        return f"{100 * a['wer']:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")

    lines = [
        f"# {preset['title']}",
        "",
        f"Same data ({args.n_train} spoken trainmodel questions, teacher answers as targets; tasks {preset['train_tasks']}), "
        f"{args.steps} steps of {args.batch_size}, seed 0, from the shipped aligned front-end; LoRA r=8 lr {args.lr:g}, "
        f"full lr {args.full_lr:g}, upscale new-block lr {args.upscale_lr:g}, adaptor lr 1e-4. "
        f"Eval: {noft['n']} clean held-out questions ({args.eval_questions}) spoken by {EVAL_VOICE}; greedy, 48 new tokens.",
        "",
        markdown_table(rows, base=noft),
        "",
    ]
    if "asr" in preset["eval_tasks"]:
        lines += ["ASR WER % [95% bootstrap CI] (LLM-written transcript, Whisper-normalized): "
                  + f"cascade's Whisper tiny.en {100 * noft['cascade']['asr_wer']:.1f}; "
                  + "; ".join(f"{k} {wer(results[k])}" for k in ["aligned", *names]), ""]
    if reductions:
        lines += ["Degradation reduction vs full fine-tuning, (drop_full - drop_X) / drop_full of T2T against No-FT:", "",
                  *[f"- {k}: {r.describe()}" for k, r in reductions.items()], ""]
    lines += [
        "Perplexity of the held-out teacher answers (text input / speech input): "
        + "; ".join(f"{k} {v['text']:.2f}" + (f" / {v['speech']:.2f}" if v and v.get("speech") else "")
                    for k, v in ppl.items() if v),
        "",
        "Training seconds per step (1 process; see times.json): " + ", ".join(f"{k} {v:.2f}" for k, v in sec_per_step.items()),
        "",
        "Trainable parameters: " + ", ".join(f"{k} {v:,}" for k, v in trainable.items() if v),
        "",
        "Paired comparisons (A - B on the same questions; accuracy: exact McNemar, WER: paired bootstrap; "
        "significant at the 95% level):",
        "",
        *[f"- {k}: {c.describe()}" for k, c in comps.items()],
    ]
    report = "\n".join(lines)
    (out / "report.md").write_text(report + "\n")
    (out / "results.json").write_text(json.dumps({"results": results, "comparisons": {k: c.to_dict() for k, c in comps.items()},
                                                  "degradation_reduction": {k: r.to_dict() for k, r in reductions.items()},
                                                  "train_summaries": summaries, "times": times,
                                                  "args": vars(args)}, indent=1, default=str))
    print(report)


if __name__ == "__main__":
    main()
