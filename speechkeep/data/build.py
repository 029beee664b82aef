"""Build a spoken dataset: questions -> voices -> TTS -> teacher responses -> manifest -> features.

:func:`build_dataset` writes into ``out``:

- ``audio/<voice>/<id>.wav``: 16-kHz mono 16-bit audio (supplied audio is converted and copied to
  ``audio/<speaker or 'original'>/<id>.wav``);
- ``manifest.jsonl``: one :class:`~speechkeep.data.manifest.ManifestRow` per utterance (atomic);
- ``teacher_cache.jsonl``: teacher responses (with ``teacher``), reused by re-runs;
- ``features/``: the encoder-feature cache (with ``features``);
- ``build_info.json``: the config, counts and timings of the last run;
- ``skipped.jsonl``: the input lines skipped with ``skip_bad`` (line and reason), if any.

Voices and splits: every item gets a voice deterministically from its id (see
:func:`~speechkeep.data.tts.assign_voice`), from ``voices`` (default: every voice of the registry
except ``eval_voices``). ``eval_voices`` are held-out speakers reserved for the evaluation split
``eval_split``: they never speak an item of another split, and items of the evaluation split are
spoken by them. Every item gets the split ``split`` unless the input names one (a ``DatasetDict``
split or a ``split`` key) or ``split_by_voice`` is set, in which case items are spread over
``voices`` + ``eval_voices`` and those that land on an evaluation voice form the evaluation split.

Resumable: existing audio files (written atomically) are reused unless their text or voice
changed, cached teacher responses and encoder features are reused; the manifest is rewritten
atomically at the end. Nothing is half-written: on any error the previous manifest stays as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from speechkeep.config import Checked, ranged
from speechkeep.errors import DataError, UsageError
from speechkeep.io import OutputDir, write_json, write_jsonl

log = logging.getLogger(__name__)

ORIGINAL_VOICE = "original"
"""Voice name of supplied audio whose input names no speaker."""


@dataclass
class DataBuildConfig(Checked):
    """Options of ``speechkeep data build``."""

    questions: str = ""
    """Input questions: a WebQuestions-style JSON array ({qId, qText, answers}), a JSONL file ({id, text, [answers], [response], [audio]} per line), a datasets directory (save_to_disk; an audio column there means no TTS), or webquestions:SPLIT for a WebQuestions split shipped with the package (trainmodel, val, devtest, heldout; several joined with +, e.g. webquestions:heldout+devtest = webquestions:clean, the 1,205 clean evaluation questions)."""
    out: str = ""
    """Output directory: manifest.jsonl, audio/<voice>/<id>.wav, build_info.json, caches."""
    limit: int | None = ranged(None, ge=1)
    """Use only the first N questions (None: all)."""
    voices: list[str] = field(default_factory=list)
    """TTS voices for the items (names from the voice registry); empty: every voice except the eval voices."""
    eval_voices: list[str] = field(default_factory=list)
    """Held-out voices reserved for the evaluation split: they speak only items of eval_split, and eval_split items are spoken by them."""
    split: str = "train"
    """Split name given to every item whose split is not decided otherwise (by the input, or by split_by_voice)."""
    eval_split: str = "eval"
    """Name of the evaluation split (the one spoken by eval_voices)."""
    split_by_voice: bool = False
    """Decide the split by the voice: items are spread over voices + eval_voices, and those spoken by an eval voice form eval_split (needs eval_voices)."""
    teacher: str | None = None
    """LLM spec whose own greedy response to each text question becomes the training target (e.g. bundled:smollm2-135m); None keeps responses from the input."""
    max_new_tokens: int = ranged(64, ge=1)
    """Teacher: maximum new tokens per response."""
    teacher_batch_size: int = ranged(16, ge=1)
    """Teacher: questions per generation batch (left-padded, sorted by length)."""
    system_prompt: str | None = None
    """Teacher: system prompt (None keeps the chat template's default; use the one the speech LLM will use)."""
    workers: int = ranged(2, ge=1)
    """TTS worker processes (each uses one core)."""
    skip_bad: bool = False
    """Skip bad input lines/items (malformed JSON, empty text, duplicate id, bad audio) instead of stopping; they are counted and listed in OUT/skipped.jsonl."""
    features: bool = True
    """Precompute the frozen encoder's features of every utterance into OUT/features (fp16, read by training and evaluation)."""
    speech_encoder: str = "bundled:whisper-tiny.en"
    """Speech encoder spec for the feature cache."""
    encode_mode: Literal["padded", "variable"] = "padded"
    """Feature cache encoding: 'padded' to Whisper's 30-s window (Whisper's own) or 'variable' (only the real frames, faster)."""
    deterministic_tts: bool = False
    """Run piper noise-free (flatter prosody). Audio is reproducible either way: by default piper's natural noise is seeded per utterance from (text, voice, seed)."""
    seed: int = ranged(0, ge=0)
    """Seed of the voice assignment and of piper's noise: another seed gives another voice per item and other renditions (each still reproducible, bit-identical on the same machine)."""
    progress: bool = True
    """Show progress bars (rate and ETA)."""
    overwrite: bool = False
    """Write into an output directory that is not empty and not a previous `speechkeep data build` output."""


@dataclass
class BuildReport:
    """What :func:`build_dataset` did."""

    out: Path
    manifest: Path
    rows: list
    """The manifest rows (ManifestRow, audio paths absolute)."""
    counts: dict[str, float]
    timings: dict[str, float]
    skipped: list[dict] = field(default_factory=list)
    """{'source', 'line', 'reason'} of each skipped input line or item."""
    max_new_tokens: int = 0

    def summary(self) -> str:
        c, t = self.counts, self.timings
        splits = Counter(r.split for r in self.rows)
        lines = [
            f"wrote {self.manifest} ({len(self.rows)} utterances: "
            + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())) + ")",
            f"  audio: {c['tts_synthesized']} synthesized, {c['audio_imported']} imported, "
            f"{c['audio_reused']} reused; {c['audio_seconds']:.0f} s of speech in {c['voices_used']} voices",
        ]
        if "teacher_generated" in c:
            lines.append(f"  teacher: {c['teacher_generated']} generated ({c['teacher_new_tokens']} tokens), "
                         f"{c['teacher_cached']} cached; {c['teacher_truncated']} responses cut at "
                         f"max_new_tokens={self.max_new_tokens}")
        if "features_computed" in c:
            lines.append(f"  features: {c['features_computed']} computed, {c['features_cached']} cached")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} bad input lines/items (listed in {self.out / 'skipped.jsonl'})")
        lines.append("  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()))
        return "\n".join(lines)


@dataclass
class _Planned:
    item: object  # QuestionItem
    stem: str
    voice: str
    split: str
    path: Path
    fingerprint: str
    duration: float = 0.0


_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def file_stem(item_id: str) -> str:
    """A file-name-safe stem for an id: the id itself when safe, else a cleaned id plus a hash."""
    if _SAFE.fullmatch(item_id):
        return item_id
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).strip("._-")[:60] or "item"
    return f"{clean}-{hashlib.sha1(item_id.encode('utf-8')).hexdigest()[:10]}"


