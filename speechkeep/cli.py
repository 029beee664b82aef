"""The ``speechkeep`` command line.

Every command has ``--help``. Every job command takes ``[CONFIG.yaml] [key=value ...]``: an optional
YAML file and dotted overrides of the keys of its config dataclass (``--help`` lists every key with its
type, real default and docstring); its historical flags are aliases of those keys (``--limit 5`` =
``limit=5``) and win over them (:func:`speechkeep.config.add_config_arguments`).

Errors are one line on stderr, ``speechkeep: error: ...``, naming the file, line, option or key at
fault; the exit code is 2 for usage errors (options, configs, model specs, output directories) and 1
for data errors (the content of an input file, or a training run that diverged). No traceback
unless ``-v``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from speechkeep.config import Checked, ranged
from speechkeep.errors import SpeechkeepError, UsageError
from speechkeep.models.speech_llm import SpeechLLMConfig


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``speechkeep: error: <command>: ...``), exit code 2."""

    def error(self, message: str):  # noqa: D102
        cmd = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        self.exit(2, f"speechkeep: error: {cmd + ': ' if cmd else ''}{message} (see `{self.prog} --help`)\n")


def _existing(path: str | None, flag: str, what: str = "path") -> None:
    """A path named on the command line must exist (a usage error, exit 2, if not)."""
    if path is not None and not Path(path).exists():
        raise UsageError(f"{flag} {path}: no such {what}")


def _job(p: argparse.ArgumentParser, cls, flags=(), positional: str | None = None) -> None:
    """The one job-command interface: [CONFIG.yaml] [key=value ...] of ``cls``, its flags as aliases."""
    from speechkeep.config import add_config_arguments

    add_config_arguments(p, cls, flags, positional)


def _config(args):
    from speechkeep.config import config_from_args

    return config_from_args(args)


# ---------------------------------------------------------------- models
@dataclass
class ModelsConfig(Checked):
    """Options of ``speechkeep models``."""

    prepare: list[str] | None = None
    """Convert/de-quantize these model specs into the cache now (e.g. [bundled:smollm2-135m]); None: only list them."""


def cmd_models(args) -> None:
    from speechkeep.models import bundled

    cfg, _ = _config(args)

    print("Bundled text LLMs (spec: bundled:NAME):")
    for m in bundled.BUNDLED_LLMS.values():
        print(f"  bundled:{m.name:16s} {m.description}  [pip: {m.pip_package}]")
    print("Bundled speech encoders:")
    for m in bundled.BUNDLED_ENCODERS.values():
        print(f"  bundled:{m.name:16s} {m.description}  [pip: {m.pip_package}]")
    fronts = bundled.shipped_front_ends()
    if fronts:
        print("Shipped aligned front-ends (a whole SpeechLLM; `speechkeep train` starts from them by default):")
        for spec, d in fronts.items():
            print(f"  {spec}  [{d / 'CARD.md'}]")
    print("Other LLM specs: a .gguf file, a Hugging Face model directory, or a hub id 'org/name'.")
    print("Other encoder specs: a CTranslate2 Whisper directory (model.bin), a HF Whisper directory or id.")
    if cfg.prepare is not None and not cfg.prepare:
        raise UsageError("--prepare: give at least one model spec, e.g. --prepare bundled:smollm2-135m")
    if cfg.prepare:
        import time

        from speechkeep.models.llm import resolve_llm_dir
        from speechkeep.models.speech_encoder import resolve_encoder_dir

        for spec in cfg.prepare:
            t = time.perf_counter()
            where = resolve_encoder_dir(spec) if "whisper" in spec else resolve_llm_dir(spec)
            print(f"prepared {spec} -> {where} ({time.perf_counter() - t:.1f} s)")


# ---------------------------------------------------------------- build / ask
@dataclass
class BuildConfig(SpeechLLMConfig):
    """Options of ``speechkeep build``: the SpeechLLM's own keys, plus where it goes."""

    out: str | None = None
    """Directory to save the model to (config + adaptor weights); None: only build it and print its size."""
    seed: int = ranged(0, ge=0)
    """Seed of the adaptor's initialization."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not a previous `speechkeep build` output."""

    def model_config(self) -> SpeechLLMConfig:
        return SpeechLLMConfig(**{f.name: getattr(self, f.name) for f in fields(SpeechLLMConfig)})


