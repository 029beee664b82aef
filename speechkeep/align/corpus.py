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
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from typing import Literal

from speechkeep.config import Checked, ranged
from speechkeep.data.augment import AudioAugmentConfig
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
    texts: list[str] = field(default_factory=list)
    """General text files (JSONL {id, text} lines, e.g. train.jsonl of `speechkeep data text`), each text spoken by general_voices_per_text voices; empty: none."""
    max_general_texts: int | None = ranged(None, ge=1)
    """Speak at most this many of the general texts (a seeded sample; None: all)."""
    general_voices_per_text: int = ranged(1, ge=1)
    """Voices speaking each general text."""
    voice_pool: Literal["standard", "extended", "all"] = "standard"
    """Training voices: 'standard' (the 13 named voices), 'extended' (every eSpeak NG English accent x variant and a grid of piper parameters, speechkeep.data.tts.extended_voices), or 'all'."""
    piper_share: float = ranged(0.5, ge=0, le=1)
    """Share of the general texts spoken by a piper voice (the rest by eSpeak); questions keep piper/espeak_voices_per_text."""
    augment: AudioAugmentConfig = field(default_factory=AudioAugmentConfig)
    """Audio augmentations (speed, noise, reverberation): a share of the utterances get one augmented copy (augment.fraction=0: off)."""
    seed: int = ranged(0, ge=0)
    """Seed of the general-text sample and of piper's noise."""


def normalize_transcript(text: str) -> str:
    """Lower case, single spaces (the WebQuestions question style)."""
    return " ".join(text.lower().split())


