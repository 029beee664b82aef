"""``upscale``: multimodal depth up-scaling (seed 003, "Adapting Text LLMs to Speech via Multimodal Depth Up-Scaling", 2026).

The whole text LLM is frozen; new blocks are inserted into its layer stack and only they (and the
adaptor) train. A new block is either a copy of its neighbour decoder layer with ``o_proj`` and
``down_proj`` zeroed (``upscale.block=transformer``, LLaMA-Pro) or a causal E-Branchformer block
(``upscale.block=ebranchformer``, :mod:`speechkeep.models.blocks.ebranchformer`); both start as the
identity, so right after insertion the model computes exactly the base LLM's logits. The insertion is
the recorded model transform ``upscale`` (:mod:`speechkeep.models.upscaling`): a saved model stores
only the new blocks' weights and re-inserts them on load.

With ``upscale.speech_only=true`` the new blocks change only speech positions: text input gives the
base LLM's outputs exactly (text retention 100% by construction).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from speechkeep.config import Checked, ranged
from speechkeep.models.transforms import Transform, register_transform
from speechkeep.models.upscaling import (
    default_count, insertion_points, layer_origin, owns, upscale as _upscale,
)
from speechkeep.strategies.base import Strategy, register
from speechkeep.strategies.lora import ALL_PROJECTIONS

log = logging.getLogger(__name__)


@dataclass
class UpscaleSettings(Checked):
    """Multimodal depth up-scaling (strategy=upscale)."""

    block: Literal["transformer", "ebranchformer"] = "transformer"
    """New block type: 'transformer' (a copy of the neighbour layer, o_proj/down_proj zeroed: LLaMA-Pro) or
    'ebranchformer' (causal E-Branchformer: macaron FFNs, the LLM's attention + a cgMLP branch, merged)."""
    count: int | None = ranged(None, ge=1)
    """Number of new blocks; None: 25% of the LLM's depth, rounded half up (SmolLM2-135M: 30 layers -> 8)."""
    placement: Literal["interleaved", "top", "bottom", "middle", "sandwich"] = "interleaved"
    """Where they go: 'interleaved' (one after every depth/count layers, the last on top), 'top' (above the
    last layer), 'bottom' (below the first), 'middle' (after layer depth/2 - 1), 'sandwich' (half below, half above)."""
    speech_only: bool = False
    """New blocks update only speech positions; text positions pass through unchanged (text input = the base LLM)."""
    cgmlp_units: int | None = ranged(None, ge=2)
    """E-Branchformer cgMLP width before the gating split (even); None: the LLM's intermediate_size."""
    kernel_size: int = ranged(31, ge=1)
    """E-Branchformer cgMLP depthwise (causal) convolution kernel (paper: 31)."""
    merge_kernel_size: int = ranged(3, ge=1)
    """E-Branchformer merge depthwise (causal) convolution kernel (paper: 3)."""
    lr: float | None = ranged(None, gt=0)
    """Learning rate of the new blocks; None: optim.lr."""


def _apply(llm, settings: dict):
    return _upscale(llm, settings)


register_transform(Transform("upscale", _apply, owns=owns))


def lora_params(llm, r: int) -> int:
    """What LoRA of rank r on the seven projections of every original block would train (for comparison)."""
    import torch

    n = 0
    for name, mod in llm.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ALL_PROJECTIONS and ".block." not in name:
            n += r * (mod.in_features + mod.out_features)
    return n


@register
class Upscale(Strategy):
    name = "upscale"
    description = "LLM frozen; new blocks (transformer | ebranchformer) inserted and trained with the adaptor"
    Settings = UpscaleSettings
    llm_changed = True
    """The LLM's computation changes (through the new blocks, saved with the ``upscale`` transform; its own weights stay frozen)."""

    def check(self):
        s = self.settings
        if s.cgmlp_units is not None and s.cgmlp_units % 2:
            from speechkeep.errors import ConfigError

            raise ConfigError(f"upscale.cgmlp_units={s.cgmlp_units}: must be even (split into value and gate halves)")

    def transform_settings(self, n_layers: int) -> dict:
        s = self.settings
        count = s.count if s.count is not None else default_count(n_layers)
        out = {"block": s.block, "after": insertion_points(n_layers, count, s.placement), "speech_only": s.speech_only}
        if s.block == "ebranchformer":
            out.update({"cgmlp_units": s.cgmlp_units, "kernel_size": s.kernel_size,
                        "merge_kernel_size": s.merge_kernel_size})
        return out

    def setup(self, model):
        for p in model.llm.parameters():
            p.requires_grad_(False)
        if layer_origin(model.llm) is None:
            n = model.llm.config.num_hidden_layers
            settings = self.transform_settings(n)
            model.apply_transform("upscale", settings)
        else:  # init_from an up-scaled model: train its blocks
            settings = next((t["settings"] for t in reversed(model.transforms) if t["name"] == "upscale"), {})
            asked = self.transform_settings(sum(o is not None for o in layer_origin(model.llm)))
            differ = {k: (settings.get(k), v) for k, v in asked.items() if k in settings and settings[k] != v}
            print("upscale: the model is already up-scaled; training its new blocks")
            if differ:
                log.warning("upscale: init_from is already up-scaled (%s); these upscale.* settings are ignored: %s",
                            ", ".join(f"{k}={settings[k]}" for k in ("block", "after", "speech_only") if k in settings),
                            "; ".join(f"{k}: the model's {a}, asked {b}" for k, (a, b) in differ.items()))
        block = settings.get("block", self.settings.block)
        origin = layer_origin(model.llm)
        layers = model.llm.get_decoder().layers
        new = [p for i, o in enumerate(origin) if o is None for p in layers[i].parameters()]
        for p in new:
            p.requires_grad_(True)
        n_new = sum(p.numel() for p in new)
        print(f"upscale: {origin.count(None)} new {block} blocks at {[i for i, o in enumerate(origin) if o is None]} "
              f"of {len(origin)}: {n_new:,} trainable LLM parameters (LoRA r=8 would train {lora_params(model.llm, 8):,}, "
              f"r=16 {lora_params(model.llm, 16):,})")
        lr = self.settings.lr if self.settings.lr is not None else self.config.optim.lr
        return [self.adaptor_group(model), {"name": "upscale", "params": new, "lr": lr}]
