"""Importance runs on disk, and the data they are computed from.

A run directory holds ``importance.safetensors`` (per-parameter fp32 scores), ``summary.json``
(per layer, per module type, meta) and ``summary.csv`` (one row per layer x module type).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_file

from speechkeep.errors import DataError, SpeechkeepError, UsageError
from speechkeep.importance.summary import MODULE_TYPES, summarize
from speechkeep.io import atomic_path, write_json
from speechkeep.models.speech_llm import Query, SpeechLLM

log = logging.getLogger(__name__)

FEW_QUERIES = 100
"""Below this many questions, a strategy's own importance pass warns: the top-3% set of SmolLM2's weights from 13
questions shared 53-56% with the ranking from 400 (two seeds of 13: 40% with each other), from 100 questions 79%."""

SCORES_NAME = "importance.safetensors"


def save_importance(out: str | Path, scores: dict[str, torch.Tensor], meta: dict) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(scores, meta.get("layer_origin"))
    summary["meta"] = meta
    summary["architecture"] = {n: list(t.shape) for n, t in scores.items()}
    with atomic_path(out / SCORES_NAME) as tmp:
        save_file({n: t.contiguous() for n, t in scores.items()}, str(tmp))
    write_json(out / "summary.json", summary)
    with atomic_path(out / "summary.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "share"] + list(MODULE_TYPES[:8]))
        total = summary["layer_total"] or 1.0
        for i, (tot, per) in enumerate(zip(summary["per_layer"], summary["per_layer_type"])):
            w.writerow([i, f"{tot / total:.6f}"] + [f"{per[t]:.6e}" for t in MODULE_TYPES[:8]])
        w.writerow([])
        w.writerow(["module_type", "total", "params"])
        for t in MODULE_TYPES:
            w.writerow([t, f"{summary['per_type'][t]:.6e}", summary["param_counts"][t]])
    return summary


def load_summary(run: str | Path) -> dict:
    """An importance run's summary.json (UsageError if ``run`` is not a run, DataError if it is damaged)."""
    p = Path(run) / "summary.json"
    if not Path(run).exists():
        raise UsageError(f"importance run {run}: no such directory")
    if not p.is_file():
        raise UsageError(f"{run} is not an importance run (no summary.json)")
    from speechkeep.io import read_json_object

    summary = read_json_object(p, "importance summary")
    need = ("n_layers", "per_layer")
    if any(k not in summary for k in need) or not isinstance(summary["per_layer"], list):
        raise DataError(f"{p}: not an importance summary (needs {', '.join(need)})")
    return summary


def load_scores(run: str | Path) -> dict[str, torch.Tensor]:
    """An importance run's per-parameter scores (UsageError if not a run, DataError if damaged)."""
    from speechkeep.models.persistence import read_safetensors

    p = Path(run) / SCORES_NAME
    if not Path(run).exists():
        raise UsageError(f"importance run {run}: no such directory")
    if not p.exists():
        raise UsageError(f"{run} is not an importance run (no {SCORES_NAME})")
    scores = read_safetensors(p, "importance scores")
    bad = [n for n, t in scores.items() if not torch.isfinite(t).all()]
    if bad:
        raise DataError(f"{p}: the scores of {bad[0]} are not finite")
    return scores


