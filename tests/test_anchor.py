"""strategy=anchor: the importance-weighted pull toward the pre-trained weights (tiny random models)."""

import pytest
import torch

from speechkeep.config import load_config
from speechkeep.importance.runs import save_importance
from speechkeep.strategies import get_strategy
from speechkeep.strategies.anchor import AnchorPenalty
from speechkeep.train.config import TrainConfig
from speechkeep.train.loop import train
from test_train import ROWS, cfg_for, fake_features


@pytest.fixture(scope="module")
def importance_run(tiny_speech_llm_factory, tmp_path_factory):
    """Positive per-parameter scores, larger in layer 1 (random, seeded)."""
    m = tiny_speech_llm_factory()
    g = torch.Generator().manual_seed(0)
    scores = {n: torch.rand(p.shape, generator=g) * (4.0 if "layers.1." in n else 1.0) for n, p in m.llm.named_parameters()}
    out = tmp_path_factory.mktemp("anchor_imp")
    save_importance(out, scores, {})
    return out, scores


def _strategy(importance, **settings):
    ov = ["strategy=anchor", "optim.lr=1e-3", f"anchor.importance={importance}"] + [f"anchor.{k}={v}" for k, v in settings.items()]
    return get_strategy("anchor", load_config(TrainConfig, None, ov))


def test_penalty_is_zero_at_start_and_its_gradient_matches_finite_differences(tiny_speech_llm_factory, importance_run):
    path, scores = importance_run
    m = tiny_speech_llm_factory()
    s = _strategy(path, strength=3.0)
    s.setup(m)
    assert float(s.penalty(m).detach()) == 0.0
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.llm.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    params = dict(m.llm.named_parameters())
    pen = s.penalty(m)
    grads = torch.autograd.grad(pen, [params[n] for n in s.names])
    # the definition, through plain autograd
    z = sum(float((scores[n] * s.anchors[i] ** 2).sum()) for i, n in enumerate(s.names))
    ref = 3.0 / z * sum((scores[n] * (params[n] - s.anchors[i]) ** 2).sum() for i, n in enumerate(s.names))
    torch.testing.assert_close(pen, ref.float(), rtol=1e-5, atol=0)
    ref_grads = torch.autograd.grad(ref, [params[n] for n in s.names])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-9)
    # central finite differences on a few entries (exact for a quadratic up to rounding)
    name = "model.layers.1.mlp.up_proj.weight"
    k = s.names.index(name)
    p = params[name]
    for idx in [(0, 0), (3, 5), (10, 7)]:
        eps = 0.5  # central differences of a quadratic are exact for any step; a large one beats fp32 rounding
        with torch.no_grad():
            p[idx] += eps
            up = float(s.penalty(m))
            p[idx] -= 2 * eps
            down = float(s.penalty(m))
            p[idx] += eps
        assert (up - down) / (2 * eps) == pytest.approx(float(grads[k][idx]), rel=2e-2, abs=1e-9)


def test_penalty_is_scale_free():
    p = [torch.randn(5, 4, requires_grad=True)]
    p0, w = [p[0].detach() + 0.1 * torch.randn(5, 4)], [torch.rand(5, 4)]

    def pen(scale_w, scale_p):
        ws, a = [w[0] * scale_w], [p0[0] * scale_p]
        z = float((ws[0] * a[0] ** 2).sum())
        return float(AnchorPenalty.apply(1.0 / z, a, ws, p[0] * scale_p))

    assert pen(1, 1) == pytest.approx(pen(1000, 1), rel=1e-5) == pytest.approx(pen(1, 7), rel=1e-4)


def test_strength_zero_is_full_fine_tuning(tiny_llm_dir, tiny_whisper_dir, importance_run, tmp_path):
    path, _ = importance_run
    full = train(cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path / "full", strategy="full", max_steps=3),
                 rows=ROWS, features=fake_features, progress=False)
    anc = train(cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path / "anc", strategy="anchor", max_steps=3,
                        **{"anchor.strength": 0, "anchor.importance": path}), rows=ROWS, features=fake_features, progress=False)
    assert anc.final_loss == full.final_loss
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "anc" / "model" / "llm" / "model.safetensors"))
    b = load_file(str(tmp_path / "full" / "model" / "llm" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_anchor_keeps_important_weights_closer_than_full(tiny_llm_dir, tiny_whisper_dir, importance_run, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    path, scores = importance_run
    pre = dict(AutoModelForCausalLM.from_pretrained(tiny_llm_dir).named_parameters())

    def weighted_change(run):
        w = load_file(str(run / "model" / "llm" / "model.safetensors"))
        return sum(float((scores[n] * (w[n] - pre[n].detach()) ** 2).sum()) for n in scores if n in w)

    train(cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path / "full", strategy="full"), rows=ROWS, features=fake_features,
          progress=False)
    train(cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path / "anc", strategy="anchor",
                  **{"anchor.strength": 1e4, "anchor.importance": path}), rows=ROWS, features=fake_features, progress=False)
    assert weighted_change(tmp_path / "anc") < 0.5 * weighted_change(tmp_path / "full")
    import csv

    rows = list(csv.DictReader(open(tmp_path / "anc" / "metrics.csv")))
    assert "term_anchor" in rows[0] and float(rows[-1]["term_anchor"]) > 0  # logged, and it grew from 0


def test_layer_lr_student_gets_per_layer_rates_from_the_same_importance(tiny_speech_llm_factory, importance_run):
    path, _ = importance_run
    m = tiny_speech_llm_factory()
    s = _strategy(path, student="layer_lr")
    groups = {g["name"]: g for g in s.setup(m)}
    assert groups["layer1"]["lr"] == pytest.approx(0.6e-3) and groups["layer0"]["lr"] == pytest.approx(1e-3)
    assert float(s.penalty(m).detach()) == 0.0