def _pick(key: str, voices: list[str], n: int) -> list[str]:
    """``n`` distinct voices for ``key``: a deterministic rotation of the list (sha1, not hash())."""
    if n <= 0 or not voices:
        return []
    start = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % len(voices)
    # a large pool (the extended voices, neighbours alike): n voices spread over it, not n neighbours
    stride = max(len(voices) // max(n, 1), 1) if len(voices) > 50 else 1
    return list(dict.fromkeys(voices[(start + i * stride) % len(voices)] for i in range(min(n, len(voices)))))


def _unit(key: str) -> float:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2 ** 64


def plan_corpus(cfg: AlignCorpusConfig, sources: list[Path], texts: list[Path] = (),
                general_ids: set | None = None) -> list[tuple[str, str, str]]:
    """``(utterance id, transcript, voice)`` for every utterance of the corpus (``general_ids``: a set that
    receives the ids of the utterances of the general texts)."""
    from speechkeep.data.questions import read_questions
    from speechkeep.data.tts import get_voice, is_voice, voice_pool

    held = set(cfg.held_out_voices)
    for v in held:
        if not is_voice(v):
            get_voice(v)  # the DataError naming the valid voices
    piper = [v for v in voice_pool(cfg.voice_pool, "piper") if v not in held]
    espeak = [v for v in voice_pool(cfg.voice_pool, "espeak") if v not in held]
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
    general: dict[str, str] = {}
    for src in texts:
        for it in read_questions(src).items:
            text = normalize_transcript(it.text)
            if text and text not in seen:
                seen.add(text)
                general[_ID_SAFE.sub("_", it.id)] = text
    g_items = list(general.items())
    if cfg.max_general_texts and len(g_items) > cfg.max_general_texts:
        g_items = sorted(g_items, key=lambda kv: _unit(f"{cfg.seed}:{kv[0]}"))[: cfg.max_general_texts]
    for gid, text in g_items:
        engine = piper if (_unit(f"engine:{gid}") < cfg.piper_share and piper) or not espeak else espeak
        for v in _pick(gid, engine, cfg.general_voices_per_text):
            plan.append((f"{gid}.{v}", text, v))
            if general_ids is not None:
                general_ids.add(f"{gid}.{v}")
    return plan


def drop_clean_pool(plan: list[tuple[str, str, str]], webquestions: str | None = None) -> tuple[list, int]:
    """The plan without any utterance whose transcript contains a question of the clean WebQuestions pool
    (devtest + heldout, normalized, end punctuation stripped); returns (plan, number dropped)."""
    from speechkeep.data.text import clean_questions, containing

    texts = [t for _, t, _ in plan]
    bad = containing(texts, clean_questions(webquestions))
    return [p for i, p in enumerate(plan) if i not in bad], len(bad)


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
    texts = [Path(t) for t in cfg.texts]
    for t in texts:
        if not t.is_file():
            raise DataError(f"alignment corpus text file {t} does not exist")
    t0 = time.perf_counter()
    general_ids: set[str] = set()
    plan, n_clean = drop_clean_pool(plan_corpus(cfg, sources, texts, general_ids))
    results = synthesize_many(plan, out / "audio", workers=cfg.workers, progress=progress, seed=cfg.seed)
    t_tts = time.perf_counter() - t0
    rows = [
        ManifestRow(id=uid, text=text, audio=str(path.resolve()), sample_rate=TARGET_SR,
                    duration=round(sec, 4), voice=voice, split="train")
        for (uid, text, voice), (path, sec) in zip(plan, results) if 0 < sec <= MAX_SECONDS
    ]
    t_aug = time.perf_counter()
    pairs = augment_rows(rows, cfg, out / "audio_aug", progress)
    augmented = [r for _, r in pairs]
    n_general = sum(1 for r in rows if r.id in general_ids) + sum(1 for src, _ in pairs if src in general_ids)
    rows += augmented
    t_aug = time.perf_counter() - t_aug
    t1 = time.perf_counter()
    if cfg.features:
        from speechkeep.data.features import FeatureCache

        FeatureCache(out / "features", cfg.speech_encoder, "variable", progress=progress).ensure(
            [r.audio for r in rows])
    t_feat = time.perf_counter() - t1
    manifest = write_manifest(out / MANIFEST_NAME, rows)

    voices = Counter(r.voice for r in rows)
    write_json(out / "build_info.json", {
        "config": config_to_dict(cfg), "sources": list(names), "texts": [str(t) for t in texts],
        "utterances": len(rows), "hours": round(sum(r.duration for r in rows) / 3600, 3),
        "general_utterances": n_general, "outside_webquestions": round(n_general / max(len(rows), 1), 4),
        "augmented_utterances": len(augmented),
        "augmentations": dict(sorted(Counter(_aug_kind(r.id) for r in augmented).items())),
        "dropped_clean_pool": n_clean, "n_voices": len(voices),
        "voices": dict(sorted(voices.items())),
        "timings_s": {"tts": round(t_tts, 1), "augment": round(t_aug, 1), "features": round(t_feat, 1)},
    })
    return manifest


def _aug_kind(uid: str) -> str:
    """The augmentation kind of an augmented utterance id (its tag starts with speed, noise or reverb)."""
    for k in ("speed", "noise", "reverb"):
        if f".{k}" in uid:
            return k
    return "?"


def augment_rows(rows: list, cfg: AlignCorpusConfig, out_dir: Path, progress: bool = True) -> list:
    """``(source id, row)`` of one augmented copy (``cfg.augment``) of each of the rows :func:`~speechkeep.data.augment.augment_plan` picks:
    ``<out_dir>/<voice>/<id>.<tag>.wav``, id ``<id>.<tag>`` (the tag names the augmentation, e.g.
    ``speed1.1``, ``noise-pink-12.5db``, ``reverb0.45s``); existing files are reused (resumable)."""
    from tqdm import tqdm

    from speechkeep.audio import MAX_SECONDS, TARGET_SR, load_audio, save_wav
    from speechkeep.data.augment import apply_plan, augment_plan, plan_tag
    from speechkeep.data.manifest import ManifestRow

    out = []
    todo = [(r, p) for r in rows if (p := augment_plan(r.id, cfg.augment)) is not None]
    for r, p in tqdm(todo, desc="augment", unit="utt", disable=not progress or not todo):
        tag = plan_tag(p)
        path = out_dir / r.voice / f"{r.id}.{tag}.wav"
        if path.is_file():
            import soundfile as sf

            sec = sf.info(str(path)).duration
        else:
            audio = apply_plan(load_audio(r.audio), p, TARGET_SR)
            save_wav(path, audio, TARGET_SR)
            sec = len(audio) / TARGET_SR
        if 0 < sec <= MAX_SECONDS:
            out.append((r.id, ManifestRow(id=f"{r.id}.{tag}", text=r.text, audio=str(path.resolve()), sample_rate=TARGET_SR,
                                   duration=round(sec, 4), voice=r.voice, split="train")))
    return out