def queries_from_manifest(manifest: str, input: Literal["text", "speech"], model: SpeechLLM, fraction: float | None,
                          limit: int | None, split: str | None, seed: int = 0, features_dir: str | None = None,
                          exclude_split: str | None = None) -> list[Query]:
    """Queries with responses from a spoken manifest: a seeded random ``fraction`` of the rows (seed: 1/30)."""
    from speechkeep.data.manifest import read_manifest

    rows = read_manifest(manifest)
    if split is not None:
        rows = [r for r in rows if r.split == split]
    if exclude_split is not None:
        rows = [r for r in rows if r.split != exclude_split]
    if not rows:
        raise UsageError(f"{manifest}: no rows of split {split!r}")
    rows = [r for r in rows if r.response]
    if not rows:
        raise DataError(f"{manifest}: no rows with responses (build the data with --teacher)")
    if fraction is not None:
        n = max(1, int(round(len(rows) * fraction)))
        idx = np.sort(np.random.default_rng(seed).permutation(len(rows))[:n])
        rows = [rows[i] for i in idx]
    if limit is not None:
        rows = rows[:limit]
    if input == "text":
        return [Query(text=r.text, response=r.response) for r in rows]
    from speechkeep.data.features import FeatureCache

    root = features_dir or str(Path(manifest).parent / "features" if Path(manifest).is_file() else Path(manifest) / "features")
    # The dataset's features are read, never written: misses go to speechkeep's own cache.
    feats = FeatureCache(None, model.encoder, model.config.encode_mode, read_roots=[root]).get([r.audio for r in rows])
    return [Query(speech_features=f, response=r.response) for f, r in zip(feats, rows)]


def batched(queries: list[Query], batch_size: int) -> list[list[Query]]:
    """Length-sorted batches (less padding)."""
    def length(q: Query) -> int:
        return (len(q.text or "") // 4 if q.speech_features is None else q.speech_features.shape[0] // 5) + len(q.response or "") // 4

    order = sorted(range(len(queries)), key=lambda i: length(queries[i]))
    return [[queries[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]


def original_architecture(summary: dict) -> dict[str, list]:
    """The LLM parameters (name -> shape) of a summary, named as in the original LLM: an up-scaled model's
    blocks renumbered to their original index, its inserted blocks left out."""
    from speechkeep.importance.summary import original_name

    origin = summary.get("layer_origin")
    out = {}
    for n, shape in summary.get("architecture", {}).items():
        if n.startswith("adaptor."):
            continue
        o = original_name(n, origin)
        if o is not None:
            out[o] = shape
    return out


def check_same_architecture(a: dict, b: dict, names: tuple[str, str]) -> None:
    """Two importance summaries are comparable only for the same parameter names and shapes (of the
    original LLM: an up-scaled model's inserted blocks are left out, its blocks mapped to their original
    index)."""
    ta, tb = original_architecture(a), original_architecture(b)
    if a["n_layers"] != b["n_layers"] or {k: v for k, v in ta.items() if not k.startswith("adaptor.")} != \
            {k: v for k, v in tb.items() if not k.startswith("adaptor.")}:
        raise SpeechkeepError(
            f"importance runs {names[0]} ({a['n_layers']} layers, {len(ta)} tensors) and {names[1]} "
            f"({b['n_layers']} layers, {len(tb)} tensors) come from different architectures: they cannot be compared")


def pretrained_text_importance(model: SpeechLLM, importance: str | None, config, fraction: float,
                               batch_size: int) -> dict[str, torch.Tensor]:
    """The LLM's textual importance before a strategy trains it (what ``layer_lr``, ``anchor`` and
    ``lora.placement=importance`` are driven by): read from the ``importance`` run, or, when None,
    computed now on a seeded ``fraction`` of the training manifest with text input (seed 001: 1/30).
    ``config`` is the run's TrainConfig. LLM parameters only (plain LLM names)."""
    if importance:
        scores = load_scores(importance)
    else:
        from speechkeep.importance.taylor import compute_importance

        if not config.data.train:
            raise UsageError("the strategy needs the pre-trained LLM's textual importance: give an importance run "
                             "(<strategy>.importance=DIR) or a training manifest (data.train) to compute it from")
        queries = queries_from_manifest(config.data.train, "text", model, fraction, None, config.data.split,
                                        seed=config.seed)
        if len(queries) < FEW_QUERIES:
            log.warning("the textual importance that drives this strategy comes from %d questions (%.3g of %s): the "
                        "top-3%% set of SmolLM2's weights from 13 questions shared only about half of the one from 400 "
                        "(100 questions: 79%%); raise the strategy's fraction or give an importance run",
                        len(queries), fraction, config.data.train)
        scores = compute_importance(model, batched(queries, batch_size), include_adaptor=False).scores
    return {n: t for n, t in scores.items() if not n.startswith("adaptor.")}
