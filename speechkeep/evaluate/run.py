"""``speechkeep eval``: T2T / S2T accuracy, perplexity, ASR WER, the cascade, retention and the modality gap.

    speechkeep eval --model runs/lora --data data/wq_dev/manifest.jsonl --out runs/lora/eval
    speechkeep eval --model bundled:smollm2-135m --data webquestions:devtest --out runs/noft
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch

from speechkeep.config import Checked, ranged
from speechkeep.errors import DataError, SpeechkeepError, UsageError
from speechkeep.evaluate.answers import MATCHING_RULE, is_correct
from speechkeep.evaluate.progress import EvalProgress, Processes, digest, has_partial
from speechkeep.io import OutputDir, write_json, write_jsonl
from speechkeep.models.persistence import load_speech_llm
from speechkeep.models.speech_llm import Query, SpeechLLM

ALL_TASKS = ("t2t", "s2t", "ppl", "asr", "cascade")
TEXT_TASKS = ("t2t", "ppl")
NORMALIZER = "Whisper EnglishTextNormalizer (transformers), no British->American spelling map"


@dataclass
class EvalConfig(Checked):
    """One evaluation."""

    model: str = "bundled:smollm2-135m"
    """A training run directory, a saved SpeechLLM directory, or a plain LLM spec (text tasks only: the No-FT row)."""
    data: str = ""
    """A spoken manifest (manifest.jsonl or its directory) or WebQuestions-style JSON (text tasks only)."""
    out: str = "runs/eval"
    """Where predictions.jsonl and metrics.json go (and partial/ while it runs: a killed evaluation run again resumes from it)."""
    tasks: list[str] = field(default_factory=lambda: ["t2t", "s2t", "ppl"])
    """Any of t2t, s2t, ppl, asr, cascade."""
    split: str | None = None
    """Use only manifest rows of this split (e.g. 'eval')."""
    limit: int | None = ranged(None, ge=1)
    """Evaluate only the first N items."""
    max_new_tokens: int = ranged(48, ge=1)
    """Answer length limit for t2t, s2t and cascade."""
    batch_size: int = ranged(64, ge=1)
    """Generation / scoring batch size (items are batched in length order; on CPU, 64 is about 2x faster than 16: benchmarks/bench_eval.py)."""
    kv_cache: Literal["static", "dynamic"] = "static"
    """KV cache of generation: 'static' (preallocated for prompt + max_new_tokens: no per-step concatenation, about 15% faster on CPU, the same tokens) or 'dynamic' (grown step by step)."""
    baseline: str | None = None
    """metrics.json of a baseline (e.g. the No-FT model) to compute retention, drop and modality gap against."""
    asr_instruction: str = "Transcribe the audio."
    """Instruction after the speech for the asr task."""
    ctc_emit: str | None = None
    """For a CTC-aligned adaptor: override what the LLM reads per emitted token ('soft' posterior-weighted embeddings or 'hard' best-token embeddings); None keeps the model's."""
    asr_max_new_tokens: int = ranged(64, ge=1)
    """Transcript length limit (asr task and the cascade's Whisper)."""
    cascade_whisper: str | None = None
    """The cascade's Whisper (bundled:whisper-tiny.en, a Hugging Face id or a directory with the decoder and tokenizer); None: the model's speech encoder (for a plain LLM spec: bundled:whisper-tiny.en)."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not a previous `speechkeep eval` output."""


@dataclass
class EvalItem:
    id: str
    text: str
    answers: list[str]
    response: str | None
    audio: str | None


def load_eval_items(data: str, split: str | None, limit: int | None) -> tuple[list[EvalItem], bool]:
    """(items, has_audio)."""
    from speechkeep.data.questions import resolve_question_sources

    sources = resolve_question_sources(data)
    p = sources[0]
    if p.is_dir():
        p = p / "manifest.jsonl"
    if len(sources) == 1 and not p.exists():
        raise UsageError(f"evaluation data not found: {p}")
    if len(sources) == 1 and p.suffix == ".jsonl" and p.name.startswith("manifest"):
        from speechkeep.data.manifest import read_manifest

        rows = read_manifest(p)
        if split is not None:
            rows = [r for r in rows if r.split == split]
        items = [EvalItem(r.id, r.text, list(r.answers), r.response, r.audio) for r in rows]
        has_audio = True
    else:
        from speechkeep.data.questions import read_questions

        res = read_questions(p if len(sources) == 1 else data)
        items = [EvalItem(q.id, q.text, list(q.answers), q.response, None) for q in res.items]
        has_audio = False
    if limit is not None:
        items = items[:limit]
    if not items:
        raise UsageError(f"{p}: no items to evaluate (split={split!r})")
    return items, has_audio


