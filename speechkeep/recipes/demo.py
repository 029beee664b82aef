"""``speechkeep demo`` (``make demo``): the mission in numbers on the bundled models, no other input.

1. spoken train set: WebQuestions ``trainmodel`` questions, TTS by the training voices, targets = the
   base LLM's own greedy answers (LLaMA-Omni stage 1 style);
2. spoken eval set: held-out ``devtest`` questions spoken by a held-out voice;
3. No-FT (the text LLM as is: T2T) and the cascade (Whisper ASR -> text LLM);
4. train one strategy for a fixed number of optimizer steps (the same model on any machine);
5. evaluate the trained model (T2T, S2T, perplexity) and write a T2T/S2T/retention table with 95%
   bootstrap intervals and paired tests (exact McNemar) of the differences that matter.

Everything is deterministic: the same config gives the same report.md, bit for bit, on the same machine
(seeded TTS, greedy decoding, a step budget); times go to stdout and demo_summary.json only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from speechkeep.config import Checked, ranged
from speechkeep.errors import SpeechkeepError


@dataclass
class DemoConfig(Checked):
    """The demo's knobs (defaults: 8-11 minutes on 2 CPU cores, see the README)."""

    out: str = "runs/demo"
    """Output directory (data, runs, report)."""
    llm: str = "bundled:smollm2-135m"
    """Text LLM spec."""
    speech_encoder: str = "bundled:whisper-tiny.en"
    """Speech encoder spec."""
    webquestions: str | None = None
    """Directory with trainmodel.json and devtest.json; None: $SPEECHKEEP_WEBQUESTIONS, else the copy shipped in the package."""
    n_train: int = ranged(400, ge=1)
    """Training questions (first N of trainmodel.json)."""
    n_eval: int = ranged(100, ge=1)
    """Held-out evaluation questions (first N of devtest.json)."""
    eval_voice: str = "piper-joe-high"
    """Held-out voice: speaks only the evaluation questions."""
    strategy: str = "lora"
    """Strategy to train: adaptor | full | lora."""
    max_steps: int = ranged(80, ge=1)
    """Optimizer steps of the strategy (the training budget: the same on every machine)."""
    train_minutes: float | None = ranged(None, gt=0)
    """Optional wall-clock cap on training (None: none). A cap makes the trained model depend on the machine's speed."""
    batch_size: int = ranged(8, ge=1)
    """Training micro-batch size."""
    lr: float = ranged(1e-3, gt=0)
    """Peak learning rate of the LLM's trainable parameters (LoRA) and, from scratch, of the adaptor."""
    init_from: str = "auto"
    """Start of training: 'auto' = the shipped aligned front-end for llm + speech_encoder (bundled:smollm2-135m+whisper-tiny.en) when there is one; 'none' = a fresh adaptor (from scratch); or a saved SpeechLLM."""
    aligned_adaptor_lr: float = ranged(1e-4, ge=0)
    """Peak learning rate of an aligned front-end's adaptor (small: it is already aligned; from scratch the adaptor uses lr)."""
    teacher_max_new_tokens: int = ranged(32, ge=1)
    """Length of the teacher responses used as training targets."""
    eval_max_new_tokens: int = ranged(48, ge=1)
    """Answer length limit at evaluation."""
    encode_mode: str = "variable"
    """Whisper encoding for the feature cache and the model ('variable' is ~19x faster than 'padded' here)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Extra `speechkeep train` overrides, key -> value."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not a previous `speechkeep demo` output."""


def demo_questions(cfg: DemoConfig) -> tuple[Path, Path]:
    """The demo's (training, evaluation) question files: trainmodel and devtest of WebQuestions."""
    from speechkeep.data.webquestions import webquestions_file

    return webquestions_file("trainmodel", cfg.webquestions), webquestions_file("devtest", cfg.webquestions)


def demo_comparisons(out: Path, strategy: str, with_aligned: bool) -> dict:
    """The paired tests the demo's reading rests on, from the evaluations' predictions."""
    from speechkeep.evaluate.report import outcomes, paired

    ev = out / "eval"
    comps = {f"{strategy} T2T vs No-FT T2T (text ability kept?)":
             paired(outcomes(ev / strategy, "t2t"), outcomes(ev / "noft", "t2t"))}
    if with_aligned:
        comps[f"{strategy} S2T vs the aligned front-end's S2T (did the strategy help speech?)"] = paired(
            outcomes(ev / strategy, "s2t"), outcomes(ev / "aligned", "s2t"))
        comps["aligned front-end S2T vs the cascade"] = paired(outcomes(ev / "aligned", "s2t"), outcomes(ev / "noft", "cascade"))
    else:
        comps[f"{strategy} S2T vs the cascade"] = paired(outcomes(ev / strategy, "s2t"), outcomes(ev / "noft", "cascade"))
    return comps


