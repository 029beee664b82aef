"""``layer_lr``: importance-driven layer-wise learning rates (seed 001 Sec. 3.1.1, eq. 3).

Every LLM weight trains (as in Full-FT), but transformer block i gets

    lr(i) = base_lr * (1 - lambda * (I_layer(i) - min I_layer) / (max I_layer - min I_layer))

where I_layer(i) is the sum of textual importance |g * theta| over block i, measured on the
pre-trained model with text input (read from an importance run, or computed at start on a seeded
1/30 of the training manifest). The most important block trains at (1 - lambda) * base_lr, the least
important at base_lr. Parameters outside the blocks (embeddings, final norm) use base_lr. One
optimizer group per block; the scheduler scales all groups by the same factor. On an up-scaled LLM
(``init_from`` a ``strategy=upscale`` model) blocks are mapped to their original index; the inserted
blocks have no pre-trained importance and train at base_lr.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from speechkeep.config import Checked, ranged
from speechkeep.models.upscaling import layer_origin
from speechkeep.strategies.base import Strategy, register

log = logging.getLogger(__name__)


@dataclass
class LayerLRSettings(Checked):
    """Importance-driven layer-wise learning rate (strategy=layer_lr)."""

    lam: float = ranged(0.4, ge=0, le=1)
    """lambda of eq. 3: the most important layer's rate is (1 - lam) * lr (seed: 0.4)."""
    importance: str | None = None
    """A `speechkeep importance` run of the pre-trained model with text input; None: compute it at start."""
    fraction: float = ranged(1 / 30, gt=0, le=1)
    """Share of the training manifest used when computing importance at start (seed: 1/30)."""
    batch_size: int = ranged(8, ge=1)
    """Batch size of that importance pass."""


def layer_scales(per_layer: list[float], lam: float) -> list[float]:
    lo, hi = min(per_layer), max(per_layer)
    if hi <= lo:
        return [1.0] * len(per_layer)
    return [1.0 - lam * (v - lo) / (hi - lo) for v in per_layer]


@register
class LayerLR(Strategy):
    name = "layer_lr"
    description = "adaptor + all LLM weights, per-layer lr lowered where textual importance is high (lambda 0.4)"
    Settings = LayerLRSettings
    llm_changed = True

    def check(self):
        if self.settings.importance:
            from speechkeep.importance.runs import load_summary

            load_summary(self.settings.importance)

    def inputs(self):
        return [self.settings.importance] if self.settings.importance else []

    def layer_importance(self, model) -> list[float]:
        """Per original layer of the LLM (an up-scaled LLM's inserted blocks are not among them)."""
        from speechkeep.importance.runs import load_summary, pretrained_text_importance
        from speechkeep.importance.summary import summarize

        s = self.settings
        if s.importance:
            summary = load_summary(s.importance)
        else:
            scores = pretrained_text_importance(model, None, self.config, s.fraction, s.batch_size)
            summary = summarize(scores, layer_origin(model.llm))
        origin = layer_origin(model.llm)
        n = model.llm.config.num_hidden_layers if origin is None else sum(o is not None for o in origin)
        if summary["n_layers"] != n:
            from speechkeep.errors import SpeechkeepError

            raise SpeechkeepError(f"importance run has {summary['n_layers']} layers, the model {n}: different architecture")
        return summary["per_layer"]

    def setup(self, model):
        from speechkeep.importance.summary import layer_of

        base = self.config.optim.lr
        scales = layer_scales(self.layer_importance(model), self.settings.lam)
        self.layer_lrs = [base * s for s in scales]
        groups = [self.adaptor_group(model)]
        origin = layer_origin(model.llm)
        per_layer: dict[int, list] = {}
        new_blocks: dict[int, list] = {}
        other = []
        for name, p in model.llm.named_parameters():
            p.requires_grad_(True)
            li = layer_of(name)
            if li is not None and origin is not None:
                if origin[li] is None:  # an inserted block of an up-scaled LLM: no pre-trained importance
                    new_blocks.setdefault(li, []).append(p)
                    continue
                li = origin[li]
            (per_layer.setdefault(li, []) if li is not None else other).append(p)
        for li in sorted(per_layer):
            groups.append({"name": f"layer{li}", "params": per_layer[li], "lr": self.layer_lrs[li]})
        for li in sorted(new_blocks):
            groups.append({"name": f"new_block{li}", "params": new_blocks[li], "lr": base})
        if other:
            groups.append({"name": "llm_other", "params": other, "lr": base})
        print("layer_lr: per-layer learning rates " + ", ".join(f"{i}:{lr:.2e}" for i, lr in enumerate(self.layer_lrs)))
        return groups
