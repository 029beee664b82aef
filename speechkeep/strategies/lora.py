"""``lora``: adaptor + LoRA (peft) on all seven attention/MLP projections (seed 001 Sec. 3.1.2).

peft's default targets for Llama are only q_proj and v_proj; the seed applies LoRA to every
attention and MLP projection, so all seven are listed. alpha defaults to 2r.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def setup(self, model):
        s = self.settings
        for p in model.llm.parameters():
            p.requires_grad_(False)
        model.apply_transform("lora", {"r": s.r, "lora_alpha": s.alpha if s.alpha is not None else 2 * s.r,
                                       "lora_dropout": s.dropout, "target_modules": list(s.target_modules)})
        lora_params = [p for n, p in model.llm.named_parameters() if p.requires_grad]
        return [self.adaptor_group(model), {"name": "lora", "params": lora_params, "lr": self.config.optim.lr}]

    def export(self, model):
        if self.settings.merge_on_export:
            model.llm = model.llm.merge_and_unload()
            model.transforms = [t for t in model.transforms if t["name"] != "lora"]
            model.llm_weights_changed = True