def cmd_build(args) -> None:
    from speechkeep.models.builder import build_speech_llm

    build, cfg_path = _config(args)
    cfg = build.model_config()

    def run() -> None:
        model, _ = build_speech_llm(cfg, seed=build.seed)
        n_adaptor = sum(p.numel() for p in model.adaptor.parameters())
        n_llm = sum(p.numel() for p in model.llm.parameters())
        n_enc = sum(p.numel() for p in model.encoder.parameters())
        print(f"SpeechLLM: encoder {cfg.speech_encoder} ({n_enc / 1e6:.1f} M, frozen) -> adaptor "
              f"k={cfg.adaptor.stack_frames} ({n_adaptor / 1e6:.2f} M) -> LLM {cfg.llm} ({n_llm / 1e6:.1f} M)")
        if build.out:
            model.save_pretrained(build.out)
            print(f"saved to {build.out}")

    if build.out is None:
        return run()
    from speechkeep.io import OutputDir
    from speechkeep.models.llm import resolve_llm_dir
    from speechkeep.models.speech_encoder import resolve_encoder_dir

    guard = OutputDir(build.out, "build", overwrite=build.overwrite, inputs=[cfg_path, cfg.llm, cfg.speech_encoder])
    guard.check()
    resolve_llm_dir(cfg.llm)
    resolve_encoder_dir(cfg.speech_encoder)
    with guard:
        run()


@dataclass
class AskConfig(Checked):
    """Options of ``speechkeep ask``."""

    model: str = "bundled:smollm2-135m"
    """A training run or saved SpeechLLM directory, a shipped front-end spec, a config YAML, or an LLM spec."""
    text: list[str] = field(default_factory=list)
    """Text questions."""
    audio: list[str] = field(default_factory=list)
    """Audio files, each with a spoken question."""
    max_new_tokens: int = ranged(48, ge=1)
    """Answer length limit in tokens."""


def cmd_ask(args) -> None:
    from speechkeep.audio import MAX_SECONDS, TARGET_SR, check_duration, load_audio
    from speechkeep.models.speech_llm import Query

    cfg, _ = _config(args)
    if not cfg.text and not cfg.audio:
        raise UsageError("give --text and/or --audio")
    for t in cfg.text or []:
        if not t.strip():
            raise UsageError("--text: the question is empty")
    from speechkeep.models.persistence import load_speech_llm

    for a in cfg.audio or []:
        _existing(a, "--audio", "file")
    audios = [load_audio(a) for a in cfg.audio or []]  # fail on bad audio before loading models
    for a, path in zip(audios, cfg.audio or []):
        check_duration(a, TARGET_SR, path, max_seconds=MAX_SECONDS)
    model, trained = load_speech_llm(cfg.model)
    if audios and not trained:
        print("note: this model's speech adaptor is untrained (a plain LLM spec or config): spoken answers are noise",
              file=sys.stderr)
    queries = [Query(text=t) for t in cfg.text or []] + [Query(audio=a) for a in audios]
    answers = model.generate(queries, max_new_tokens=cfg.max_new_tokens)
    labels = [f"text: {t}" for t in cfg.text or []] + [f"audio: {a}" for a in cfg.audio or []]
    for label, ans in zip(labels, answers):
        print(f"[{label}]\n{ans}\n")


# ---------------------------------------------------------------- train / eval
# ---------------------------------------------------------------- export
@dataclass
class ExportConfig(Checked):
    """Options of ``speechkeep export``."""

    model: str = ""
    """A training run directory, a saved SpeechLLM directory, or a shipped front-end spec."""
    out: str = ""
    """Directory to write the exported model to."""
    drop_upscale: bool = False
    """Remove the blocks strategy=upscale inserted: the LLM is then exactly the base LLM again (the adaptor stays)."""
    merge_lora: bool = False
    """Merge the LoRA adapters into the LLM's weights (peft merge_and_unload): a plain LLM that needs no peft to load."""
    llm_only: bool = False
    """Write only the LLM and its tokenizer, as a plain Hugging Face directory (AutoModelForCausalLM.from_pretrained loads it); the LLM must have no transform left (drop_upscale, merge_lora)."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not a previous `speechkeep export` output."""


