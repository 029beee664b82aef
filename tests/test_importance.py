"""Parameter importance on tiny random models: conventions, aggregates, deactivation, shift, heatmaps, layer_lr."""

import json

import pytest
import torch

from speechkeep.errors import SpeechkeepError
from speechkeep.importance.deactivate import deactivated, selection_masks
from speechkeep.importance.distribution import compare_runs, shift_metrics
from speechkeep.importance.heatmaps import (block_means, concentration, low_rank_energy, parameter_change_report,
                                            rank_clustering_score, top_mask)
from speechkeep.importance.runs import save_importance
from speechkeep.importance.summary import layer_of, module_type, summarize
from speechkeep.importance.taylor import compute_importance
from speechkeep.models.speech_llm import Query

QA = [("What is the capital of France?", "Paris."), ("Who wrote Hamlet?", "Shakespeare wrote it."),
      ("Name a color.", "Blue is a color."), ("What is two plus two?", "Four.")]


@pytest.fixture(scope="module")
def model(tiny_speech_llm_factory):
    return tiny_speech_llm_factory()


def batches():
    qs = [Query(text=q, response=r) for q, r in QA]
    return [qs[:2], qs[2:]]


def manual_grads(model, bs, total):
    out = []
    for b in bs:
        model.zero_grad(set_to_none=True)
        for p in model.llm.parameters():
            p.requires_grad_(True)
        loss, _ = model.loss(model.prepare(b), reduction="sum")
        (loss / total).backward()
        out.append({n: p.grad.clone() for n, p in model.llm.named_parameters()})
        for p in model.llm.parameters():
            p.grad = None
            p.requires_grad_(False)
    return out


