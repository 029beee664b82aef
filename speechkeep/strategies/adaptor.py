"""``adaptor``: the LLM stays frozen; only the adaptor trains (text ability untouched by construction)."""

from __future__ import annotations

from speechkeep.strategies.base import Strategy, register


@register
class AdaptorOnly(Strategy):
    """The smallest strategy: no settings, the default loss, nothing to export."""

    name = "adaptor"
    description = "LLM frozen, only the adaptor trains"

    def setup(self, model):
        for p in model.llm.parameters():
            p.requires_grad_(False)
        return [self.adaptor_group(model)]