def run_demo(cfg: DemoConfig) -> dict:
    """The demo (see the module docstring). The options, the output directory, the model specs and both
    question files are checked before any work; a failed run keeps only resumable work."""
    from speechkeep.data.questions import read_questions
    from speechkeep.io import OutputDir, has_files
    from speechkeep.models.llm import resolve_llm_dir
    from speechkeep.models.speech_encoder import resolve_encoder_dir

    guard = OutputDir(cfg.out, "demo", overwrite=cfg.overwrite, key="out", keep=has_files, inputs=[cfg.webquestions])
    guard.check()
    for questions in demo_questions(cfg):
        read_questions(questions)
    resolve_llm_dir(cfg.llm)
    resolve_encoder_dir(cfg.speech_encoder)
    from speechkeep.config import load_config
    from speechkeep.strategies import STRATEGIES
    from speechkeep.train.config import TrainConfig

    if cfg.strategy not in STRATEGIES:
        raise SpeechkeepError(f"strategy: unknown strategy '{cfg.strategy}'; available: {', '.join(sorted(STRATEGIES))}")
    load_config(TrainConfig, None, [f"{k}={v}" for k, v in cfg.extra.items()])  # extra: valid train keys
    with guard:
        return _run_demo(cfg)


def _run_demo(cfg: DemoConfig) -> dict:
    from speechkeep.config import load_config
    from speechkeep.data.build import DataBuildConfig, build_dataset
    from speechkeep.data.tts import VOICES
    from speechkeep.evaluate.report import format_metrics, markdown_table
    from speechkeep.evaluate.run import EvalConfig, evaluate
    from speechkeep.io import write_json
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import TrainResult, train

    t_start = time.perf_counter()
    out = Path(cfg.out)
    train_questions, eval_questions = demo_questions(cfg)
    if cfg.eval_voice not in VOICES:
        raise SpeechkeepError(f"unknown eval_voice '{cfg.eval_voice}'; voices: {', '.join(VOICES)}")
    train_voices = [v for v in VOICES if v != cfg.eval_voice]
    timings: dict[str, float] = {}

    def stage(name):
        print(f"\n=== {name} ===", flush=True)
        return time.perf_counter()

    t = stage(f"1/5 spoken train set: {cfg.n_train} WebQuestions questions, {len(train_voices)} voices, teacher answers")
    common = dict(teacher=cfg.llm, max_new_tokens=cfg.teacher_max_new_tokens, speech_encoder=cfg.speech_encoder,
                  encode_mode=cfg.encode_mode, features=True)
    tr = build_dataset(DataBuildConfig(questions=str(train_questions), out=str(out / "data" / "train"),
                                       limit=cfg.n_train, voices=train_voices, split="train", **common))
    print(tr.summary())
    timings["data_train"] = time.perf_counter() - t

    t = stage(f"2/5 spoken eval set: {cfg.n_eval} held-out devtest questions, held-out voice {cfg.eval_voice}")
    ev = build_dataset(DataBuildConfig(questions=str(eval_questions), out=str(out / "data" / "eval"),
                                       limit=cfg.n_eval, voices=[cfg.eval_voice], split="eval", **common))
    print(ev.summary())
    timings["data_eval"] = time.perf_counter() - t
    eval_data = str(out / "data" / "eval" / "manifest.jsonl")

    t = stage("3/5 No-FT (text LLM as is) and the cascade (Whisper ASR -> text LLM)")
    noft = evaluate(EvalConfig(model=cfg.llm, data=eval_data, out=str(out / "eval" / "noft"), tasks=["t2t", "cascade", "ppl"],
                               max_new_tokens=cfg.eval_max_new_tokens, cascade_whisper=cfg.speech_encoder))
    print(format_metrics(noft))
    timings["eval_noft_cascade"] = time.perf_counter() - t

    from speechkeep.train.loop import resolve_init

    init = resolve_init(load_config(TrainConfig, None, [f"model.llm={cfg.llm}", f"model.speech_encoder={cfg.speech_encoder}",
                                                        f"init_from={cfg.init_from}"]))
    aligned = None
    if init is not None:
        t = stage(f"3b/5 the aligned front-end before any strategy ({init})")
        aligned = evaluate(EvalConfig(model=init, data=eval_data, out=str(out / "eval" / "aligned"), tasks=["s2t"],
                                      max_new_tokens=cfg.eval_max_new_tokens))
        print(format_metrics(aligned))
        timings["eval_aligned"] = time.perf_counter() - t

    t = stage(f"4/5 train strategy={cfg.strategy} for {cfg.max_steps} steps"
              + (f" (at most {cfg.train_minutes} min)" if cfg.train_minutes else "")
              + f", from {'the aligned front-end' if init else 'a fresh adaptor'}")
    run_dir = out / "runs" / cfg.strategy
    ov = [f"init_from={init or 'none'}"] + ([f"optim.adaptor_lr={cfg.aligned_adaptor_lr}"] if init else []) + [
          f"model.llm={cfg.llm}", f"model.speech_encoder={cfg.speech_encoder}", f"model.encode_mode={cfg.encode_mode}",
          f"strategy={cfg.strategy}", f"data.train={out / 'data' / 'train' / 'manifest.jsonl'}",
          f"data.batch_size={cfg.batch_size}", f"optim.lr={cfg.lr}", f"max_steps={cfg.max_steps}",
          f"max_minutes={'none' if cfg.train_minutes is None else cfg.train_minutes}", f"output_dir={run_dir}",
          "save_every=50",
          "resume=true"] + [f"{k}={v}" for k, v in cfg.extra.items()]
    summary_path = run_dir / "summary.json"
    if summary_path.exists():  # a finished run: reuse it (an interrupted one resumes from its checkpoint)
        done = json.loads(summary_path.read_text())
        res = TrainResult(run_dir, done["steps"], done["final_loss"], done["seconds"], done["trainable_params"],
                          done["tokens_per_second"])
        print(f"reusing the finished run in {run_dir} ({res.steps} steps); delete it to train again")
    else:
        res = train(load_config(TrainConfig, None, ov))
    timings["train"] = time.perf_counter() - t

    t = stage("5/5 evaluate the trained model on the held-out spoken questions")
    trained = evaluate(EvalConfig(model=str(run_dir), data=eval_data, out=str(out / "eval" / cfg.strategy),
                                  tasks=["t2t", "s2t", "ppl"], max_new_tokens=cfg.eval_max_new_tokens,
                                  baseline=str(out / "eval" / "noft" / "metrics.json")))
    print(format_metrics(trained))
    timings["eval_trained"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start

    comparisons = demo_comparisons(out, cfg.strategy, with_aligned=aligned is not None)
    from speechkeep.models.speech_encoder import whisper_label

    table = markdown_table([("No-FT (text LLM as is)", {"t2t": noft["t2t"]}),
                            (f"cascade ({whisper_label(cfg.speech_encoder)} transcript -> text LLM)", {"s2t": noft["cascade"]}),
                            *([("aligned front-end (CTC, LLM frozen: T2T = No-FT), before the strategy", {"t2t": noft["t2t"], **aligned})] if aligned else []),
                            (f"{cfg.strategy}, {res.steps} steps" + (" from the aligned front-end" if init else " from scratch"),
                             trained)], base=noft)
    report = "\n".join([
        "# speechkeep demo",
        "",
        f"LLM {cfg.llm}, encoder {cfg.speech_encoder}; train: {len(tr.rows)} spoken WebQuestions trainmodel questions "
        f"({len(train_voices)} voices), targets = the LLM's own greedy answers ({cfg.teacher_max_new_tokens} tokens); "
        f"eval: {len(ev.rows)} held-out devtest questions spoken by the held-out voice {cfg.eval_voice}.",
        f"Strategy {cfg.strategy}: {res.steps} steps of {cfg.batch_size} spoken questions, {res.trainable_params:,} "
        f"trainable parameters, final loss {res.final_loss:.4f}.",
        "",
        table,
        "",
        f"Accuracy: {noft['matching_rule']}; greedy decoding, max {cfg.eval_max_new_tokens} new tokens. "
        f"Cascade Whisper WER {100 * noft['cascade']['asr_wer']:.1f}%. "
        f"Perplexity of the held-out teacher answers: No-FT text {noft['ppl']['text']:.2f}; "
        f"trained text {trained['ppl']['text']:.2f}, speech {trained['ppl'].get('speech', float('nan')):.2f}.",
        f"Brackets: 95% percentile-bootstrap interval over the {len(ev.rows)} questions (10,000 resamples, seed 0).",
        "",
        "Paired comparisons on the same questions (A - B; exact McNemar test on the questions where exactly one is right; "
        "a difference is called significant at p < 0.05):",
        "",
        *[f"- {name}: {c.describe()}" for name, c in comparisons.items()],
    ])
    (out / "report.md").write_text(report + "\n")
    write_json(out / "demo_summary.json", {"noft": noft, "aligned": aligned, "trained": trained, "timings": timings,
                                           "comparisons": {k: c.to_dict() for k, c in comparisons.items()},
                                           "train_seconds": res.seconds,
                                           "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}})
    print("\n" + report)
    print("\ntime (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"report written to {out / 'report.md'}")
    return {"noft": noft, "trained": trained, "timings": timings}
