"""``lora``: adaptor + LoRA (peft) on all seven attention/MLP projections (seed 001 Sec. 3.1.2).

peft's default targets for Llama are only q_proj and v_proj; the seed applies LoRA to every
attention and MLP projection, so all seven are listed. alpha defaults to 2r.

``lora.placement=importance`` (beyond the seeds) spends the same trainable-parameter budget unevenly:
block l gets rank r_l proportional to seed 001's eq. 3 scale 1 - lam * (I_l - min I) / (max I - min I)
of its pre-trained textual importance I_l (so the most text-important blocks get the least rank, none at
``placement_lam=1``), rounded by largest remainder so that sum_l r_l = n_layers * r: with blocks of equal
shapes the trainable count is exactly uniform LoRA's. alpha stays 2r (the scaling alpha / r_l grows where
the rank is small; peft's ``alpha_pattern`` could change that, we keep one alpha like the seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import re

import torch

from speechkeep.config import Checked, ranged
from speechkeep.models.transforms import Transform, register_transform
from speechkeep.strategies.base import Strategy, register

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings(Checked):
    """LoRA hyper-parameters (strategy=lora)."""

    r: int = ranged(8, ge=1)
    """Rank (seed: 8 for 1B, 16 for 8B; ablation 8/16/24)."""
    alpha: float | None = ranged(None, gt=0)
    """Scaling numerator; None means 2r (seed)."""
    dropout: float = ranged(0.0, ge=0, lt=1)
    """Dropout on the LoRA input. 0 by default: with dropout, peft copies every projection's input,
    which made a SmolLM2 training step 1.75x slower on CPU (7.2 s vs 4.1 s, batch 8)."""
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    """Module names LoRA wraps (default: all seven attention/MLP projections)."""
    merge_on_export: bool = False
    """Merge LoRA into the LLM weights before the final save (saves a plain transformers model)."""
    placement: Literal["uniform", "importance"] = "uniform"
    """'uniform': rank r in every block (the seed); 'importance': the same budget, more rank where the pre-trained
    textual importance is lowest (see the module doc)."""
    placement_lam: float = ranged(0.8, ge=0, le=1)
    """With placement=importance: lam of the eq. 3 scale (0: uniform; 1: the most important block gets no LoRA)."""
    importance: str | None = None
    """With placement=importance: a `speechkeep importance` run of the pre-trained LLM with text input; None: compute it at start."""
    importance_fraction: float = ranged(1 / 30, gt=0, le=1)
    """Share of the training manifest used when computing importance at start."""


def _apply_lora(llm, settings: dict):
    """The ``lora`` model transform: wrap the LLM with peft LoRA adapters (``settings``: LoraConfig keywords)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(llm, LoraConfig(**settings, bias="none", task_type="CAUSAL_LM"))


register_transform(Transform("lora", _apply_lora, owns=lambda key, settings: ".lora_" in key))


@register
class LoRA(Strategy):
    name = "lora"
    description = "adaptor + LoRA on q,k,v,o,gate,up,down (alpha = 2r)"
    Settings = LoraSettings
    llm_changed = True
    """The LLM trains (through its LoRA adapters, saved with the ``lora`` transform; its own weights stay frozen)."""

    def check(self):
        if self.settings.importance:
            from speechkeep.importance.runs import load_summary

            load_summary(self.settings.importance)

    def inputs(self):
        return [self.settings.importance] if self.settings.placement == "importance" and self.settings.importance else []

    def setup(self, model):
        s = self.settings
        for p in model.llm.parameters():
            p.requires_grad_(False)
        settings = {"r": s.r, "lora_alpha": s.alpha if s.alpha is not None else 2 * s.r,
                    "lora_dropout": s.dropout, "target_modules": list(s.target_modules)}
        if s.placement == "importance":
            settings.update(self.importance_placement(model))
        model.apply_transform("lora", settings)
        lora_params = [p for n, p in model.llm.named_parameters() if p.requires_grad]
        return [self.adaptor_group(model), {"name": "lora", "params": lora_params, "lr": self.config.optim.lr}]

    def importance_placement(self, model) -> dict:
        """``target_modules`` (full module names) and ``rank_pattern`` of the importance-guided placement."""
        from speechkeep.importance.runs import pretrained_text_importance
        from speechkeep.importance.summary import layer_of, summarize
        from speechkeep.models.upscaling import layer_origin
        from speechkeep.strategies.layer_lr import layer_scales

        s = self.settings
        if layer_origin(model.llm) is not None:
            from speechkeep.errors import ConfigError

            raise ConfigError("lora.placement=importance on an up-scaled LLM is not supported (its new blocks have no "
                              "pre-trained importance); use placement=uniform")
        scores = pretrained_text_importance(model, s.importance, self.config, s.importance_fraction, 8)
        ranks = importance_ranks(summarize(scores)["per_layer"], s.r, s.placement_lam, layer_scales)
        targets, pattern = [], {}
        for name, mod in model.llm.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in s.target_modules or not isinstance(mod, torch.nn.Linear):
                continue
            li = layer_of(name + ".weight")
            if li is None or ranks[li] == 0:
                continue
            targets.append(name)
            pattern[re.escape(name)] = ranks[li]  # peft matches rank_pattern keys as regular expressions
        print("lora: importance-guided ranks per block " + ", ".join(f"{i}:{r}" for i, r in enumerate(ranks)))
        self.ranks = ranks
        return {"target_modules": targets, "rank_pattern": pattern}

    def export(self, model):
        if self.settings.merge_on_export:
            model.llm = model.llm.merge_and_unload()
            model.transforms = [t for t in model.transforms if t["name"] != "lora"]
            model.llm_weights_changed = True


def importance_ranks(per_layer: list[float], r: int, lam: float, scales_fn) -> list[int]:
    """Integer ranks per block summing to len(per_layer) * r, proportional to ``scales_fn(per_layer, lam)``
    (largest-remainder rounding; ties to the earlier block)."""
    scales = scales_fn(per_layer, lam)
    total = len(per_layer) * r
    z = sum(scales)
    if z <= 0:
        return [r] * len(per_layer)
    exact = [total * x / z for x in scales]
    ranks = [int(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - ranks[i]), i))
    for i in order[: total - sum(ranks)]:
        ranks[i] += 1
    return ranks
