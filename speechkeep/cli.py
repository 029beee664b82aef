"""The ``speechkeep`` command line.

Every command has ``--help``. Commands that take a config accept an optional YAML file followed by
dotted ``key=value`` overrides; their ``--help`` lists every key with its type, default and meaning.

Errors are one line on stderr, ``speechkeep: error: ...``, naming the file, line, option or key at
fault; the exit code is 2 for usage errors (options, configs, model specs, output directories) and 1
for data errors (the content of an input file, or a training run that diverged). No traceback
unless ``-v``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speechkeep.errors import SpeechkeepError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``speechkeep: error: <command>: ...``), exit code 2."""

    def error(self, message: str):  # noqa: D102
        cmd = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        self.exit(2, f"speechkeep: error: {cmd + ': ' if cmd else ''}{message} (see `{self.prog} --help`)\n")


def _existing(path: str | None, flag: str, what: str = "path") -> None:
    """A path named on the command line must exist (a usage error, exit 2, if not)."""
    if path is not None and not Path(path).exists():
        raise UsageError(f"{flag} {path}: no such {what}")


def _config_epilog(cls) -> str:
    from speechkeep.config import format_config_help

    return "config keys (set in the YAML file or as key=value):\n" + format_config_help(cls)


def _add_config_args(p: argparse.ArgumentParser, overwrite_key: bool = True) -> None:
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file (optional; a key=value here is taken as an override)")
    p.add_argument("overrides", nargs="*", default=[], help="dotted key=value overrides, e.g. adaptor.stack_frames=8")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an output directory that is not empty and not this command's earlier output"
                        + (" (the same as overwrite=true)" if overwrite_key else ""))


def _split_config_args(args, overwrite_key: bool = True) -> tuple[str | None, list[str]]:
    cfg, ov = args.config, list(args.overrides)
    if cfg is not None and "=" in cfg and not Path(cfg).exists():
        ov.insert(0, cfg)
        cfg = None
    if overwrite_key and getattr(args, "overwrite", False):
        ov.append("overwrite=true")
    return cfg, ov


# ---------------------------------------------------------------- models
def cmd_models(args) -> None:
    from speechkeep.models import bundled

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
    if args.prepare is not None and not args.prepare:
        raise UsageError("--prepare: give at least one model spec, e.g. --prepare bundled:smollm2-135m")
    if args.prepare:
        import time

        from speechkeep.models.llm import resolve_llm_dir
        from speechkeep.models.speech_encoder import resolve_encoder_dir

        for spec in args.prepare:
            t = time.perf_counter()
            where = resolve_encoder_dir(spec) if "whisper" in spec else resolve_llm_dir(spec)
            print(f"prepared {spec} -> {where} ({time.perf_counter() - t:.1f} s)")


# ---------------------------------------------------------------- build / ask
def cmd_build(args) -> None:
    from speechkeep.config import load_config
    from speechkeep.models.builder import build_speech_llm
    from speechkeep.models.speech_llm import SpeechLLMConfig

    cfg_path, ov = _split_config_args(args, overwrite_key=False)
    cfg = load_config(SpeechLLMConfig, cfg_path, ov)

    def run() -> None:
        model, _ = build_speech_llm(cfg, seed=args.seed)
        n_adaptor = sum(p.numel() for p in model.adaptor.parameters())
        n_llm = sum(p.numel() for p in model.llm.parameters())
        n_enc = sum(p.numel() for p in model.encoder.parameters())
        print(f"SpeechLLM: encoder {cfg.speech_encoder} ({n_enc / 1e6:.1f} M, frozen) -> adaptor "
              f"k={cfg.adaptor.stack_frames} ({n_adaptor / 1e6:.2f} M) -> LLM {cfg.llm} ({n_llm / 1e6:.1f} M)")
        if args.out:
            model.save_pretrained(args.out)
            print(f"saved to {args.out}")

    if args.out is None:
        return run()
    from speechkeep.io import OutputDir
    from speechkeep.models.llm import resolve_llm_dir
    from speechkeep.models.speech_encoder import resolve_encoder_dir

    guard = OutputDir(args.out, "build", overwrite=args.overwrite, inputs=[cfg_path, cfg.llm, cfg.speech_encoder])
    guard.check()
    resolve_llm_dir(cfg.llm)
    resolve_encoder_dir(cfg.speech_encoder)
    with guard:
        run()


