"""Read question sets: WebQuestions-style JSON arrays, generic JSONL, or ``datasets`` directories.

Formats (auto-detected by :func:`read_questions`):

- **JSON array** (WebQuestions style): ``[{"qId": ..., "qText": ..., "answers": [...]}, ...]``.
- **JSONL**: one object per line, ``{"id": ..., "text": ..., "answers": [...], "response": ...,
  "audio": "path.wav"}``; only ``id`` and ``text`` are required. A relative ``audio`` path is
  resolved against the JSONL file's directory; an item with audio is not synthesized.
- **datasets directory** (``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``): a text column
  (``text``, ``transcript``, ``sentence``, ``question`` or ``qText``), optionally ``id``/``qId``,
  ``answers``, ``response`` and an audio column (an ``Audio`` feature, or a column named ``audio``
  holding paths). Split names of a ``DatasetDict`` become the items' splits.

Accepted key names, in order of preference: id: ``id``, ``qId``, ``question_id``; text: ``text``,
``qText``, ``question``, ``utterance``, ``transcript``, ``sentence``; answers: ``answers``,
``answer`` (a string or a list of strings); response: ``response``; audio: ``audio``,
``audio_path``; voice (for supplied audio): ``voice``, ``speaker``.

Problems are :class:`~speechkeep.errors.DataError` naming ``file:line``: malformed JSON (with the
line of the error), a missing or empty text, a missing id, a duplicate id (naming both lines).
With ``skip_bad=True`` a bad line is skipped and reported in :attr:`ReadResult.skipped` instead
(a malformed JSON *array* cannot be partly read and is always an error).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from speechkeep.errors import DataError

ID_KEYS = ("id", "qId", "question_id")
TEXT_KEYS = ("text", "qText", "question", "utterance", "transcript", "sentence")
ANSWER_KEYS = ("answers", "answer")
AUDIO_KEYS = ("audio", "audio_path")
VOICE_KEYS = ("voice", "speaker")
KNOWN_KEYS = set(ID_KEYS + TEXT_KEYS + ANSWER_KEYS + AUDIO_KEYS + VOICE_KEYS + ("response", "split"))


@dataclass
class QuestionItem:
    """One question as read from the input."""

    id: str
    """Unique id (WebQuestions ``qId``)."""
    text: str
    """The question text (also the transcript of its audio)."""
    answers: list[str] = field(default_factory=list)
    """Reference answers (may be empty)."""
    response: str | None = None
    """A target response supplied with the input (the teacher may replace it)."""
    audio_path: str | None = None
    """Existing audio for this question (absolute path); None means it is synthesized."""
    audio_bytes: bytes | None = field(default=None, repr=False)
    """Encoded audio supplied in memory (a ``datasets`` Audio column without a file on disk)."""
    voice: str | None = None
    """Speaker/voice name of supplied audio, if the input names one."""
    split: str | None = None
    """Split named by the input (a ``DatasetDict`` split or a ``split`` key); None: decided by the build."""
    line: int = 0
    """1-based line (JSON/JSONL) or row (datasets) of the item in its source."""
    source: str = ""
    """The file or directory the item was read from."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other keys of the input object, kept as they were."""

    @property
    def where(self) -> str:
        """``file:line`` of this item, for messages."""
        return f"{self.source}:{self.line}"

    @property
    def has_audio(self) -> bool:
        return self.audio_path is not None or self.audio_bytes is not None


@dataclass
class ReadResult:
    """What :func:`read_questions` read, and what it skipped (only with ``skip_bad``)."""

    items: list[QuestionItem]
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """(line number, reason) of every skipped line."""
    format: str = ""
    """'json', 'jsonl' or 'datasets'."""
    path: str = ""


def read_questions(path: str | os.PathLike, skip_bad: bool = False) -> ReadResult:
    """Read questions from a JSON array, a JSONL file or a ``datasets`` directory (auto-detected).

    ``webquestions:SPLIT`` (e.g. ``webquestions:devtest``) names a WebQuestions split shipped with
    the package (see :mod:`speechkeep.data.webquestions`); ``webquestions:heldout+devtest`` (alias
    ``webquestions:clean``, the 1,205-question clean evaluation pool) reads several splits in order,
    and an id that occurs in two of them is an error naming both places."""
    sources = resolve_question_sources(path)
    if len(sources) == 1:
        return _read_one(sources[0], skip_bad)
    parts = [_read_one(p, skip_bad) for p in sources]
    seen: dict[str, QuestionItem] = {}
    for part in parts:
        for item in part.items:
            if item.id in seen:
                raise DataError(f"{item.where}: duplicate id '{item.id}' (first at {seen[item.id].where})")
            seen[item.id] = item
    return ReadResult([i for part in parts for i in part.items], [s for part in parts for s in part.skipped],
                      parts[0].format, str(path))


