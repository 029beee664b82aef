"""A multi-voice transcription corpus for speech alignment, synthesized offline.

Texts are the questions of WebQuestions-style files (``trainmodel`` and ``val`` by default: never
the evaluation split) plus, optionally, their reference answers (short entity names: the words
spoken questions are about). Every text is spoken by several voices, chosen deterministically per
text from the piper and eSpeak training voices; held-out voices never speak here. Transcripts are
lower-cased and whitespace-normalized, the way WebQuestions writes its questions (case is not
audible).

Output: ``<out>/audio/<voice>/<id>.wav``, ``<out>/manifest.jsonl`` (split 'train', written last and
atomically) and the variable-length encoder features under ``<out>/features``. Resumable: finished
audio and features are reused.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from speechkeep.config import Checked, ranged
from speechkeep.errors import DataError

_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


DEFAULT_SOURCES = ("webquestions:trainmodel", "webquestions:val")
"""The corpus's questions when ``sources`` is empty (shipped with the package)."""


def corpus_sources(sources) -> list[str]:
    """The question sources a corpus config means (empty: :data:`DEFAULT_SOURCES`)."""
    return list(sources or DEFAULT_SOURCES)


@dataclass
class AlignCorpusConfig(Checked):
    """What the alignment corpus is made of."""

    sources: list[str] = field(default_factory=list)
    """WebQuestions-style JSON/JSONL files (or webquestions:SPLIT) whose questions (and answers) are spoken; empty: webquestions:trainmodel and webquestions:val, shipped with the package."""
    out: str = "runs/align/corpus"
    """Output directory (audio, manifest.jsonl, features)."""
    piper_voices_per_text: int = ranged(2, ge=0)
    """Piper (neural) voices speaking each question."""
    espeak_voices_per_text: int = ranged(2, ge=0)
    """eSpeak voices speaking each question."""
    include_answers: bool = True
    """Also speak each distinct reference answer (one piper and one eSpeak voice)."""
    held_out_voices: list[str] = field(default_factory=lambda: ["piper-joe-high"])
    """Voices that never speak in the corpus (kept for evaluation)."""
    max_texts: int | None = ranged(None, ge=1)
    """Use only the first N questions (None: all)."""
    workers: int = ranged(2, ge=1)
    """TTS worker processes."""
    speech_encoder: str = "bundled:whisper-tiny.en"
    """Speech encoder spec for the feature cache."""
    features: bool = True
    """Precompute variable-length encoder features."""


def normalize_transcript(text: str) -> str:
    """Lower case, single spaces (the WebQuestions question style)."""
    return " ".join(text.lower().split())


def _pick(key: str, voices: list[str], n: int) -> list[str]:
    """``n`` distinct voices for ``key``: a deterministic rotation of the list (sha1, not hash())."""
    if n <= 0 or not voices:
        return []
    start = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % len(voices)
    return [voices[(start + i) % len(voices)] for i in range(min(n, len(voices)))]


def plan_corpus(cfg: AlignCorpusConfig, sources: list[Path]) -> list[tuple[str, str, str]]:
    """``(utterance id, transcript, voice)`` for every utterance of the corpus."""
    from speechkeep.data.questions import read_questions
    from speechkeep.data.tts import VOICES

    held = set(cfg.held_out_voices)
    for v in held:
        if v not in VOICES:
            raise DataError(f"unknown held-out voice {v!r}; valid voices: {', '.join(VOICES)}")
    piper = [v for v, s in VOICES.items() if s.engine == "piper" and v not in held]
    espeak = [v for v, s in VOICES.items() if s.engine == "espeak" and v not in held]
    questions: dict[str, str] = {}
    seen: set[str] = set()
    answers: dict[str, str] = {}
    for src in sources:
        for it in read_questions(src).items:
            text = normalize_transcript(it.text)
            if text and text not in seen:
                seen.add(text)
                questions[_ID_SAFE.sub("_", it.id)] = text
            for a in it.answers:
                a = normalize_transcript(a)
                if a and a not in answers:
                    answers[a] = "a" + hashlib.sha1(a.encode("utf-8")).hexdigest()[:10]
    q_items = list(questions.items())[: cfg.max_texts] if cfg.max_texts else list(questions.items())
    plan = []
    for qid, text in q_items:
        for v in _pick(qid, piper, cfg.piper_voices_per_text) + _pick(qid, espeak, cfg.espeak_voices_per_text):
            plan.append((f"{qid}.{v}", text, v))
    if cfg.include_answers:
        a_items = list(answers.items())[: cfg.max_texts] if cfg.max_texts else list(answers.items())
        for text, aid in a_items:
            for v in _pick(aid, piper, 1) + _pick(aid, espeak, 1):
                plan.append((f"{aid}.{v}", text, v))
    return plan


def build_align_corpus(cfg: AlignCorpusConfig, progress: bool = True) -> Path:
    """Synthesize (resumably), cache features, write the manifest; return the manifest path."""
    from speechkeep.audio import MAX_SECONDS, TARGET_SR
    from speechkeep.config import config_to_dict
    from speechkeep.data.manifest import MANIFEST_NAME, ManifestRow, write_manifest
    from speechkeep.data.tts import synthesize_many
    from speechkeep.io import write_json
    from speechkeep.data.questions import resolve_questions_path

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    names = corpus_sources(cfg.sources)
    sources = [resolve_questions_path(s) for s in names]
    for s in sources:
        if not s.is_file():
            raise DataError(f"alignment corpus source {s} does not exist")
    t0 = time.perf_counter()
    plan = plan_corpus(cfg, sources)
    results = synthesize_many(plan, out / "audio", workers=cfg.workers, progress=progress)
    t_tts = time.perf_counter() - t0
    rows = [
        ManifestRow(id=uid, text=text, audio=str(path.resolve()), sample_rate=TARGET_SR,
                    duration=round(sec, 4), voice=voice, split="train")
        for (uid, text, voice), (path, sec) in zip(plan, results) if 0 < sec <= MAX_SECONDS
    ]
    t1 = time.perf_counter()
    if cfg.features:
        from speechkeep.data.features import FeatureCache

        FeatureCache(out / "features", cfg.speech_encoder, "variable", progress=progress).ensure(
            [r.audio for r in rows])
    t_feat = time.perf_counter() - t1
    manifest = write_manifest(out / MANIFEST_NAME, rows)

    write_json(out / "build_info.json", {
        "config": config_to_dict(cfg), "sources": list(names), "utterances": len(rows),
        "hours": round(sum(r.duration for r in rows) / 3600, 3),
        "voices": dict(sorted(Counter(r.voice for r in rows).items())),
        "timings_s": {"tts": round(t_tts, 1), "features": round(t_feat, 1)},
    })
    return manifest