def cmd_export(args) -> None:
    from speechkeep.io import OutputDir
    from speechkeep.models.persistence import check_model_spec, load_speech_llm

    exp, _ = _config(args)
    check_model_spec(exp.model, "model")
    guard = OutputDir(exp.out, "export", overwrite=exp.overwrite, inputs=[exp.model], key="out")
    guard.check()
    model, _trained = load_speech_llm(exp.model)
    names = [t["name"] for t in model.transforms]
    if exp.drop_upscale:
        if "upscale" not in names:
            raise UsageError(f"drop_upscale: {exp.model} has no up-scaled blocks (recorded transforms: {', '.join(names) or 'none'})")
        from speechkeep.models.upscaling import drop_upscale_model

        drop_upscale_model(model)
    if exp.merge_lora:
        if not model.is_peft():
            raise UsageError(f"merge_lora: {exp.model} has no LoRA adapters (recorded transforms: {', '.join(names) or 'none'})")
        model.llm = model.llm.merge_and_unload()
        model.transforms = [t for t in model.transforms if t["name"] != "lora"]
        model.llm_weights_changed = True
    left = [t["name"] for t in model.transforms]
    if exp.llm_only and (left or model.is_peft()):
        raise UsageError(f"llm_only: the LLM still has the transforms {', '.join(left) or 'peft adapters'}: "
                         "it is not a plain Hugging Face model; add drop_upscale=true and/or merge_lora=true")
    with guard:
        if exp.llm_only:
            model.llm.save_pretrained(exp.out)
            model.tokenizer.save_pretrained(exp.out)
            what = "the LLM and its tokenizer (a plain Hugging Face directory)"
        else:
            model.save_pretrained(exp.out)
            what = "a SpeechLLM" + (f" with transforms {', '.join(left)}" if left else "")
    print(f"exported {exp.model} -> {exp.out}: {what}")


def cmd_train(args) -> None:
    from speechkeep.train.loop import train

    cfg, _ = _config(args)
    res = train(cfg)
    if not res.summary:  # not the main process of several
        return
    print(f"trained {res.steps} steps in {res.seconds / 60:.1f} min, final loss {res.final_loss:.4f}, "
          f"{res.tokens_per_second:.0f} tokens/s; model saved to {res.output_dir / 'model'}")


EVAL_FLAGS = ("model", "data", "out", "tasks", "split", "limit", "max_new_tokens", "batch_size", "ctc_emit", "baseline")
"""``speechkeep eval``'s option flags (``--max-new-tokens`` = ``max_new_tokens=``), kept as aliases of its config keys."""


def cmd_eval(args) -> None:
    from speechkeep.evaluate.report import format_metrics
    from speechkeep.evaluate.run import evaluate

    cfg, _ = _config(args)
    metrics = evaluate(cfg)
    if os.environ.get("RANK", "0") not in ("", "0"):  # not the main process of several
        return
    print(format_metrics(metrics))
    print(f"wrote {Path(cfg.out) / 'metrics.json'} and predictions.jsonl")


def cmd_demo(args) -> None:
    from speechkeep.recipes.demo import run_demo

    run_demo(_config(args)[0])


def cmd_reproduce(args) -> None:
    from speechkeep.recipes.reproduce import run_reproduce

    run_reproduce(_config(args)[0])


