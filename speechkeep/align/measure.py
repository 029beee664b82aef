"""The measurements of issue 16 for an aligned front-end, against its acceptance bars.

On two held-out sets, both spoken by a voice the front-end never heard (``piper-joe-high`` by default):

1. the clean WebQuestions pool (``webquestions:clean`` = ``heldout`` + ``devtest``, 1,205 questions):
   the front-end's greedy-CTC transcript WER and Whisper's (the cascade's transcripts) on the same audio,
   spoken-QA accuracy (S2T, the LLM reading the aligned speech) and the cascade's (Whisper transcript ->
   the LLM), with 95% bootstrap intervals and a paired McNemar test of S2T vs cascade;
2. the general held-out text set (``heldout.jsonl`` of ``speechkeep data text``): both transcript WERs,
   and the words of the set the front-end's CTC vocabulary cannot write at all (with its fallback).

Bars (the issue's acceptance): S2T >= 80% of the cascade on the clean pool, front-end WER <= 15% there,
<= 25% on the general set, no unwritable word. Writes ``<out>/measure.json`` and ``<out>/MEASURE.md``;
the spoken sets and the per-item transcripts stay in ``<out>`` (a re-run reuses the audio and features).

``python benchmarks/measure_frontend.py --model bundled:smollm2-135m+whisper-tiny.en --general runs/text/heldout.jsonl --out runs/measure_old``
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from speechkeep.config import Checked, ranged

BARS = {"s2t_vs_cascade": 0.80, "clean_ctc_wer": 0.15, "general_ctc_wer": 0.25, "unwritable_words": 0}
"""The acceptance bars of issue 16."""


@dataclass
class MeasureConfig(Checked):
    """Options of the front-end measurement."""

    model: str = "bundled:smollm2-135m+whisper-tiny.en"
    """The aligned front-end: a shipped spec, a saved SpeechLLM or a training run (a CTC adaptor)."""
    general: str | None = None
    """The general held-out text set (JSONL {id, text}: heldout.jsonl of `speechkeep data text`); None: only the clean pool."""
    questions: str = "webquestions:clean"
    """Held-out questions with answers (never in any corpus)."""
    out: str = "runs/measure"
    """Output directory: clean/ and general/ spoken sets, measure.json, MEASURE.md, transcripts.jsonl."""
    voice: str = "piper-joe-high"
    """The unseen voice both sets are spoken by."""
    limit: int | None = ranged(None, ge=1)
    """Only the first N items of each set (None: all)."""
    qa: bool = True
    """Also measure S2T and the cascade on the clean pool (LLM generation: the slow part)."""
    max_new_tokens: int = ranged(48, ge=1)
    """Answer length limit (greedy)."""
    batch_size: int = ranged(16, ge=1)
    """Generation batch size."""
    whisper_max_new_tokens: int = ranged(64, ge=1)
    """Transcript length limit of Whisper (the cascade's first stage)."""
    whisper: str | None = None
    """The Whisper whose transcripts of the same audio the front-end's are compared with (a complete Whisper: decoder and tokenizer); None: the model's speech encoder."""
    ctc_emit: Literal["soft", "hard"] | None = None
    """What the LLM reads for S2T: 'soft' (posterior-weighted token embeddings), 'hard' (the greedy CTC tokens'
    embeddings, as if it read the transcript) or None (the model's own setting)."""
    workers: int = ranged(2, ge=1)
    """TTS worker processes."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not an earlier measurement's."""


def adaptor_fingerprint(state: dict) -> str:
    """A hash of an adaptor's weights (names sorted, floating tensors in float32, so an fp16 export of the same
    weights is told apart from them only by the rounding): which adaptor a measure.json measured."""
    from speechkeep.io import tensor_fingerprint

    names = sorted(state)
    return tensor_fingerprint([state[k].float() if state[k].is_floating_point() else state[k] for k in names])


def _spoken(questions: str, out: Path, cfg: MeasureConfig, encoder: str) -> Path:
    from speechkeep.data.build import DataBuildConfig, build_dataset

    if (out / "manifest.jsonl").is_file():
        return out / "manifest.jsonl"
    rep = build_dataset(DataBuildConfig(questions=questions, out=str(out), limit=cfg.limit, voices=[cfg.voice],
                                        split="eval", features=True, speech_encoder=encoder, encode_mode="variable",
                                        workers=cfg.workers, progress=False))
    return rep.manifest


def measure_frontend(cfg: MeasureConfig) -> dict:
    """Run every measurement; returns (and writes) measure.json's content. The output directory is checked
    first (never the current directory, a repository, an input; another command's output needs overwrite);
    on a failure the spoken sets are kept (a re-run reuses them)."""
    from speechkeep.io import OutputDir, has_files

    guard = OutputDir(cfg.out, "measure", overwrite=cfg.overwrite, key="out", keep=has_files,
                      inputs=[cfg.general] if cfg.general else [])
    guard.check()
    with guard:
        return _measure(cfg)


def _measure(cfg: MeasureConfig) -> dict:
    import torch

    from speechkeep.data.features import FeatureCache
    from speechkeep.data.manifest import read_manifest
    from speechkeep.evaluate.run import _wer_ci, transcribe_whisper
    from speechkeep.evaluate.stats import paired_difference
    from speechkeep.io import atomic_path, write_json, write_jsonl
    from speechkeep.metrics import corpus_wer
    from speechkeep.models.builder import build_speech_llm
    from speechkeep.models.ctc_vocab import coverage

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model, trained = build_speech_llm(init_from=cfg.model)
    if not getattr(model.adaptor, "is_ctc", False):
        from speechkeep.errors import UsageError

        raise UsageError(f"model {cfg.model}: not an aligned front-end (its adaptor has no CTC output)")
    model.eval()
    if cfg.ctc_emit is not None:
        model.adaptor.config.ctc_emit = cfg.ctc_emit
    enc = model.config.speech_encoder
    sets = {"clean": cfg.questions}
    if cfg.general:
        sets["general"] = cfg.general
    res: dict = {"model": cfg.model, "voice": cfg.voice, "ctc_vocab_size": int(model.adaptor.ctc_vocab.numel()),
                 "ctc_emit": model.adaptor.config.ctc_emit,
                 "adaptor_fingerprint": adaptor_fingerprint(model.adaptor.state_dict()),
                 "options": {k: getattr(cfg, k) for k in ("questions", "general", "limit", "qa", "max_new_tokens", "whisper")},
                 "adaptor": {k: getattr(model.adaptor.config, k) for k in ("arch", "hidden_size", "stack_frames")}}
    rows_out = []
    for name, src in sets.items():
        manifest = _spoken(src, out / name, cfg, enc)
        rows = read_manifest(manifest)
        refs = [r.text for r in rows]
        cache = FeatureCache(None, model.encoder, model.config.encode_mode, read_roots=[out / name / "features"],
                             progress=False)
        feats = cache.get([r.audio for r in rows])
        with torch.no_grad():
            ctc = model.ctc_transcribe(feats)
        whisper = transcribe_whisper(cfg.whisper or enc, [r.audio for r in rows], cfg.batch_size,
                                     cfg.whisper_max_new_tokens)
        r = {"n": len(rows), "ctc_wer": corpus_wer(refs, ctc), "ctc_wer_ci95": _wer_ci(refs, ctc),
             "whisper_wer": corpus_wer(refs, whisper), "whisper_wer_ci95": _wer_ci(refs, whisper)}
        cov = coverage(model.tokenizer, model.adaptor.ctc_vocab.tolist(), refs)
        r["token_coverage"] = round(cov.token_coverage, 5)
        r["unwritable_words"] = cov.unwritable_words
        rows_out += [{"set": name, "id": row.id, "reference": ref, "ctc": c, "whisper": w}
                     for row, ref, c, w in zip(rows, refs, ctc, whisper)]
        if name == "clean" and cfg.qa:
            from speechkeep.evaluate.answers import is_correct
            from speechkeep.evaluate.run import generate_all
            from speechkeep.models.speech_llm import Query

            answers = {row.id: row.answers for row in rows}
            s2t = generate_all(model, [Query(speech_features=f) for f in feats], cfg.batch_size, cfg.max_new_tokens, "s2t")
            cas = generate_all(model, [Query(text=t) for t in whisper], cfg.batch_size, cfg.max_new_tokens, "cascade")
            ok_s = [is_correct(a, answers[row.id]) for row, a in zip(rows, s2t)]
            ok_c = [is_correct(a, answers[row.id]) for row, a in zip(rows, cas)]
            pd = paired_difference(ok_s, ok_c)
            r["s2t_accuracy"] = sum(ok_s) / len(ok_s)
            r["cascade_accuracy"] = sum(ok_c) / len(ok_c)
            r["s2t_vs_cascade"] = r["s2t_accuracy"] / r["cascade_accuracy"] if r["cascade_accuracy"] else None
            r["s2t_minus_cascade"] = pd.to_dict()
            for row, a, b in zip(rows_out[-len(rows):], s2t, cas):
                row.update({"s2t": a, "cascade": b})
        res[name] = r
    bars = {"clean_ctc_wer": res["clean"]["ctc_wer"] <= BARS["clean_ctc_wer"]}
    if "s2t_vs_cascade" in res["clean"] and res["clean"]["s2t_vs_cascade"] is not None:
        bars["s2t_vs_cascade"] = res["clean"]["s2t_vs_cascade"] >= BARS["s2t_vs_cascade"]
    if "general" in res:
        bars["general_ctc_wer"] = res["general"]["ctc_wer"] <= BARS["general_ctc_wer"]
        bars["unwritable_words"] = len(res["general"]["unwritable_words"]) <= BARS["unwritable_words"]
    res["bars"] = {k: {"passed": v, "bar": BARS[k]} for k, v in bars.items()}
    res["all_passed"] = all(bars.values()) and len(bars) == len(BARS)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    write_jsonl(out / "transcripts.jsonl", rows_out)
    write_json(out / "measure.json", res)
    with atomic_path(out / "MEASURE.md") as tmp:
        tmp.write_text(render(res), encoding="utf-8")
    return res


def render(res: dict) -> str:
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    ci = lambda c: f" [{100 * c[0]:.1f}, {100 * c[1]:.1f}]" if c else ""  # noqa: E731
    lines = [f"# Front-end measurement: `{res['model']}`", "",
             f"Unseen voice `{res['voice']}`; greedy; WER after Whisper's English normalizer; CTC vocabulary "
             f"{res['ctc_vocab_size']:,} tokens; adaptor {res['adaptor']}; S2T reads `ctc_emit={res.get('ctc_emit', 'soft')}`.", "",
             "| set | n | front-end WER [95% CI] | Whisper tiny.en WER | S2T acc | cascade acc | S2T / cascade | token coverage | unwritable words |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("clean", "general"):
        if name not in res:
            continue
        r = res[name]
        lines.append(f"| {name} | {r['n']} | {pct(r['ctc_wer'])}{ci(r.get('ctc_wer_ci95'))} | {pct(r['whisper_wer'])} | "
                     f"{pct(r.get('s2t_accuracy'))} | {pct(r.get('cascade_accuracy'))} | {pct(r.get('s2t_vs_cascade'))} | "
                     f"{pct(r['token_coverage'])} | {len(r['unwritable_words'])} |")
    lines += ["", "| bar | value | passed |", "| --- | --- | --- |"]
    for k, v in res["bars"].items():
        lines.append(f"| {k} {'>=' if k == 's2t_vs_cascade' else '<='} {v['bar']} | "
                     f"{json.dumps(_value(res, k))} | {'yes' if v['passed'] else 'NO'} |")
    lines += ["", f"All bars passed: {'yes' if res['all_passed'] else 'no'} ({res['seconds']} s)."]
    return "\n".join(lines) + "\n"


def _value(res: dict, k: str):
    if k == "s2t_vs_cascade":
        return round(res["clean"][k], 4)
    if k == "clean_ctc_wer":
        return round(res["clean"]["ctc_wer"], 4)
    if k == "general_ctc_wer":
        return round(res["general"]["ctc_wer"], 4)
    return len(res["general"]["unwritable_words"])
