"""``speechkeep data build``: argparse wiring for :func:`speechkeep.data.build.build_dataset`.

The main CLI registers it with::

    from speechkeep.data.cli import add_data_parser, run_data_build
    add_data_parser(subparsers)      # adds "data" with its sub-command "build"
    ...
    if args.command == "data": return run_data_build(args)

It also runs on its own: ``python -m speechkeep.data.cli build --questions FILE --out DIR``.
Help texts are the docstrings of :class:`~speechkeep.data.build.DataBuildConfig`'s fields.
"""

from __future__ import annotations

import argparse
import logging
import sys

from speechkeep.config import arg_type, field_docs
from speechkeep.data.build import DataBuildConfig


def _help(name: str, extra: str = "", default: str | None = None) -> str:
    """Help text of an option: its config field's docstring, plus the default."""
    doc = field_docs(DataBuildConfig).get(name, "")
    if default is None:
        value = getattr(DataBuildConfig(), name)
        default = "" if value == "" else str(value)
    tail = f" (default: {default})" if default else ""
    return f"{doc}{extra}{tail}".replace("%", "%%")


def _voice_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``data build`` (one per DataBuildConfig field)."""
    p.add_argument("--questions", required=True, metavar="FILE", help=_help("questions"))
    p.add_argument("--out", required=True, metavar="DIR", help=_help("out"))
    p.add_argument("--limit", type=arg_type((DataBuildConfig, "limit")), metavar="N", help=_help("limit"))
    p.add_argument("--voices", type=_voice_list, default=[], metavar="V1,V2",
                   help=_help("voices", " Comma-separated; names in speechkeep.data.tts.VOICES.", "all but the eval voices"))
    p.add_argument("--eval-voices", type=_voice_list, default=[], metavar="V1,V2",
                   help=_help("eval_voices", " Comma-separated.", "none"))
    p.add_argument("--split", default="train", metavar="NAME", help=_help("split"))
    p.add_argument("--eval-split", default="eval", metavar="NAME", help=_help("eval_split"))
    p.add_argument("--split-by-voice", action="store_true", help=_help("split_by_voice"))
    p.add_argument("--teacher", metavar="MODEL_SPEC", help=_help("teacher"))
    p.add_argument("--max-new-tokens", type=arg_type((DataBuildConfig, "max_new_tokens")), default=64, metavar="N",
                   help=_help("max_new_tokens"))
    p.add_argument("--teacher-batch-size", type=arg_type((DataBuildConfig, "teacher_batch_size")), default=16,
                   metavar="N", help=_help("teacher_batch_size"))
    p.add_argument("--system-prompt", metavar="TEXT", help=_help("system_prompt"))
    p.add_argument("--workers", type=arg_type((DataBuildConfig, "workers")), default=2, metavar="N", help=_help("workers"))
    p.add_argument("--skip-bad", action="store_true", help=_help("skip_bad"))
    p.add_argument("--features", action=argparse.BooleanOptionalAction, default=True, help=_help("features"))
    p.add_argument("--speech-encoder", default="bundled:whisper-tiny.en", metavar="SPEC", help=_help("speech_encoder"))
    p.add_argument("--encode-mode", choices=["padded", "variable"], default="padded", help=_help("encode_mode"))
    p.add_argument("--deterministic-tts", action="store_true", help=_help("deterministic_tts"))
    p.add_argument("--seed", type=arg_type((DataBuildConfig, "seed")), default=0, help=_help("seed"))
    p.add_argument("--overwrite", action="store_true", help=_help("overwrite"))
    p.add_argument("--no-progress", dest="progress", action="store_false", help="Hide the progress bars.")


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``data`` (with the sub-command ``build``) to the main CLI's subparsers."""
    data = subparsers.add_parser("data", help="build spoken datasets (TTS, teacher responses, encoder features)",
                                 description="Spoken-data pipeline.")
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    build = sub.add_parser(
        "build", help="questions -> spoken questions + teacher responses + manifest",
        description="Turn text questions into a spoken dataset: DIR/manifest.jsonl (one line per utterance) "
                    "and 16-kHz mono audio in DIR/audio/<voice>/<id>.wav. Resumable: re-running skips finished work.",
    )
    add_build_arguments(build)
    build.set_defaults(func=run_data_build)
    return data


def config_from_args(args: argparse.Namespace) -> DataBuildConfig:
    names = [f for f in DataBuildConfig.__dataclass_fields__]
    return DataBuildConfig(**{n: getattr(args, n) for n in names if hasattr(args, n)})


def run_data_build(args: argparse.Namespace) -> int:
    """Run ``data build`` from parsed arguments; print the summary. SpeechkeepError propagates."""
    from pathlib import Path

    from speechkeep.data.build import build_dataset
    from speechkeep.errors import UsageError

    from speechkeep.data.questions import WEBQUESTIONS_PREFIX

    if not args.questions.startswith(WEBQUESTIONS_PREFIX) and not Path(args.questions).exists():
        raise UsageError(f"--questions {args.questions}: no such file or directory")

    report = build_dataset(config_from_args(args))
    print(report.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m speechkeep.data.cli build ...``."""
    from speechkeep.errors import SpeechkeepError

    parser = argparse.ArgumentParser(prog="speechkeep")
    subs = parser.add_subparsers(dest="command", required=True)
    add_data_parser(subs)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] != "data":
        argv = ["data", *argv]
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except SpeechkeepError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