def test_conventions_match_their_definitions(model):
    bs = batches()
    total = sum(len(model.chat.response_ids(q.response)) for b in bs for q in b)
    grads = manual_grads(model, bs, total)
    params = dict(model.llm.named_parameters())
    abs_sum = compute_importance(model, bs, "abs_sum", progress=False)
    signed = compute_importance(model, bs, "signed_sum", progress=False)
    name = "model.layers.1.mlp.down_proj.weight"
    torch.testing.assert_close(abs_sum.scores[name], sum((g[name] * params[name]).abs() for g in grads))
    torch.testing.assert_close(signed.scores[name], (params[name] * sum(g[name] for g in grads)).abs())
    assert (abs_sum.scores[name] >= signed.scores[name] - 1e-9).all()  # triangle inequality
    assert abs_sum.scores[name].dtype == torch.float32
    assert any(n.startswith("adaptor.") for n in abs_sum.scores) is True
    assert abs_sum.meta["response_tokens"] == total
    # the model is left as it was: frozen LLM, no gradients
    assert not any(p.requires_grad for p in model.llm.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_taylor_tracks_the_true_loss_change_of_one_parameter(model):
    qs = [Query(text=q, response=r) for q, r in QA]
    res = compute_importance(model, [qs], "signed_sum", include_adaptor=False, progress=False)
    name = "model.layers.0.self_attn.q_proj.weight"
    p = dict(model.llm.named_parameters())[name]
    idx = torch.topk(res.scores[name].flatten(), 1).indices[0]
    with torch.no_grad():
        base, n = model.loss(model.prepare(qs))
        old = p.view(-1)[idx].item()
        p.view(-1)[idx] = 0
        new, _ = model.loss(model.prepare(qs))
        p.view(-1)[idx] = old
    assert float((new - base).abs()) == pytest.approx(float(res.scores[name].flatten()[idx]), rel=0.5)


def test_bad_data_is_a_clear_error(model):
    with pytest.raises(SpeechkeepError, match="non-empty dataset"):
        compute_importance(model, [], progress=False)
    with pytest.raises(SpeechkeepError, match="every label is masked"):
        compute_importance(model, [[Query(text="hi")]], progress=False)


def test_names_and_aggregates():
    assert layer_of("model.layers.12.mlp.up_proj.weight") == 12 and layer_of("model.norm.weight") is None
    assert module_type("model.layers.3.self_attn.k_proj.weight") == "k"
    assert module_type("model.layers.3.input_layernorm.weight") == "norm"
    assert module_type("model.embed_tokens.weight") == "embeddings"
    assert module_type("adaptor.proj.0.weight") == "adaptor"
    s = summarize({"model.layers.0.mlp.up_proj.weight": torch.ones(2, 2), "model.layers.1.self_attn.q_proj.weight": torch.full((2, 2), 2.0),
                   "model.embed_tokens.weight": torch.ones(3), "adaptor.proj.0.weight": torch.ones(5)})
    assert s["per_layer"] == [4.0, 8.0] and s["per_type"]["embeddings"] == 3.0 and s["per_type"]["adaptor"] == 5.0
    assert s["llm_total"] == 15.0


def test_selection_and_restore(model):
    scores = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(i))
              for i, (n, p) in enumerate(model.llm.named_parameters())}
    total = sum(s.numel() for s in scores.values())
    for which in ("top", "bottom", "random"):
        for scope in ("global", "per_matrix"):
            masks = selection_masks(scores, 0.03, which, scope)
            assert sum(int(m.sum()) for m in masks.values()) == pytest.approx(0.03 * total, rel=0.05)
    top = selection_masks(scores, 0.03, "top")
    bottom = selection_masks(scores, 0.03, "bottom")
    n = "model.layers.0.mlp.up_proj.weight"
    assert scores[n][top[n]].min() > scores[n][bottom[n]].max()
    params = dict(model.llm.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    with deactivated(params, top):
        assert (params[n][top[n]] == 0).all()
    for k, v in params.items():
        assert torch.equal(v, before[k])


def test_shift_metrics_and_architecture_check(tmp_path):
    a = {"model.layers.0.mlp.up_proj.weight": torch.ones(4), "model.layers.1.mlp.up_proj.weight": torch.full((4,), 3.0)}
    b = {"model.layers.0.mlp.up_proj.weight": torch.full((4,), 3.0), "model.layers.1.mlp.up_proj.weight": torch.ones(4)}
    sa, sb = save_importance(tmp_path / "a", a, {}), save_importance(tmp_path / "b", b, {})
    same = shift_metrics(sa, sa)
    assert same["js_divergence"] == pytest.approx(0) and same["spearman"] == pytest.approx(1)
    m = shift_metrics(sa, sb)
    assert m["js_divergence"] > 0.1 and m["spearman"] == pytest.approx(-1) and m["peak_shift"] == -1
    assert m["magnitude_ratio"] == pytest.approx(1)
    res = compare_runs([str(tmp_path / "a"), str(tmp_path / "b")], ["before", "after"], str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 1000 and res["shift"]["after"]["peak_layer_after"] == 0
    save_importance(tmp_path / "c", {"model.layers.0.mlp.up_proj.weight": torch.ones(4)}, {})
    with pytest.raises(SpeechkeepError, match="different architectures"):
        compare_runs([str(tmp_path / "a"), str(tmp_path / "c")])


def test_rank_clustering_score_separates_structure_from_noise():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(100, 80, generator=g)
    w[[3, 17, 42], :] += 5  # three important rows
    s = rank_clustering_score(w)
    assert s["rows"] > 8 and s["rows_random"] < 3 and s["cols"] < 3
    noise = rank_clustering_score(torch.rand(100, 80, generator=g))
    assert noise["rows"] < 3.5
    assert concentration(top_mask(w), dim=1) == pytest.approx(s["rows"])


def test_heatmaps_draw_block_means_so_every_entry_counts(tmp_path):
    g = torch.Generator().manual_seed(0)
    m = torch.rand(576, 1536, generator=g).numpy() * 0.01
    m[300, :] = 1.0  # one changed row: nearest-pixel drawing of 576 rows in ~300 pixels may drop it
    shown = block_means(m, 128)
    assert shown.shape == (128, 128)
    assert float(shown.mean()) == pytest.approx(float(m.mean()), rel=0.05)  # every entry counts (576 rows: blocks of 4-5 overlap)
    row = int(shown.max(axis=1).argmax())
    assert row == int(300 * 128 / 576) and shown[row].min() > 10 * shown[:row - 1].max()
    assert block_means(m[:50, :60], 128).shape == (50, 60)  # small matrices are drawn cell by cell

    before = {"w": torch.rand(576, 1536, generator=g)}
    after = {"w": before["w"] + 0.01 * torch.randn(576, 1536, generator=g)}
    res = parameter_change_report(before, after, ["w"], tmp_path / "change.png")
    assert res["w"]["max_abs_change"] > 0 and (tmp_path / "change.png").stat().st_size < 300_000


def test_low_rank_energy():
    u, v = torch.randn(30, 1), torch.randn(1, 20)
    assert low_rank_energy(u @ v, k=1) == pytest.approx(1.0)
    assert low_rank_energy(torch.randn(30, 20), k=1) < 0.5


def test_layer_lr_groups_follow_eq3(tiny_speech_llm_factory, tmp_path):
    from speechkeep.config import load_config
    from speechkeep.strategies import get_strategy
    from speechkeep.train.config import TrainConfig

    m = tiny_speech_llm_factory()
    scores = {n: torch.full(p.shape, 1.0 if "layers.0." in n else 3.0) for n, p in m.llm.named_parameters()}
    save_importance(tmp_path / "imp", scores, {})
    per_layer = json.loads((tmp_path / "imp" / "summary.json").read_text())["per_layer"]
    assert per_layer[1] > per_layer[0]
    cfg = load_config(TrainConfig, None, ["strategy=layer_lr", "optim.lr=1e-3", f"layer_lr.importance={tmp_path / 'imp'}"])
    groups = {g["name"]: g for g in get_strategy("layer_lr", cfg).setup(m)}
    assert groups["layer0"]["lr"] == pytest.approx(1e-3)        # least important: base lr
    assert groups["layer1"]["lr"] == pytest.approx(0.6e-3)      # most important: (1 - 0.4) * base
    assert groups["llm_other"]["lr"] == pytest.approx(1e-3)
    assert all(p.requires_grad for p in m.llm.parameters())
    n_group = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n_group == sum(p.numel() for p in m.parameters() if p.requires_grad)