def _check_config(cfg: DataBuildConfig) -> None:
    """Option checks beyond the numeric ranges (those are checked when the config is built)."""
    if not cfg.questions:
        raise UsageError("no questions given (--questions FILE)")
    if not cfg.out:
        raise UsageError("no output directory given (--out DIR)")
    if not cfg.split or not cfg.eval_split:
        raise UsageError("split names must not be empty")
    if cfg.encode_mode not in ("padded", "variable"):
        raise UsageError(f"encode_mode must be 'padded' or 'variable', got {cfg.encode_mode!r}")


def _resumable(out: Path) -> bool:
    """Whether a failed build left work worth keeping (audio, teacher responses, features)."""
    from speechkeep.io import has_files

    return has_files(out / "audio", "*.wav") or (out / "teacher_cache.jsonl").is_file() or has_files(out / "features")


def _voice_pools(cfg: DataBuildConfig) -> tuple[list[str], list[str]]:
    from speechkeep.data.tts import VOICES, is_voice

    for name in [*cfg.voices, *cfg.eval_voices]:
        if not is_voice(name):
            raise UsageError(f"unknown voice {name!r}; valid voices: {', '.join(VOICES)}, or one of the extended pool "
                             "(espeak-x-..., piper-x-...)")
    both = sorted(set(cfg.voices) & set(cfg.eval_voices))
    if both:
        raise UsageError(f"voice(s) {', '.join(both)} given both as voices and as held-out eval voices")
    held = list(dict.fromkeys(cfg.eval_voices))
    pool = list(dict.fromkeys(cfg.voices)) or [v for v in VOICES if v not in held]
    if not pool:
        raise UsageError("no voices left for the non-evaluation items (every voice is held out)")
    if cfg.split_by_voice and not held:
        raise UsageError("split_by_voice needs held-out eval voices (--eval-voices)")
    return pool, held


