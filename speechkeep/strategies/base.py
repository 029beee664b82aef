"""The strategy interface and registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from speechkeep.errors import ConfigError

if TYPE_CHECKING:
    from speechkeep.models.speech_llm import Query, SpeechLLM
    from speechkeep.train.config import TrainConfig

STRATEGIES: dict[str, type["Strategy"]] = {}


def register(cls: type["Strategy"]) -> type["Strategy"]:
    """Class decorator: make a strategy available as ``strategy=<cls.name>``."""
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str, config: "TrainConfig") -> "Strategy":
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}'; available: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](config)


class Strategy:
    """Decides which parameters train (and how), and computes the training loss.

    Subclasses override :meth:`setup` (freeze/unfreeze/wrap the model and return optimizer parameter
    groups) and may override :meth:`loss` (e.g. to add distillation terms)."""

    name: str = ""
    description: str = ""
    llm_changed: bool = False
    """Whether training changes the LLM (then the final save includes it, as weights or adapters)."""

    def __init__(self, config: "TrainConfig"):
        self.config = config

    def adaptor_group(self, model: "SpeechLLM") -> dict[str, Any]:
        opt = self.config.optim
        for p in model.adaptor.parameters():
            p.requires_grad_(True)
        return {"name": "adaptor", "params": list(model.adaptor.parameters()),
                "lr": opt.adaptor_lr if opt.adaptor_lr is not None else opt.lr}

    def setup(self, model: "SpeechLLM") -> list[dict[str, Any]]:
        raise NotImplementedError

    def loss(self, model: "SpeechLLM", queries: Sequence["Query"]) -> tuple[torch.Tensor, int, dict[str, float]]:
        """(mean loss, number of target tokens, extra scalars to log)."""
        batch = model.prepare(queries)
        loss, n = model.loss(batch)
        return loss, n, {"input_tokens": int(batch.attention_mask.sum())}

    def export(self, model: "SpeechLLM") -> None:
        """Called before the final save (e.g. to merge LoRA)."""


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
