"""Where a parameter lives: its transformer block and module type; aggregates of importance scores."""

from __future__ import annotations

import re

import torch

MODULE_TYPES = ("q", "k", "v", "o", "gate", "up", "down", "norm", "embeddings", "adaptor", "other")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_PROJ = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
         "down_proj": "down"}


def layer_of(name: str) -> int | None:
    """Transformer block index of a parameter name (``...layers.7.mlp...`` -> 7), None outside blocks."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def module_type(name: str) -> str:
    """One of :data:`MODULE_TYPES`."""
    if name.startswith("adaptor."):
        return "adaptor"
    for key, t in _PROJ.items():
        if f".{key}." in f".{name}" or name.endswith(f"{key}.weight"):
            return t
    if "norm" in name:
        return "norm"
    if "embed" in name or "lm_head" in name:
        return "embeddings"
    return "other"


def summarize(scores: dict[str, torch.Tensor]) -> dict:
    """Totals per layer and per module type (sums of scores), plus parameter counts."""
    n_layers = 1 + max((layer_of(n) for n in scores if layer_of(n) is not None), default=-1)
    per_layer = [0.0] * n_layers
    per_layer_type = [{t: 0.0 for t in MODULE_TYPES[:8]} for _ in range(n_layers)]
    per_type = {t: 0.0 for t in MODULE_TYPES}
    counts = {t: 0 for t in MODULE_TYPES}
    for name, s in scores.items():
        total = float(s.double().sum())
        t = module_type(name)
        per_type[t] += total
        counts[t] += s.numel()
        li = layer_of(name)
        if li is not None and not name.startswith("adaptor."):
            per_layer[li] += total
            if t in per_layer_type[li]:
                per_layer_type[li][t] += total
    llm_total = sum(v for k, v in per_type.items() if k != "adaptor")
    return {"n_layers": n_layers, "per_layer": per_layer, "per_layer_type": per_layer_type, "per_type": per_type,
            "param_counts": counts, "llm_total": llm_total, "layer_total": sum(per_layer)}
