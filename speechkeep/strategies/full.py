"""``full``: adaptor + every LLM weight train (the seeds' Full-FT baseline)."""

from __future__ import annotations

from speechkeep.strategies.base import Strategy, register


@register
class FullFineTune(Strategy):
    name = "full"
    description = "adaptor + all LLM weights (Full-FT baseline)"
    llm_changed = True

    def setup(self, model):
        params = []
        for p in model.llm.parameters():
            p.requires_grad_(True)
            params.append(p)
        # Tied input/output embeddings appear once in parameters(); nothing to deduplicate.
        return [self.adaptor_group(model), {"name": "llm", "params": params, "lr": self.config.optim.lr}]
