"""The utterance manifest: ``manifest.jsonl``, one JSON object per utterance.

Each line::

    {"id": "wqr000000", "text": "what is the name of justin bieber brother?",
     "audio": "audio/piper-joe/wqr000000.wav", "sample_rate": 16000, "duration": 2.16,
     "voice": "piper-joe", "answers": ["Jazmyn Bieber", "Jaxon Bieber"],
     "response": "...", "split": "train"}

``audio`` is stored relative to the manifest's directory (so a dataset directory can be moved)
and resolved to an absolute path by :func:`read_manifest`. ``text`` is the transcript of the audio
(ASR training/evaluation); ``response`` is the training target (a teacher response, or null);
``answers`` are reference answers for QA evaluation.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from speechkeep.errors import DataError
from speechkeep.io import write_jsonl

MANIFEST_NAME = "manifest.jsonl"
FIELDS = ("id", "text", "audio", "sample_rate", "duration", "voice", "answers", "response", "split")


@dataclass
class ManifestRow:
    """One utterance of a spoken dataset."""

    id: str
    """Unique utterance id."""
    text: str
    """What is said (the question text; the transcript for ASR)."""
    audio: str
    """Path of the 16-kHz mono audio file (absolute after :func:`read_manifest`)."""
    sample_rate: int
    """Sample rate of the audio file (16000)."""
    duration: float
    """Length of the audio in seconds."""
    voice: str
    """The TTS voice that spoke it, or the speaker/source name of supplied audio."""
    answers: list[str] = field(default_factory=list)
    """Reference answers (QA evaluation)."""
    response: str | None = None
    """Training target: the teacher's response to the text question, or one supplied with the input."""
    split: str = "train"
    """Split name: 'train', 'eval', ..."""

    def to_dict(self, base_dir: str | os.PathLike | None = None) -> dict:
        """Plain dict; with ``base_dir`` the audio path is made relative to it."""
        d = asdict(self)
        if base_dir is not None:
            d["audio"] = _relative(self.audio, base_dir)
        return d

    def load_audio(self):
        """The waveform (float32 mono 16 kHz); DataError if the file is bad."""
        from speechkeep.audio import load_audio

        return load_audio(self.audio)


def _relative(audio: str, base_dir: str | os.PathLike) -> str:
    p = Path(audio)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return Path(os.path.relpath(p, Path(base_dir).resolve())).as_posix()
    except ValueError:  # another drive (Windows): keep it absolute
        return str(p)


def write_manifest(path: str | os.PathLike, rows: list[ManifestRow]) -> Path:
    """Write ``rows`` to ``path`` atomically (a crash never leaves a half-written manifest).

    Audio paths are stored relative to the manifest's directory."""
    path = Path(path)
    ids: dict[str, int] = {}
    for i, r in enumerate(rows):
        if r.id in ids:
            raise DataError(f"{path}: duplicate utterance id {r.id!r} (rows {ids[r.id] + 1} and {i + 1})")
        ids[r.id] = i
    base = path.parent
    base.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, [r.to_dict(base) for r in rows])
    return path


def read_manifest(path: str | os.PathLike, check_audio: bool = False) -> list[ManifestRow]:
    """Read and validate a manifest; errors name ``file:line``. Audio paths come back absolute.

    ``check_audio=True`` also checks that every audio file exists."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    base = path.parent.resolve()
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    for n, raw, bad in decoded_lines(path):
        where = f"{path}:{n}"
        if bad is not None:
            raise DataError(f"{where}: {bad}")
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: malformed JSON at column {e.colno}: {e.msg}") from None
        row = _row_from(obj, where)
        a = Path(row.audio)
        row.audio = str(a if a.is_absolute() else base / a)
        if check_audio and not Path(row.audio).is_file():
            raise DataError(f"{where}: audio file not found: {row.audio}")
        if row.id in seen:
            raise DataError(f"{where}: duplicate id {row.id!r} (first at line {seen[row.id]})")
        seen[row.id] = n
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    return rows


def decoded_lines(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line number, text, problem)`` of every line of a text file; ``problem`` is None, or why the
    line is not UTF-8 text (its text is then ""). A leading byte-order mark is ignored."""
    from speechkeep.io import read_text_bytes

    lines = read_text_bytes(path).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # after the last newline
    out = []
    for n, raw in enumerate(lines, 1):
        try:
            out.append((n, raw.decode("utf-8"), None))
        except UnicodeDecodeError as e:
            out.append((n, "", f"not UTF-8 text ({e.reason} at byte {e.start} of the line)"))
    return out


def _row_from(obj, where: str) -> ManifestRow:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("id", "text", "audio", "sample_rate", "duration", "voice") if k not in obj]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = [k for k in obj if k not in FIELDS]
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(FIELDS)}")

    def need(key, types, name):
        v = obj[key]
        if not isinstance(v, types) or isinstance(v, bool):
            raise DataError(f"{where}: field '{key}' must be {name}, got {v!r}")
        return v

    rid, text, audio, voice = (need(k, str, "a string") for k in ("id", "text", "audio", "voice"))
    if not rid or not text.strip() or not audio:
        raise DataError(f"{where}: fields 'id', 'text' and 'audio' must not be empty")
    sr = need("sample_rate", int, "an integer")
    dur = float(need("duration", (int, float), "a number"))
    if sr <= 0 or dur <= 0:
        raise DataError(f"{where}: sample_rate and duration must be positive (got {sr}, {dur})")
    answers = obj.get("answers") or []
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise DataError(f"{where}: field 'answers' must be a list of strings, got {answers!r}")
    response = obj.get("response")
    if response is not None and not isinstance(response, str):
        raise DataError(f"{where}: field 'response' must be a string or null, got {response!r}")
    split = obj.get("split", "train")
    if not isinstance(split, str) or not split:
        raise DataError(f"{where}: field 'split' must be a non-empty string, got {split!r}")
    return ManifestRow(rid, text, audio, sr, dur, voice, list(answers), response, split)