def cmd_ask(args) -> None:
    from speechkeep.audio import MAX_SECONDS, TARGET_SR, check_duration, load_audio
    from speechkeep.models.speech_llm import Query

    if not args.text and not args.audio:
        raise UsageError("give --text and/or --audio")
    for t in args.text or []:
        if not t.strip():
            raise UsageError("--text: the question is empty")
    from speechkeep.models.persistence import load_speech_llm

    for a in args.audio or []:
        _existing(a, "--audio", "file")
    audios = [load_audio(a) for a in args.audio or []]  # fail on bad audio before loading models
    for a, path in zip(audios, args.audio or []):
        check_duration(a, TARGET_SR, path, max_seconds=MAX_SECONDS)
    model, trained = load_speech_llm(args.model)
    if audios and not trained:
        print("note: this model's speech adaptor is untrained (a plain LLM spec or config): spoken answers are noise",
              file=sys.stderr)
    queries = [Query(text=t) for t in args.text or []] + [Query(audio=a) for a in audios]
    answers = model.generate(queries, max_new_tokens=args.max_new_tokens)
    labels = [f"text: {t}" for t in args.text or []] + [f"audio: {a}" for a in args.audio or []]
    for label, ans in zip(labels, answers):
        print(f"[{label}]\n{ans}\n")


# ---------------------------------------------------------------- train / eval
def cmd_train(args) -> None:
    from speechkeep.config import load_config
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import train

    cfg_path, ov = _split_config_args(args)
    cfg = load_config(TrainConfig, cfg_path, ov)
    res = train(cfg)
    print(f"trained {res.steps} steps in {res.seconds / 60:.1f} min, final loss {res.final_loss:.4f}, "
          f"{res.tokens_per_second:.0f} tokens/s; model saved to {res.output_dir / 'model'}")


EVAL_FLAGS = ("model", "data", "out", "tasks", "split", "limit", "max_new_tokens", "batch_size", "ctc_emit", "baseline")
"""``speechkeep eval``'s option flags (``--max-new-tokens`` = ``max_new_tokens=``), kept as aliases of its config keys."""


def cmd_eval(args) -> None:
    from speechkeep.config import load_config
    from speechkeep.evaluate.report import format_metrics
    from speechkeep.evaluate.run import EvalConfig, evaluate

    cfg_path, ov = _split_config_args(args)
    flags = {k: getattr(args, k) for k in EVAL_FLAGS if getattr(args, k) is not None}
    cfg = load_config(EvalConfig, cfg_path, ov, values=flags)
    metrics = evaluate(cfg)
    print(format_metrics(metrics))
    print(f"wrote {Path(cfg.out) / 'metrics.json'} and predictions.jsonl")


def cmd_demo(args) -> None:
    from speechkeep.config import load_config
    from speechkeep.recipes.demo import DemoConfig, run_demo

    cfg_path, ov = _split_config_args(args)
    run_demo(load_config(DemoConfig, cfg_path, ov))