def cmd_align(args) -> None:
    from speechkeep.align.recipe import run_align

    run_align(_config(args)[0])


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from speechkeep import __version__
    from speechkeep.config import Flag

    parser = _Parser(
        prog="speechkeep",
        description="Turn a pretrained text LLM into a speech LLM without losing what it knew.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"speechkeep {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level and show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list bundled models and accepted model specs; optionally prepare caches",
                       description="List bundled models and the accepted spec forms.")
    _job(p, ModelsConfig, [Flag("prepare", kwargs={"nargs": "*", "metavar": "SPEC"})])
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("build", help="build a SpeechLLM (frozen encoder -> new adaptor -> LLM) and save it",
                       description="Build a SpeechLLM from a config and save it.")
    _job(p, BuildConfig, ["out", "seed"])
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("ask", help="answer text and/or spoken questions with a SpeechLLM",
                       description="Answer questions with a saved SpeechLLM, a config, or a plain LLM spec.")
    _job(p, AskConfig, ["model", Flag("text", kwargs={"action": "append", "nargs": None, "metavar": "QUESTION"}),
                        Flag("audio", kwargs={"action": "append", "nargs": None, "metavar": "FILE"}), "max_new_tokens"])
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("export", help="write a trained model in another form: up-scaled blocks dropped, LoRA merged, LLM only",
                       description="Export a trained run or saved SpeechLLM: drop_upscale=true recovers the exact base "
                                   "LLM of an up-scaled model, merge_lora=true merges LoRA into the weights, llm_only=true "
                                   "writes the LLM as a plain Hugging Face directory.")
    _job(p, ExportConfig, ["model", "out"])
    p.set_defaults(func=cmd_export)

    from speechkeep.evaluate.run import ALL_TASKS, EvalConfig
    from speechkeep.strategies import STRATEGIES
    from speechkeep.train.config import TrainConfig

    p = sub.add_parser("train", help="adapt a text LLM to speech with a strategy (adaptor | full | lora | ...)",
                       description="Train a SpeechLLM. Strategies: " + "; ".join(
                           f"{n}: {c.description}" for n, c in sorted(STRATEGIES.items()))
                       + ". Runs on CPU, one GPU, or several through `accelerate launch -m speechkeep train ...`.")
    _job(p, TrainConfig)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="measure text (T2T) and spoken (S2T, ASR) ability, perplexity, the cascade",
                       description="Evaluate a trained run, a saved SpeechLLM, or a plain LLM spec (the No-FT row: text "
                                   "tasks only). Options come as [CONFIG.yaml] [key=value ...] like every job command; "
                                   "the flags below are aliases of those keys (--max-new-tokens 8 = max_new_tokens=8) "
                                   "and win over them.")
    _job(p, EvalConfig, [Flag(k, kwargs={"choices": ALL_TASKS}) if k == "tasks" else
                         Flag(k, kwargs={"choices": ["soft", "hard"]}) if k == "ctc_emit" else k for k in EVAL_FLAGS])
    p.set_defaults(func=cmd_eval)

    from speechkeep.recipes.demo import DemoConfig

    p = sub.add_parser("demo", help="the main job on the bundled models: spoken data, No-FT, cascade, train, evaluate, report",
                       description="Build spoken WebQuestions data, evaluate No-FT and the cascade, train one strategy "
                                   "for a few minutes, evaluate it on held-out questions and voice, write a report.")
    _job(p, DemoConfig)
    p.set_defaults(func=cmd_demo)

    from speechkeep.recipes.reproduce import ReproduceConfig

    p = sub.add_parser("reproduce", help="the seeds' whole comparison: every strategy, importance, tables, figures, report.html",
                       description="Run No-FT, the cascade, the aligned front-end and every strategy cell on the same data, "
                                   "seed, front-end and step budget; textual importance before and after each; evaluation "
                                   "with 95% intervals and paired tests; then report.html (self-contained), report.md and "
                                   "results.json. Every cell is resumable and skipped when finished: run the same command "
                                   "again to go on. --only CELLS (comma-separated names or patterns) and --budget-minutes M "
                                   "for short sessions.")
    _job(p, ReproduceConfig, [Flag("only", kwargs={"nargs": None, "type": lambda s: [x for x in s.split(",") if x],
                                                   "metavar": "CELLS"}), "budget_minutes", "out"])
    p.set_defaults(func=cmd_reproduce)

    from speechkeep.align.recipe import AlignConfig

    p = sub.add_parser("align", help="speech alignment stage: multi-voice corpus, CTC onto the LLM vocabulary, evaluation, card",
                       description="Train the adaptor so speech maps to what the LLM reads (CTC onto the LLM's own token "
                                   "embeddings, no LLM forward; strategy=ctc_align on the training engine), evaluate it "
                                   "on held-out questions and voice, and optionally export the shippable checkpoint "
                                   "(export_to=DIR). Resumable: run it again to continue.")
    _job(p, AlignConfig)
    p.set_defaults(func=cmd_align)

    from speechkeep.importance.cli import add_importance_parsers

    add_importance_parsers(sub)

    from speechkeep.data.cli import add_data_parser  # a broken module is an error, never a missing command

    add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # key=value overrides after an option (`build --out DIR adaptor.stack_frames=8`) are overrides too, and so
        # are the bare arguments of a command that takes them (`importance-compare RUN --out DIR RUN`)
        bare_ok = bool(getattr(args, "_config_positional", None))
        if hasattr(args, "overrides") and all(("=" in a or bare_ok) and not a.startswith("-") for a in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        args.func(args)
    except SpeechkeepError as e:
        if args.verbose:
            raise
        print(f"speechkeep: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("speechkeep: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the environment (disk full, permissions), not the input: one line, -v for the traceback
        if args.verbose:
            raise
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"speechkeep: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