def _plan(items, cfg: DataBuildConfig, out: Path) -> list[_Planned]:
    from speechkeep.data.tts import TTS_VERSION, assign_voice, get_voice

    pool, held = _voice_pools(cfg)
    plans = []
    for it in items:
        salt = f"{cfg.seed}:{it.id}" if cfg.seed else it.id
        stem = file_stem(it.id)
        if it.has_audio:
            voice = file_stem(it.voice) if it.voice else ORIGINAL_VOICE
            split = it.split or cfg.split
            if it.audio_bytes is not None:
                fp = "bytes:" + hashlib.sha1(it.audio_bytes).hexdigest()
            else:
                try:
                    st = os.stat(it.audio_path)
                    fp = f"file:{it.audio_path}:{st.st_size}:{st.st_mtime_ns}"
                except OSError:
                    fp = f"file:{it.audio_path}:missing"
        else:
            if it.split is not None:
                split = it.split
                voice = assign_voice(salt, held if split == cfg.eval_split and held else pool)
            elif cfg.split_by_voice:
                voice = assign_voice(salt, pool + held)
                split = cfg.eval_split if voice in held else cfg.split
            else:
                split = cfg.split
                voice = assign_voice(salt, held if split == cfg.eval_split and held else pool)
            params = json.dumps([it.text, voice, get_voice(voice).engine, get_voice(voice).params,
                                 cfg.deterministic_tts, cfg.seed, TTS_VERSION], sort_keys=True, ensure_ascii=False)
            fp = "tts:" + hashlib.sha1(params.encode("utf-8")).hexdigest()
        plans.append(_Planned(it, stem, voice, split, out / "audio" / voice / f"{stem}.wav", fp))
    return plans


def _import_audio(pl: _Planned) -> float:
    """Convert supplied audio to 16-kHz mono WAV at ``pl.path``; return its duration (DataError if bad)."""
    from speechkeep.audio import TARGET_SR, save_wav

    audio = _decode_supplied(pl)
    save_wav(pl.path, audio, TARGET_SR)
    return len(audio) / TARGET_SR


