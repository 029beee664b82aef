"""Adaptation strategies: what trains, at which learning rate, and with which loss.

One strategy = one module in this package, registered under its name with :func:`register`:

- ``adaptor``  (:mod:`.adaptor`): LLM frozen, only the adaptor trains;
- ``full``     (:mod:`.full`): adaptor + every LLM weight (the seeds' Full-FT baseline);
- ``lora``     (:mod:`.lora`): adaptor + LoRA (peft) on all seven attention/MLP projections;
- ``layer_lr`` (:mod:`.layer_lr`): adaptor + all LLM weights, per-layer learning rate lowered where
  the pre-trained model's textual importance is high (seed 001 eq. 3);
- ``distill``  (:mod:`.distill`): a lora | full | adaptor student + KL to the pristine text LLM through
  text and speech (seed 002);
- ``ctc_align`` (:mod:`.ctc_align`): the speech-alignment objective (CTC of the adaptor's CTC head onto
  the frozen LLM's token embeddings; what ``speechkeep align`` trains).
- ``upscale``  (:mod:`.upscale`): LLM frozen, new Transformer or E-Branchformer blocks inserted into it
  and trained (multimodal depth up-scaling, seed 003);
- ``anchor``   (:mod:`.anchor`): a full | layer_lr student + an L2 pull toward the pre-trained weights
  weighted by their textual importance (EWC-style; beyond the seeds).

A new strategy is one new module with a :class:`Strategy`
subclass and its ``Settings`` dataclass, added to ``BUILTIN`` below (or registered by any imported
module); ``speechkeep train strategy=NAME NAME.key=value`` picks it. See :mod:`.base` for the hooks.
"""

from __future__ import annotations

from importlib import import_module

from speechkeep.strategies.base import (  # noqa: F401
    STRATEGIES, LossTerms, Strategy, get_strategy, register, strategy_settings, unregister,
)

BUILTIN = ("adaptor", "full", "lora", "layer_lr", "distill", "upscale", "ctc_align", "anchor")
"""The modules of this package that define strategies (importing them registers them)."""

for _m in BUILTIN:
    import_module(f"speechkeep.strategies.{_m}")