def cmd_align(args) -> None:
    from speechkeep.align.recipe import AlignConfig, run_align
    from speechkeep.config import load_config

    cfg_path, ov = _split_config_args(args)
    run_align(load_config(AlignConfig, cfg_path, ov))


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from speechkeep import __version__
    from speechkeep.models.speech_llm import SpeechLLMConfig

    from speechkeep.config import Range, arg_type

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
    p.add_argument("--prepare", nargs="*", metavar="SPEC",
                   help="convert/de-quantize these specs into the cache now (e.g. bundled:smollm2-135m)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("build", help="build a SpeechLLM (frozen encoder -> new adaptor -> LLM) and save it",
                       description="Build a SpeechLLM from a config and save it.",
                       epilog=_config_epilog(SpeechLLMConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p, overwrite_key=False)
    p.add_argument("--out", help="directory to save the model to (config + adaptor weights)")
    p.add_argument("--seed", type=arg_type(Range(ge=0)), default=0, help="seed of the adaptor's initialization (default 0)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("ask", help="answer text and/or spoken questions with a SpeechLLM",
                       description="Answer questions with a saved SpeechLLM, a config, or a plain LLM spec.")
    p.add_argument("--model", default="bundled:smollm2-135m",
                   help="a training run or saved SpeechLLM directory, a config YAML, or an LLM spec (default bundled:smollm2-135m)")
    p.add_argument("--text", action="append", help="a text question (repeatable)")
    p.add_argument("--audio", action="append", help="an audio file with a spoken question (repeatable)")
    p.add_argument("--max-new-tokens", type=arg_type(Range(ge=1)), default=48, help="answer length limit in tokens (default 48)")
    p.set_defaults(func=cmd_ask)

    from speechkeep.evaluate.run import ALL_TASKS, EvalConfig
    from speechkeep.strategies import STRATEGIES
    from speechkeep.train.config import TrainConfig

    p = sub.add_parser("train", help="adapt a text LLM to speech with a strategy (adaptor | full | lora | ...)",
                       description="Train a SpeechLLM. Strategies: " + "; ".join(
                           f"{n}: {c.description}" for n, c in sorted(STRATEGIES.items()))
                       + ". Runs on CPU, one GPU, or several through `accelerate launch -m speechkeep train ...`.",
                       epilog=_config_epilog(TrainConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    d = EvalConfig()
    p = sub.add_parser("eval", help="measure text (T2T) and spoken (S2T, ASR) ability, perplexity, the cascade",
                       description="Evaluate a trained run, a saved SpeechLLM, or a plain LLM spec (the No-FT row: text "
                                   "tasks only). Options come as [CONFIG.yaml] [key=value ...] like every job command; "
                                   "the flags below are aliases of those keys (--max-new-tokens 8 = max_new_tokens=8) "
                                   "and win over them.",
                       epilog=_config_epilog(EvalConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
    p.add_argument("--model", default=None, help="a training run directory, a saved SpeechLLM directory, or an LLM spec "
                                                 f"(key model, default {d.model})")
    p.add_argument("--data", default=None, help="a spoken manifest (manifest.jsonl or its directory) or WebQuestions-style JSON (key data)")
    p.add_argument("--out", default=None, help=f"output directory for predictions.jsonl and metrics.json (key out, default {d.out})")
    p.add_argument("--tasks", nargs="+", default=None, choices=ALL_TASKS,
                   help="t2t: text question->answer accuracy; s2t: spoken question->answer accuracy; ppl: perplexity "
                        "of the reference responses given text and speech input; asr: transcription WER; cascade: "
                        "Whisper transcript -> LLM accuracy (default: t2t s2t ppl)")
    p.add_argument("--split", default=None, help="only manifest rows of this split (e.g. eval)")
    p.add_argument("--limit", type=arg_type((EvalConfig, "limit")), default=None, help="only the first N items")
    p.add_argument("--max-new-tokens", type=arg_type((EvalConfig, "max_new_tokens")), default=None,
                   help=f"answer length limit (default {d.max_new_tokens})")
    p.add_argument("--batch-size", type=arg_type((EvalConfig, "batch_size")), default=None,
                   help=f"generation batch size (default {d.batch_size})")
    p.add_argument("--ctc-emit", choices=["soft", "hard"], default=None,
                   help="CTC-aligned models: what the LLM reads per emitted token (soft: posterior-weighted embeddings, "
                        "hard: the best token's embedding); default: the model's own")
    p.add_argument("--baseline", default=None,
                   help="metrics.json (or its directory) of a baseline: adds retention A/B, drop B-A, modality gap")
    p.set_defaults(func=cmd_eval)

    from speechkeep.recipes.demo import DemoConfig

    p = sub.add_parser("demo", help="the main job on the bundled models: spoken data, No-FT, cascade, train, evaluate, report",
                       description="Build spoken WebQuestions data, evaluate No-FT and the cascade, train one strategy "
                                   "for a few minutes, evaluate it on held-out questions and voice, write a report.",
                       epilog=_config_epilog(DemoConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
    p.set_defaults(func=cmd_demo)

    from speechkeep.align.recipe import AlignConfig

    p = sub.add_parser("align", help="speech alignment stage: multi-voice corpus, CTC onto the LLM vocabulary, evaluation, card",
                       description="Train the adaptor so speech maps to what the LLM reads (CTC onto the LLM's own token "
                                   "embeddings, no LLM forward), evaluate it on held-out questions and voice, and "
                                   "optionally export the shippable checkpoint (export_to=DIR). Resumable: run it again to continue.",
                       epilog=_config_epilog(AlignConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
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
        # key=value overrides after an option (`build --out DIR adaptor.stack_frames=8`) are overrides too
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
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
