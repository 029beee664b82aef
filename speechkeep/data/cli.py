"""``speechkeep data build``: argparse wiring for :func:`speechkeep.data.build.build_dataset`.

The main CLI registers it with::

    from speechkeep.data.cli import add_data_parser, run_data_build
    add_data_parser(subparsers)      # adds "data" with its sub-command "build"
    ...
    if args.command == "data": return run_data_build(args)

It also runs on its own: ``python -m speechkeep.data.cli build --questions FILE --out DIR``.
Like every job command it takes ``[CONFIG.yaml] [key=value ...]`` of
:class:`~speechkeep.data.build.DataBuildConfig` (``questions=FILE out=DIR workers=1``); the flags are
aliases of those keys, and the help texts are the fields' docstrings.
"""

from __future__ import annotations

import argparse
import logging
import sys

from speechkeep.config import Flag, add_config_arguments, config_from_args
from speechkeep.data.build import DataBuildConfig


def _voice_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


BUILD_FLAGS = (
    Flag("questions", kwargs={"metavar": "FILE"}), Flag("out", kwargs={"metavar": "DIR"}), "limit",
    Flag("voices", kwargs={"type": _voice_list, "nargs": None, "metavar": "V1,V2"}),
    Flag("eval_voices", kwargs={"type": _voice_list, "nargs": None, "metavar": "V1,V2"}),
    Flag("split", kwargs={"metavar": "NAME"}), Flag("eval_split", kwargs={"metavar": "NAME"}),
    Flag("split_by_voice", const=True), Flag("teacher", kwargs={"metavar": "MODEL_SPEC"}), "max_new_tokens",
    "teacher_batch_size", Flag("system_prompt", kwargs={"metavar": "TEXT"}), "workers", Flag("skip_bad", const=True),
    "features", Flag("speech_encoder", kwargs={"metavar": "SPEC"}), "encode_mode",
    Flag("deterministic_tts", const=True), "seed", Flag("progress", "--no-progress", const=False),
)
"""``data build``'s historical flags, aliases of DataBuildConfig keys (``--workers 1`` = ``workers=1``;
``--voices a,b`` = ``voices=[a, b]``; ``--no-features`` = ``features=false``)."""


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``data build``: [CONFIG.yaml] [key=value ...] of DataBuildConfig, the flags as aliases."""
    add_config_arguments(p, DataBuildConfig, BUILD_FLAGS)


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
    from speechkeep.data.text import TextCorpusConfig

    text = sub.add_parser(
        "text", help="general English text corpus: training texts, a general held-out set, the CTC vocabulary, a card",
        description="Gather general English text available offline (WordNet sentences, everyday requests, text the LLM "
                    "writes, WebQuestions training questions, text files), clean it, hold out a general text set no "
                    "training text contains, count the CTC vocabulary with a spelling fallback and its held-out "
                    "coverage. Writes OUT/train.jsonl, heldout.jsonl, vocabulary.json, info.json, CARD.md (sources "
                    "and licenses). The LLM-written text is cached: a re-run continues.")
    add_config_arguments(text, TextCorpusConfig, ())
    text.set_defaults(func=run_data_text)
    return data


def run_data_text(args: argparse.Namespace) -> int:
    """Run ``data text``; print the card."""
    from pathlib import Path

    from speechkeep.data.text import TextCorpusConfig, build_text_corpus

    cfg = config_from_args(args, TextCorpusConfig)[0]
    build_text_corpus(cfg)
    print((Path(cfg.out) / "CARD.md").read_text(encoding="utf-8"))
    return 0


def build_config(args: argparse.Namespace) -> DataBuildConfig:
    return config_from_args(args, DataBuildConfig)[0]


def run_data_build(args: argparse.Namespace) -> int:
    """Run ``data build`` from parsed arguments; print the summary. SpeechkeepError propagates."""
    from pathlib import Path

    from speechkeep.data.build import build_dataset
    from speechkeep.errors import UsageError

    from speechkeep.data.questions import WEBQUESTIONS_PREFIX

    cfg = build_config(args)
    if not cfg.questions:
        raise UsageError("questions: give the questions file (--questions FILE or questions=FILE)")
    if not cfg.out:
        raise UsageError("out: give the output directory (--out DIR or out=DIR)")
    if not cfg.questions.startswith(WEBQUESTIONS_PREFIX) and not Path(cfg.questions).exists():
        raise UsageError(f"--questions {cfg.questions}: no such file or directory")

    report = build_dataset(cfg)
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