def _batches(seq: Sequence, n: int):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _by_length(items: list, key) -> list[int]:
    return sorted(range(len(items)), key=lambda i: key(items[i]))


def _run_batches(task: str, batches: list[list[int]], n: int, compute, desc: str,
                 progress: EvalProgress | None, keys: Sequence[str] | None) -> list:
    """Outputs per index of ``compute`` over ``batches``: through ``progress`` (finished batches are
    reused, the rest computed and recorded, shared among processes) when given, else directly."""
    from tqdm.auto import tqdm

    out: list = [None] * n
    with tqdm(total=n, desc=desc, dynamic_ncols=True) as bar:
        if progress is None:
            for idx in batches:
                for i, v in zip(idx, compute(idx)):
                    out[i] = v
                bar.update(len(idx))
        else:
            if keys is None or len(keys) != n:
                raise ValueError(f"{task}: one key per query is needed to record progress")
            for i, v in progress.run(task, batches, keys, compute, on_batch=bar.update).items():
                out[i] = v
    return out


def generate_all(model: SpeechLLM, queries: list[Query], batch_size: int, max_new_tokens: int, desc: str,
                 progress: EvalProgress | None = None, keys: Sequence[str] | None = None,
                 kv_cache: str = "static") -> list[str]:
    """Batched greedy generation in length order (less padding); results in input order. ``kv_cache``:
    'static' (preallocated: no per-step concatenation, the same tokens, about 15% faster on CPU) or 'dynamic'.

    With ``progress`` (and ``keys``: what each query is), finished batches are recorded and reused
    (see :mod:`speechkeep.evaluate.progress`)."""
    batches = [list(b) for b in _batches(_by_length(queries, _query_length), batch_size)]
    return _run_batches(desc, batches, len(queries),
                        lambda idx: model.generate([queries[i] for i in idx], max_new_tokens=max_new_tokens,
                                                   **({"cache_implementation": "static"} if kv_cache == "static" else {})),
                        desc, progress, keys)


def _query_length(q: Query) -> int:
    return (len(q.text or "") if q.speech_features is None else q.speech_features.shape[0]) + len(q.response or "")


@torch.no_grad()
def perplexity(model: SpeechLLM, queries: list[Query], batch_size: int, progress: EvalProgress | None = None,
               keys: Sequence[str] | None = None, task: str = "ppl") -> float:
    """Token-weighted perplexity exp(sum NLL / number of target tokens), summed batch by batch (batches in
    length order: less padding)."""
    batches = [list(b) for b in _batches(_by_length(queries, _query_length), batch_size)]

    def compute(idx):  # the batch's (summed NLL, target tokens), on its first index
        loss, k = model.loss(model.prepare([queries[i] for i in idx]), reduction="sum")
        return [[float(loss), int(k)]] + [None] * (len(idx) - 1)

    if progress is not None:
        from tqdm.auto import tqdm

        with tqdm(total=len(queries), desc=task, dynamic_ncols=True) as bar:
            got = progress.run(task, batches, keys, compute, on_batch=bar.update)
        parts = [got[idx[0]] for idx in batches]
    else:
        parts = [compute(idx)[0] for idx in batches]
    total, n = 0.0, 0
    for loss, k in parts:
        total += loss
        n += k
    mean = total / n
    return math.exp(mean) if mean < 700 else float("inf")


def transcribe_whisper(encoder_spec: str, audio_paths: list[str], batch_size: int, max_new_tokens: int,
                       progress: EvalProgress | None = None, keys: Sequence[str] | None = None) -> list[str]:
    """Whisper's own transcripts (the cascade's first stage), in input order."""
    from speechkeep.audio import load_audio
    from speechkeep.models.speech_encoder import load_whisper_asr

    asr, proc = load_whisper_asr(encoder_spec)

    @torch.no_grad()
    def compute(idx):
        feats = proc([load_audio(audio_paths[i]) for i in idx], sampling_rate=16000, return_tensors="pt").input_features
        ids = asr.generate(feats, max_new_tokens=max_new_tokens)
        return [t.strip() for t in proc.batch_decode(ids, skip_special_tokens=True)]

    batches = [list(range(i, min(i + batch_size, len(audio_paths)))) for i in range(0, len(audio_paths), batch_size)]
    return _run_batches("cascade_asr", batches, len(audio_paths), compute, "cascade: whisper asr", progress, keys)