def _read_one(p: Path, skip_bad: bool) -> ReadResult:
    if p.is_dir():
        return _read_datasets(p, skip_bad)
    if not p.is_file():
        raise DataError(f"questions file not found: {p}")
    from speechkeep.io import read_text_bytes

    data = read_text_bytes(p, "questions file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        if data.lstrip()[:1] == b"[" or not skip_bad:
            hint = " (--skip-bad cannot skip parts of a JSON array)" if skip_bad else ""
            raise DataError(f"{p}:{line}: not UTF-8 text ({e.reason} at byte {e.start}){hint}") from None
        from speechkeep.data.manifest import decoded_lines

        return _read_jsonl(p, decoded_lines(p), skip_bad)  # --skip-bad: skip the undecodable lines
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{p}: the questions file is empty")
    if stripped[0] == "[":
        return _read_json_array(p, text, skip_bad)
    return _read_jsonl(p, [(n, raw, None) for n, raw in enumerate(text.splitlines(), 1)], skip_bad)


def resolve_question_sources(path: str | os.PathLike) -> list[Path]:
    """The files behind a questions spec: ``webquestions:SPLIT[+SPLIT...]`` (or ``webquestions:clean``)
    -> the shipped splits' files, in order; anything else -> ``[Path(path)]``."""
    text = str(path)
    if text.startswith(WEBQUESTIONS_PREFIX):
        from speechkeep.data.webquestions import split_names, webquestions_file

        return [webquestions_file(s) for s in split_names(text[len(WEBQUESTIONS_PREFIX):])]
    return [Path(path)]


def resolve_questions_path(path: str | os.PathLike) -> Path:
    """The single file behind a questions spec (see :func:`resolve_question_sources`); a spec naming
    several splits is a UsageError here (the caller needs one file)."""
    sources = resolve_question_sources(path)
    if len(sources) != 1:
        from speechkeep.errors import UsageError

        raise UsageError(f"{path}: names {len(sources)} files where one is needed")
    return sources[0]


WEBQUESTIONS_PREFIX = "webquestions:"


# ---------------------------------------------------------------------------------------------
# JSON array / JSONL


def _read_json_array(p: Path, text: str, skip_bad: bool) -> ReadResult:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (--skip-bad cannot skip parts of a malformed JSON array)" if skip_bad else ""
        raise DataError(f"{p}:{e.lineno}: malformed JSON at column {e.colno}: {e.msg}{hint}") from None
    builder = _Builder(p, skip_bad)
    for line, obj in _array_elements(text):
        builder.add(line, obj)
    return builder.result("json")


def _array_elements(text: str) -> Iterator[tuple[int, Any]]:
    """Elements of a (valid) JSON array with the line each starts on."""
    dec = json.JSONDecoder()
    i = text.index("[") + 1
    n, line, last = len(text), 1, 0

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        return i

    i = skip(i)
    while i < n and text[i] != "]":
        line += text.count("\n", last, i)
        last = i
        obj, i = dec.raw_decode(text, i)
        yield line, obj
        i = skip(i)


def _read_jsonl(p: Path, lines: list[tuple[int, str, str | None]], skip_bad: bool) -> ReadResult:
    builder = _Builder(p, skip_bad)
    for n, raw, problem in lines:
        if problem is not None:
            builder.bad(n, problem)
            continue
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            builder.bad(n, f"malformed JSON at column {e.colno}: {e.msg}")
            continue
        builder.add(n, obj)
    return builder.result("jsonl")


class _Builder:
    """Validates objects into QuestionItems; raises or records problems."""

    def __init__(self, source: Path, skip_bad: bool, base_dir: Path | None = None):
        self.source = source
        self.skip_bad = skip_bad
        self.base_dir = base_dir if base_dir is not None else source.parent
        self.items: list[QuestionItem] = []
        self.skipped: list[tuple[int, str]] = []
        self.seen: dict[str, int] = {}

    def bad(self, line: int, reason: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{self.source}:{line}: {reason}")
        self.skipped.append((line, reason))

    def add(self, line: int, obj: Any, split: str | None = None, default_id: str | None = None) -> None:
        if not isinstance(obj, dict):
            return self.bad(line, f"expected a JSON object, got {type(obj).__name__}")
        qid = _first(obj, ID_KEYS)
        if qid is None or (isinstance(qid, str) and not qid.strip()):
            if default_id is None:
                return self.bad(line, f"missing id (one of the keys {', '.join(ID_KEYS)})")
            qid = default_id
        if isinstance(qid, (dict, list, bool)):
            return self.bad(line, f"id must be a string or number, got {qid!r}")
        qid = str(qid).strip()
        text = _first(obj, TEXT_KEYS)
        if text is None:
            return self.bad(line, f"id {qid!r}: missing text field (one of the keys {', '.join(TEXT_KEYS)})")
        if not isinstance(text, str):
            return self.bad(line, f"id {qid!r}: text must be a string, got {type(text).__name__}")
        if not text.strip():
            return self.bad(line, f"id {qid!r}: empty text")
        answers = _first(obj, ANSWER_KEYS)
        if answers is None:
            answers = []
        elif isinstance(answers, (str, int, float)) and not isinstance(answers, bool):
            answers = [str(answers)]
        elif isinstance(answers, list) and all(isinstance(a, (str, int, float)) for a in answers):
            answers = [str(a) for a in answers]
        else:
            return self.bad(line, f"id {qid!r}: answers must be a string or a list of strings, got {answers!r}")
        response = obj.get("response")
        if response is not None and not isinstance(response, str):
            return self.bad(line, f"id {qid!r}: response must be a string, got {type(response).__name__}")
        audio = _first(obj, AUDIO_KEYS)
        audio_path = audio_bytes = None
        if audio is not None:
            if isinstance(audio, dict):  # a datasets Audio value read with decode=False
                audio_path, audio_bytes = audio.get("path"), audio.get("bytes")
                if audio_bytes is None and audio_path is None:
                    return self.bad(line, f"id {qid!r}: the audio value has neither bytes nor a path")
                if audio_bytes is not None:
                    audio_path = None
            elif isinstance(audio, str) and audio.strip():
                audio_path = audio
            else:
                return self.bad(line, f"id {qid!r}: audio must be a file path, got {audio!r}")
            if audio_path is not None:
                ap = Path(os.path.expanduser(audio_path))
                audio_path = str(ap if ap.is_absolute() else (self.base_dir / ap).resolve())
        voice = _first(obj, VOICE_KEYS)
        if qid in self.seen:
            return self.bad(line, f"duplicate id {qid!r} (first seen at {self.source}:{self.seen[qid]})")
        self.seen[qid] = line
        self.items.append(QuestionItem(
            id=qid, text=" ".join(text.split()), answers=answers, response=response,
            audio_path=audio_path, audio_bytes=audio_bytes,
            voice=str(voice) if voice not in (None, "") else None,
            split=split if split is not None else (str(obj["split"]) if obj.get("split") else None),
            line=line, source=str(self.source),
            extra={k: v for k, v in obj.items() if k not in KNOWN_KEYS},
        ))

    def result(self, fmt: str) -> ReadResult:
        if not self.items:
            why = f" ({len(self.skipped)} bad lines skipped)" if self.skipped else ""
            raise DataError(f"{self.source}: no questions found{why}")
        return ReadResult(self.items, self.skipped, fmt, str(self.source))


def _first(obj: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in obj and obj[k] is not None:
            return obj[k]
    return None


# ---------------------------------------------------------------------------------------------
# datasets directories


def _read_datasets(p: Path, skip_bad: bool) -> ReadResult:
    if not any((p / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        raise DataError(
            f"{p} is a directory but not a datasets directory written by save_to_disk "
            "(no dataset_info.json, state.json or dataset_dict.json)"
        )
    try:
        import datasets
    except ImportError:  # pragma: no cover - a dependency of the package
        raise DataError("reading a datasets directory needs the 'datasets' package") from None
    try:
        loaded = datasets.load_from_disk(str(p))
    except Exception as e:  # datasets raises many kinds (FileNotFoundError, ArrowInvalid, ...)
        raise DataError(f"cannot load the datasets directory {p}: {type(e).__name__}: {e}") from None
    splits = list(loaded.items()) if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    builder = _Builder(p, skip_bad, base_dir=p)
    for split, ds in splits:
        audio_col = _audio_column(ds)
        if audio_col is not None and isinstance(ds.features[audio_col], datasets.Audio):
            # Undecoded: {"bytes", "path"}; decoded by speechkeep.audio, not by datasets' backends.
            ds = ds.cast_column(audio_col, datasets.Audio(decode=False))
        cols = set(ds.column_names)
        if not cols & set(TEXT_KEYS):
            raise DataError(f"{p}: no text column (one of {', '.join(TEXT_KEYS)}); columns: {', '.join(sorted(cols))}")
        for i, row in enumerate(ds):
            obj = dict(row)
            if audio_col is not None and audio_col != "audio":
                obj["audio"] = obj.pop(audio_col)
            if isinstance(obj.get("audio"), dict) and "array" in obj["audio"]:
                obj["audio"] = _array_to_bytes(obj["audio"])
            builder.add(i + 1, obj, split=split, default_id=f"{split or 'row'}-{i:06d}")
    result = builder.result("datasets")
    return result


def _audio_column(ds) -> str | None:
    import datasets

    for name, feat in ds.features.items():
        if isinstance(feat, datasets.Audio):
            return name
    for name in AUDIO_KEYS:
        if name in ds.column_names:
            return name
    return None


def _array_to_bytes(value: dict) -> dict:
    """A ``{"array", "sampling_rate"}`` value (stored without the Audio feature) -> WAV bytes."""
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"]), format="WAV")
    return {"bytes": buf.getvalue(), "path": None}
