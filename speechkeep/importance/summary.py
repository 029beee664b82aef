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


def summarize(scores: dict[str, torch.Tensor], layer_origin: list[int | None] | None = None) -> dict:
    """Totals per layer and per module type (sums of scores), plus parameter counts.

    ``layer_origin`` (an up-scaled LLM's ``config.speechkeep_layer_origin``: per block, its index in the
    original LLM, None for an inserted block) maps blocks to their original index: ``per_layer`` then
    covers the original layers only (comparable with the base LLM's run) and the inserted blocks are
    reported separately in ``new_blocks`` (their position in the up-scaled stack, the original layer
    below them, their total); the module-type totals include them."""
    found = 1 + max((layer_of(n) for n in scores if layer_of(n) is not None), default=-1)
    origin = list(layer_origin) if layer_origin is not None else list(range(found))
    n_layers = sum(o is not None for o in origin)
    per_layer = [0.0] * n_layers
    per_layer_type = [{t: 0.0 for t in MODULE_TYPES[:8]} for _ in range(n_layers)]
    new_blocks = {i: 0.0 for i, o in enumerate(origin) if o is None}
    per_type = {t: 0.0 for t in MODULE_TYPES}
    counts = {t: 0 for t in MODULE_TYPES}
    for name, s in scores.items():
        total = float(s.double().sum())
        t = module_type(name)
        per_type[t] += total
        counts[t] += s.numel()
        li = layer_of(name)
        if li is not None and not name.startswith("adaptor."):
            if li >= len(origin):
                raise ValueError(f"{name}: block {li} beyond the {len(origin)} blocks of the layer map")
            oi = origin[li]
            if oi is None:
                new_blocks[li] += total
                continue
            per_layer[oi] += total
            if t in per_layer_type[oi]:
                per_layer_type[oi][t] += total
    llm_total = sum(v for k, v in per_type.items() if k != "adaptor")
    out = {"n_layers": n_layers, "per_layer": per_layer, "per_layer_type": per_layer_type, "per_type": per_type,
           "param_counts": counts, "llm_total": llm_total, "layer_total": sum(per_layer)}
    if layer_origin is not None:
        below = [max((o for o in origin[:i] if o is not None), default=-1) for i in range(len(origin))]
        out["layer_origin"] = origin
        out["new_blocks"] = [{"index": i, "after_layer": below[i], "total": v} for i, v in new_blocks.items()]
    return out


def original_name(name: str, layer_origin: list[int | None] | None) -> str | None:
    """A parameter's name in the original LLM (blocks renumbered to their original index); None for a
    parameter of an inserted block."""
    li = layer_of(name)
    if layer_origin is None or li is None:
        return name
    oi = layer_origin[li] if li < len(layer_origin) else li
    if oi is None:
        return None
    return _LAYER.sub(lambda m: m.group(0).replace(f"layers.{li}.", f"layers.{oi}."), name, count=1)