def _wer_ci(references: list[str], hypotheses: list[str]) -> list[float]:
    """95% bootstrap interval of the corpus WER (utterances resampled)."""
    from speechkeep.evaluate.stats import wer_ci
    from speechkeep.metrics import utterance_errors

    return list(wer_ci(utterance_errors(references, hypotheses)))


def _acc(flags: list[bool]) -> dict:
    from speechkeep.evaluate.stats import bootstrap_ci

    return {"accuracy": sum(flags) / len(flags), "correct": int(sum(flags)), "n": len(flags),
            "ci95": list(bootstrap_ci(flags))}


def finite_or_none(metrics: dict, path: str = "") -> list[str]:
    """Replace NaN/infinite numbers in ``metrics`` (nested) by None, in place; return their dotted keys.

    JSON has no NaN or infinity: metrics.json reports them as null, listed under ``non_finite``."""
    bad = []
    for k, v in list(metrics.items()):
        key = f"{path}{k}"
        if isinstance(v, dict):
            bad += finite_or_none(v, key + ".")
        elif isinstance(v, float) and not math.isfinite(v):
            metrics[k] = None
            bad.append(key)
    return bad


def _read_baseline(path: str) -> dict:
    base_path = Path(path)
    if base_path.is_dir():
        base_path = base_path / "metrics.json"
    if not base_path.is_file():
        raise UsageError(f"--baseline {path}: no metrics.json there")
    from speechkeep.io import read_json_object

    base = read_json_object(base_path, "metrics.json")
    for task in ("t2t", "s2t", "cascade"):
        acc = base.get(task, {}).get("accuracy") if isinstance(base.get(task), dict) else None
        if task in base and not isinstance(acc, (int, float)):
            raise DataError(f"{base_path}: '{task}' has no numeric accuracy")
    return base


