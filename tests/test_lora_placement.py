"""lora.placement=importance: the same trainable budget as uniform LoRA, more rank where textual
importance is lowest (tiny random models)."""

import pytest
import torch

from speechkeep.config import load_config
from speechkeep.importance.runs import save_importance
from speechkeep.strategies import get_strategy
from speechkeep.strategies.layer_lr import layer_scales
from speechkeep.strategies.lora import importance_ranks
from speechkeep.train.config import TrainConfig


def test_importance_ranks_keep_the_budget_and_favour_unimportant_blocks():
    per_layer = [5.0, 1.0, 3.0, 9.0, 2.0, 7.0]
    for r in (1, 4, 8, 16, 24):
        for lam in (0.0, 0.4, 0.8, 1.0):
            ranks = importance_ranks(per_layer, r, lam, layer_scales)
            assert sum(ranks) == len(per_layer) * r and min(ranks) >= 0
            if lam == 0:
                assert ranks == [r] * len(per_layer)
            # less important block -> at least as much rank (up to rounding by one)
            order = sorted(range(len(per_layer)), key=lambda i: per_layer[i])
            assert all(ranks[order[k]] >= ranks[order[k + 1]] - 1 for k in range(len(order) - 1))
    assert importance_ranks(per_layer, 8, 1.0, layer_scales)[3] == 0  # the most important block: no LoRA at lam 1


@pytest.mark.parametrize("lam", [0.8, 1.0])
def test_placement_trains_as_many_parameters_as_uniform_lora(lam, tiny_speech_llm_factory, tmp_path):
    m = tiny_speech_llm_factory()
    scores = {n: torch.full(p.shape, 1.0 if "layers.0." in n else 3.0) for n, p in m.llm.named_parameters()}
    save_importance(tmp_path / "imp", scores, {})

    def lora_count(**kw):
        model = tiny_speech_llm_factory()
        ov = ["strategy=lora", "lora.r=4"] + [f"lora.{k}={v}" for k, v in kw.items()]
        s = get_strategy("lora", load_config(TrainConfig, None, ov))
        s.setup(model)
        per_layer = {}
        for n, p in model.llm.named_parameters():
            if "lora_A" in n and p.requires_grad:
                li = int(n.split("layers.")[1].split(".")[0])
                per_layer.setdefault(li, set()).add(p.shape[0])
        return sum(p.numel() for n, p in model.llm.named_parameters() if p.requires_grad), per_layer, s

    uniform, ranks_u, _ = lora_count()
    guided, ranks_g, s = lora_count(placement="importance", placement_lam=lam, importance=tmp_path / "imp")
    assert guided == uniform
    assert ranks_u == {0: {4}, 1: {4}}
    assert s.ranks[0] > s.ranks[1] and sum(s.ranks) == 8  # layer 1 is the more important one
    assert ranks_g == ({0: {8}} if lam == 1.0 else {0: {7}, 1: {1}})