def _decode_supplied(pl: _Planned):
    """The supplied audio of ``pl`` as 16-kHz mono float32 (DataError if bad or too long)."""
    import soundfile as sf

    from speechkeep.audio import MAX_SECONDS, TARGET_SR, check_duration, load_audio, to_mono_16k

    it = pl.item
    if it.audio_bytes is not None:
        try:
            samples, sr = sf.read(io.BytesIO(it.audio_bytes), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
            raise DataError(f"cannot decode the audio: {e}") from None
        if samples.shape[0] == 0:
            raise DataError("the audio has zero length (no samples)")
        audio = to_mono_16k(samples, sr)
        src = "(in-memory audio)"
    else:
        audio = load_audio(it.audio_path)
        src = it.audio_path
    check_duration(audio, TARGET_SR, src, max_seconds=MAX_SECONDS)
    return audio


def _wav_seconds(path: Path) -> float:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:  # a file damaged after it was written
        raise DataError(f"cannot read audio file {path}: {e}") from None
    return info.frames / info.samplerate


def build_dataset(cfg: DataBuildConfig) -> BuildReport:
    """Run the whole pipeline (see the module docstring); return what was done.

    The options, the output directory (see :func:`speechkeep.io.output_dir`) and the questions are
    checked before anything is written."""
    from speechkeep.data.questions import read_questions

    _check_config(cfg)
    out = Path(cfg.out)
    from speechkeep.data.questions import resolve_question_sources

    guard = OutputDir(out, "data-build", overwrite=cfg.overwrite, inputs=resolve_question_sources(cfg.questions),
                      keep=_resumable)
    guard.check()
    _voice_pools(cfg)
    if cfg.teacher:  # a spec that does not resolve fails now, not after the TTS
        from speechkeep.models.llm import resolve_llm_dir

        resolve_llm_dir(cfg.teacher)
    if cfg.features:
        from speechkeep.models.speech_encoder import resolve_encoder_dir

        resolve_encoder_dir(cfg.speech_encoder)
    t_start = time.perf_counter()
    read = read_questions(cfg.questions, skip_bad=cfg.skip_bad)
    items = read.items[: cfg.limit] if cfg.limit else read.items
    plans = _plan(items, cfg, out)
    plans, bad_audio = _precheck_supplied_audio(plans, cfg)
    with guard:
        return _build_into(cfg, out, read, plans, bad_audio, t_start)


def _precheck_supplied_audio(plans: list[_Planned], cfg: DataBuildConfig) -> tuple[list[_Planned], list[dict]]:
    """Decode every supplied audio file not converted yet, before the output directory is created:
    a bad file fails the build (or, with skip_bad, is skipped) before anything is written."""
    kept, skipped = [], []
    for pl in plans:
        if pl.item.has_audio and not pl.path.exists():
            try:
                _decode_supplied(pl)
            except DataError as e:
                skipped.append(_bad_item(pl, str(e), cfg.skip_bad))
                continue
        kept.append(pl)
    return kept, skipped


def _bad_item(pl: _Planned, problem: str, skip_bad: bool) -> dict:
    """A bad item: a DataError naming its file and line, or (``skip_bad``) its record in skipped.jsonl."""
    msg = f"id {pl.item.id!r}: {problem}"
    if not skip_bad:
        raise DataError(f"{pl.item.where}: {msg}")
    return {"source": pl.item.source, "line": pl.item.line, "reason": msg}


def _build_into(cfg: DataBuildConfig, out: Path, read, plans: list[_Planned], bad_audio: list[dict],
                t_start: float) -> BuildReport:
    from speechkeep.audio import MAX_SECONDS, TARGET_SR
    from speechkeep.config import config_to_dict
    from speechkeep.data.manifest import MANIFEST_NAME, ManifestRow, write_manifest
    from speechkeep.data.tts import synthesize_many

    timings: dict[str, float] = {}
    counts: dict[str, int] = {}
    t = t_start

    # 1. questions (read and planned by the caller, before the output directory was created)
    skipped = [{"source": read.path, "line": n, "reason": r} for n, r in read.skipped] + bad_audio
    counts["questions_read"] = len(read.items)
    timings["read"] = time.perf_counter() - t

    # Audio written by an earlier run for other text/voice settings is stale: redo it.
    index_path = out / "audio" / "index.json"
    index: dict[str, str] = {}
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
        except (json.JSONDecodeError, OSError):
            index = {}
    for pl in plans:
        rel = pl.path.relative_to(out).as_posix()
        if pl.path.exists() and index.get(rel, pl.fingerprint) != pl.fingerprint:
            pl.path.unlink()

    # 2. supplied audio (checked before any slow stage, so bad files fail fast)
    t = time.perf_counter()
    counts["audio_imported"] = counts["audio_reused"] = 0
    kept: list[_Planned] = []
    for pl in plans:
        if not pl.item.has_audio:
            kept.append(pl)
            continue
        try:
            if pl.path.exists():
                pl.duration = _wav_seconds(pl.path)
                counts["audio_reused"] += 1
            else:
                pl.duration = _import_audio(pl)
                counts["audio_imported"] += 1
        except DataError as e:
            skipped.append(_bad_item(pl, str(e), cfg.skip_bad))
            continue
        kept.append(pl)
    plans = kept
    timings["import_audio"] = time.perf_counter() - t

    # 3. TTS (parallel, resumable)
    t = time.perf_counter()
    tts = [pl for pl in plans if not pl.item.has_audio]
    todo = sum(not pl.path.exists() for pl in tts)
    counts["tts_synthesized"] = todo
    counts["audio_reused"] += len(tts) - todo
    if tts:
        results = synthesize_many([(pl.stem, pl.item.text, pl.voice) for pl in tts], out / "audio",
                                  workers=cfg.workers, deterministic=cfg.deterministic_tts, progress=cfg.progress,
                                  seed=cfg.seed)
        for pl, (path, seconds) in zip(tts, results):
            pl.duration = seconds
    timings["tts"] = time.perf_counter() - t
    kept = []
    for pl in plans:
        if pl.duration > MAX_SECONDS:
            skipped.append(_bad_item(pl, f"the audio ({pl.path}) is {pl.duration:.2f} s long, longer than the "
                                         f"{MAX_SECONDS:g} s limit of the speech encoder; shorten the text or drop the item",
                                     cfg.skip_bad))
            continue
        if pl.duration <= 0:
            raise DataError(f"{pl.item.where}: id {pl.item.id!r}: the audio ({pl.path}) has zero length")
        kept.append(pl)
    plans = kept
    if not plans:
        raise DataError(f"{cfg.questions}: no usable items left (all {len(skipped)} were skipped)")
    write_json(index_path, {**index, **{pl.path.relative_to(out).as_posix(): pl.fingerprint for pl in plans}})

    # 4. teacher responses
    responses = [pl.item.response for pl in plans]
    if cfg.teacher:
        from speechkeep.data.teacher import generate_responses

        t = time.perf_counter()
        st: dict = {}
        responses = generate_responses(
            cfg.teacher, [pl.item.text for pl in plans], max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.teacher_batch_size, cache_path=out / "teacher_cache.jsonl",
            system_prompt=cfg.system_prompt, progress=cfg.progress, stats=st,
        )
        counts["teacher_generated"] = st["generated"]
        counts["teacher_cached"] = st["cached"]
        counts["teacher_new_tokens"] = st["new_tokens"]
        counts["teacher_truncated"] = st["truncated"]
        timings["teacher"] = time.perf_counter() - t

    # 5. encoder features (before the manifest: a finished manifest means a finished build)
    if cfg.features:
        from speechkeep.data.features import FeatureCache

        t = time.perf_counter()
        cache = FeatureCache(out / "features", cfg.speech_encoder, cfg.encode_mode, progress=cfg.progress)
        counts["features_computed"] = cache.ensure([pl.path for pl in plans])
        counts["features_cached"] = cache.stats.hits
        timings["features"] = time.perf_counter() - t

    # 6. manifest (atomic)
    rows = [
        ManifestRow(id=pl.item.id, text=pl.item.text, audio=str(pl.path.resolve()), sample_rate=TARGET_SR,
                    duration=round(pl.duration, 4), voice=pl.voice, answers=list(pl.item.answers),
                    response=resp, split=pl.split)
        for pl, resp in zip(plans, responses)
    ]
    manifest = write_manifest(out / MANIFEST_NAME, rows)
    skipped_path = out / "skipped.jsonl"
    if skipped:
        write_jsonl(skipped_path, skipped)
    elif skipped_path.exists():
        skipped_path.unlink()
    timings["total"] = time.perf_counter() - t_start

    counts.update(
        items=len(rows), skipped=len(skipped), audio_seconds=round(sum(r.duration for r in rows), 2),
        voices_used=len({r.voice for r in rows}),
    )
    write_json(out / "build_info.json", {
        "config": config_to_dict(cfg),
        "counts": counts,
        "splits": dict(Counter(r.split for r in rows)),
        "voices": dict(sorted(Counter(r.voice for r in rows).items())),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return BuildReport(out=out, manifest=manifest, rows=rows, counts=counts, timings=timings, skipped=skipped,
                       max_new_tokens=cfg.max_new_tokens)