def compare_to_baseline(metrics: dict, baseline: dict) -> dict:
    """Retention A/B, drop B-A (per task present in both) and the modality gap T2T-S2T."""
    out: dict = {"baseline_model": baseline.get("model")}
    for task in ("t2t", "s2t", "cascade"):
        if task in metrics and task in baseline and baseline[task].get("accuracy") is not None:
            a, b = metrics[task]["accuracy"], baseline[task]["accuracy"]
            out.setdefault("retention", {})[task] = a / b if b > 0 else None
            out.setdefault("drop", {})[task] = b - a
    return out


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluation; write predictions.jsonl and metrics.json; return the metrics.

    The options, the output directory, the data and the baseline are checked before the model is
    loaded; on an error nothing is left in ``out`` that this run created. Features missing from the
    data directory's own cache are computed into speechkeep's cache: the data directory is only read."""
    if not str(cfg.data).strip():
        raise UsageError("data: give the evaluation data (data=PATH or --data PATH): a spoken manifest or "
                         "WebQuestions-style JSON")
    tasks = list(dict.fromkeys(cfg.tasks))
    bad = [t for t in tasks if t not in ALL_TASKS]
    if bad:
        raise UsageError(f"unknown eval task '{bad[0]}'; valid: {', '.join(ALL_TASKS)}")
    if cfg.ctc_emit not in (None, "soft", "hard"):
        raise UsageError(f"ctc_emit must be 'soft' or 'hard', got {cfg.ctc_emit!r}")
    from speechkeep.models.persistence import check_model_spec

    # A killed run's finished batches (OUT/partial/) are kept, and reused by the next run.
    guard = OutputDir(cfg.out, "eval", overwrite=cfg.overwrite, inputs=[cfg.data, cfg.model, cfg.baseline],
                      keep=has_partial)
    guard.check()
    items, has_audio = load_eval_items(cfg.data, cfg.split, cfg.limit)
    baseline = _read_baseline(cfg.baseline) if cfg.baseline else None
    check_model_spec(cfg.model)
    if "cascade" in tasks and cfg.cascade_whisper:
        from speechkeep.models.speech_encoder import check_whisper_asr

        check_whisper_asr(cfg.cascade_whisper)
    procs = Processes()
    if procs.world > 1:  # the main process creates the directory, the others then join it
        if procs.main:
            guard.create()
        procs.barrier()
        if not procs.main:
            guard.create()
        try:
            return _evaluate(cfg, tasks, items, has_audio, baseline, procs)
        except BaseException:
            guard.cleanup_after_failure()
            raise
    with guard:
        return _evaluate(cfg, tasks, items, has_audio, baseline, procs)


def model_fingerprint(model: SpeechLLM) -> str:
    """A hash of every weight, buffer and the configuration of ``model`` (what its outputs depend on)."""
    from speechkeep.io import tensor_fingerprint

    state = model.state_dict()
    names = sorted(state)
    return digest(repr(model.config), repr(getattr(model, "transforms", None)), names,
                  tensor_fingerprint(state[n] for n in names))


def _cascade_whisper(cfg: EvalConfig, model) -> str:
    return cfg.cascade_whisper or model.config.speech_encoder


def _evaluate(cfg: EvalConfig, tasks: list[str], items: list[EvalItem], has_audio: bool, baseline: dict | None,
              procs: Processes | None = None) -> dict:
    procs = procs or Processes()
    model, speech_trained = load_speech_llm(cfg.model)
    model.eval()
    if cfg.ctc_emit is not None:
        if not getattr(model.adaptor, "is_ctc", False):
            raise SpeechkeepError(f"ctc_emit={cfg.ctc_emit!r} needs a CTC-aligned adaptor; {cfg.model} has none")
        model.adaptor.config.ctc_emit = cfg.ctc_emit
    # What every output depends on besides the queries: a resumed run reuses only batches computed with it.
    fp = digest(model_fingerprint(model), cfg.max_new_tokens, cfg.asr_max_new_tokens, cfg.asr_instruction,
                cfg.ctc_emit, _cascade_whisper(cfg, model) if "cascade" in tasks else "")
    progress = EvalProgress(cfg.out, fp, procs)
    skipped = {}
    for t in list(tasks):
        if t not in TEXT_TASKS and not has_audio:
            skipped[t] = "the data has no audio"
        elif t in ("s2t", "asr") and not speech_trained:
            skipped[t] = "a plain LLM spec has no trained speech adaptor"
    no_answers = [it.id for it in items if not it.answers]
    if no_answers:  # accuracy is over the items with reference answers; the others are reported, not scored
        for t in ("t2t", "s2t", "cascade"):
            if t in tasks and len(no_answers) == len(items):
                skipped[t] = "no item has reference answers"
    tasks = [t for t in tasks if t not in skipped]
    t0 = time.perf_counter()
    metrics: dict = {"model": cfg.model, "data": cfg.data, "split": cfg.split, "n": len(items),
                     "matching_rule": MATCHING_RULE, "normalizer": NORMALIZER, "max_new_tokens": cfg.max_new_tokens,
                     "decoding": "greedy"}
    preds: list[dict] = []
    feats = None
    if any(t in ("s2t", "asr") for t in tasks) or ("ppl" in tasks and has_audio and speech_trained):
        from speechkeep.data.features import FeatureCache

        root = Path(cfg.data) if Path(cfg.data).is_dir() else Path(cfg.data).parent
        cache = FeatureCache(None, model.encoder, model.config.encode_mode, read_roots=[root / "features"])
        feats = cache.get([it.audio for it in items])
    audio_keys = [digest(it.id, cache.content_hash(it.audio)) for it in items] if feats is not None else None
    text_keys = [digest(it.id, it.text) for it in items]

    def record(task, answers, questions=None):
        flags = []
        for k, (it, a) in enumerate(zip(items, answers)):
            ok = is_correct(a, it.answers) if it.answers else None
            if ok is not None:
                flags.append(ok)
            row = {"task": task, "id": it.id, "question": it.text, "response": a, "references": it.answers, "correct": ok}
            if questions is not None:
                row["transcript"] = questions[k]
            preds.append(row)
        return _acc(flags)

    task_seconds: dict[str, float] = {}
    mark = [time.perf_counter()]

    def timed(task: str) -> None:  # the seconds since the previous task ended (features included in the first)
        now = time.perf_counter()
        task_seconds[task] = round(now - mark[0], 1)
        mark[0] = now

    if "t2t" in tasks:
        ans = generate_all(model, [Query(text=it.text) for it in items], cfg.batch_size, cfg.max_new_tokens, "t2t",
                           progress, text_keys, cfg.kv_cache)
        metrics["t2t"] = record("t2t", ans)
        timed("t2t")
    if "s2t" in tasks:
        ans = generate_all(model, [Query(speech_features=f) for f in feats], cfg.batch_size, cfg.max_new_tokens, "s2t",
                           progress, audio_keys, cfg.kv_cache)
        metrics["s2t"] = record("s2t", ans)
        timed("s2t")
    if "cascade" in tasks:
        from speechkeep.io import file_sha256

        wav_keys = [digest(it.id, file_sha256(it.audio)) for it in items]
        transcripts = transcribe_whisper(_cascade_whisper(cfg, model), [it.audio for it in items], cfg.batch_size,
                                         cfg.asr_max_new_tokens, progress, wav_keys)
        from speechkeep.metrics import corpus_wer

        ans = generate_all(model, [Query(text=t) for t in transcripts], cfg.batch_size, cfg.max_new_tokens, "cascade",
                           progress, [digest(it.id, t) for it, t in zip(items, transcripts)], cfg.kv_cache)
        metrics["cascade"] = record("cascade", ans, transcripts)
        metrics["cascade"]["asr_wer"] = corpus_wer([it.text for it in items], transcripts)
        metrics["cascade"]["asr_wer_ci95"] = _wer_ci([it.text for it in items], transcripts)
        metrics["cascade"]["whisper"] = _cascade_whisper(cfg, model)
        timed("cascade")
    if "asr" in tasks:
        from speechkeep.metrics import corpus_wer

        hyps = generate_all(model, [Query(speech_features=f, instruction=cfg.asr_instruction) for f in feats],
                            cfg.batch_size, cfg.asr_max_new_tokens, "asr", progress, audio_keys, cfg.kv_cache)
        for it, h in zip(items, hyps):
            preds.append({"task": "asr", "id": it.id, "reference": it.text, "hypothesis": h})
        metrics["asr"] = {"wer": corpus_wer([it.text for it in items], hyps),
                          "ci95": _wer_ci([it.text for it in items], hyps), "n": len(items),
                          "instruction": cfg.asr_instruction}
        if getattr(model.adaptor, "is_ctc", False):  # the aligned front-end's own transcript
            ctc_hyps = model.ctc_transcribe(feats)
            for it, h in zip(items, ctc_hyps):
                preds.append({"task": "asr_ctc", "id": it.id, "reference": it.text, "hypothesis": h})
            metrics["asr"]["ctc_wer"] = corpus_wer([it.text for it in items], ctc_hyps)
            metrics["asr"]["ctc_wer_ci95"] = _wer_ci([it.text for it in items], ctc_hyps)
        timed("asr")
    if "ppl" in tasks:
        scored = [it for it in items if it.response]
        if not scored:
            skipped["ppl"] = "no reference responses (build the data with --teacher)"
        else:
            metrics["ppl"] = {"n": len(scored),
                              "text": perplexity(model, [Query(text=it.text, response=it.response) for it in scored],
                                                 cfg.batch_size, progress,
                                                 [digest(it.id, it.text, it.response) for it in scored], "ppl_text")}
            if feats is not None:
                fmap = {it.id: f for it, f in zip(items, feats)}
                kmap = dict(zip((it.id for it in items), audio_keys))
                metrics["ppl"]["speech"] = perplexity(
                    model, [Query(speech_features=fmap[it.id], response=it.response) for it in scored], cfg.batch_size,
                    progress, [digest(kmap[it.id], it.response) for it in scored], "ppl_speech")
        timed("ppl")
    if no_answers:
        metrics["without_answers"] = {"n": len(no_answers), "ids": no_answers[:50],
                                      "note": "not scored for accuracy (no reference answers)"}
    if "t2t" in metrics and "s2t" in metrics:
        metrics["modality_gap"] = metrics["t2t"]["accuracy"] - metrics["s2t"]["accuracy"]
    if baseline is not None:
        metrics["vs_baseline"] = compare_to_baseline(metrics, baseline)
    if skipped:
        metrics["skipped"] = skipped
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    metrics["seconds_per_task"] = task_seconds
    metrics["batch_size"] = cfg.batch_size
    non_finite = finite_or_none(metrics)
    if non_finite:
        metrics["non_finite"] = {"keys": non_finite, "note": "NaN or infinite (e.g. a perplexity that overflows): "
                                                             "written as null"}
    import sys

    if procs.world > 1:
        print(f"eval: process {procs.rank} of {procs.world} computed {progress.computed} batches", file=sys.stderr)
    if progress.reused:

        print(f"eval: resumed: {progress.reused} batches finished by an interrupted run were reused, "
              f"{progress.computed} computed", file=sys.stderr)
    out = Path(cfg.out)
    if procs.main:
        write_jsonl(out / "predictions.jsonl", preds)
        write_json(out / "metrics.json", metrics)
    procs.barrier()
    if procs.main:
        progress.remove()
    return metrics
