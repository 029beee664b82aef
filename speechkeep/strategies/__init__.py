"""Adaptation strategies: what trains, at which learning rate, and with which loss.

One strategy = one module in this package, registered under its name with :func:`register`:

- ``adaptor``  (:mod:`.adaptor`): LLM frozen, only the adaptor trains;
- ``full``     (:mod:`.full`): adaptor + every LLM weight (the seeds' Full-FT baseline);
- ``lora``     (:mod:`.lora`): adaptor + LoRA (peft) on all seven attention/MLP projections;
- ``layer_lr`` (:mod:`.layer_lr`): adaptor + all LLM weights, per-layer learning rate lowered where
  the pre-trained model's textual importance is high (seed 001 eq. 3).

A new strategy (importance-driven layer-wise LR, distillation, depth up-scaling) is a new module
with a :class:`Strategy` subclass; ``speechkeep train strategy=NAME`` picks it.
"""

from __future__ import annotations

from importlib import import_module

from speechkeep.strategies.base import STRATEGIES, Strategy, get_strategy, register  # noqa: F401

# Importing the modules registers their strategies.
for _m in ("adaptor", "full", "lora", "layer_lr"):
    import_module(f"speechkeep.strategies.{_m}")
