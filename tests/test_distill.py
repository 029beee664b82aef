"""strategy=distill: the divergences, the pristine teacher, the matching of response positions."""

import math

import numpy as np
import pytest
import torch

from speechkeep.models.speech_llm import Query
from speechkeep.strategies import get_strategy
from speechkeep.strategies.distill import distill_divergence
from speechkeep.train.loop import make_optimizer
from test_train import ROWS, cfg_for, fake_features


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_divergences_match_a_hand_computed_example():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 2.0, 0.0]])
    for T in (1.0, 2.0):
        ps, pt = _softmax(s[0].numpy() / T), _softmax(t[0].numpy() / T)
        fwd = float(np.sum(pt * np.log(pt / ps)))
        rev = float(np.sum(ps * np.log(ps / pt)))
        m = 0.5 * (ps + pt)
        jsd = float(0.5 * np.sum(pt * np.log(pt / m)) + 0.5 * np.sum(ps * np.log(ps / m)))
        for kind, want in (("forward", fwd), ("reverse", rev), ("jsd", jsd)):
            got = distill_divergence(s, t, kind, T, t2_scale=False)
            assert float(got) == pytest.approx(want, rel=1e-5), (kind, T)
            scaled = distill_divergence(s, t, kind, T, t2_scale=True)
            assert float(scaled) == pytest.approx(want * T * T, rel=1e-5), (kind, T)
    assert fwd != pytest.approx(rev)  # the example tells forward from reverse
    assert float(distill_divergence(s, s, "forward", 2.0)) == pytest.approx(0.0, abs=1e-7)
    assert 0 < jsd < math.log(2)


def _setup(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path, student, **over):
    cfg = cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path, strategy="distill", **{"distill.student": student,
                                                                                    "lora.r": 4, **over})
    from speechkeep.models.adaptor import AdaptorConfig

    model = tiny_speech_llm_factory(adaptor=AdaptorConfig(hidden_size=32))
    strategy = get_strategy("distill", cfg)
    groups = strategy.setup(model)
    opt = make_optimizer([{"params": g["params"], "lr": 3e-2} for g in groups], cfg)
    return model, strategy, opt


def _queries(rows):
    feats = fake_features([r.audio for r in rows])
    return [Query(speech_features=f, transcript=r.text, response=r.response, task="qa") for r, f in zip(rows, feats)]


def _step(model, strategy, opt, queries):
    model.train()
    terms = strategy.loss(model, queries)
    terms.total().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return terms


def test_lora_student_starts_at_the_teacher_and_leaves_it_pristine(tiny_speech_llm_factory, tiny_llm_dir,
                                                                   tiny_whisper_dir, tmp_path):
    model, strategy, opt = _setup(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path, "lora")
    queries = _queries(ROWS[:4])
    text = [Query(text=q.transcript, response=q.response) for q in queries]
    teacher_before = strategy.teacher_response_logits(model, text).logits.clone()
    first = strategy.loss(model, queries)
    assert set(first.terms) == {"ce", "kl_t2t", "kl_s2t"}
    assert float(first.terms["kl_t2t"]) == 0.0  # LoRA B = 0: the student reading text is the teacher
    assert float(first.terms["kl_s2t"]) > 0       # reading speech it is not
    for _ in range(3):
        _step(model, strategy, opt, queries)
    after = strategy.loss(model, queries)
    assert float(after.terms["kl_t2t"]) > 0
    torch.testing.assert_close(strategy.teacher_response_logits(model, text).logits, teacher_before, rtol=0, atol=0)


def test_full_student_keeps_a_frozen_teacher_copy(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path):
    model, strategy, opt = _setup(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path, "full")
    queries = _queries(ROWS[:4])
    text = [Query(text=q.transcript, response=q.response) for q in queries]
    teacher = strategy.frozen_modules()["teacher_llm"]
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not ({id(p) for p in teacher.parameters()} & {id(p) for p in model.llm.parameters()})
    before = strategy.teacher_response_logits(model, text).logits.clone()
    for _ in range(2):
        _step(model, strategy, opt, queries)
    torch.testing.assert_close(strategy.teacher_response_logits(model, text).logits, before, rtol=0, atol=0)
    assert float(strategy.loss(model, queries).terms["kl_t2t"]) > 0


def test_response_positions_are_matched_token_for_token(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir,
                                                        tmp_path):
    """Spoken prompts are longer than text prompts: kl_s2t compares exactly the response tokens of both."""
    model, strategy, _ = _setup(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path, "adaptor",
                                **{"distill.kl": "forward"})
    model.eval()
    queries = _queries(ROWS[:3])
    speech_batch = model.prepare(queries)
    text_queries = [Query(text=q.transcript, response=q.response) for q in queries]
    text_batch = model.prepare(text_queries)
    assert speech_batch.inputs_embeds.shape[1] != text_batch.inputs_embeds.shape[1]
    with torch.no_grad():
        s = model.response_logits(speech_batch)
        t = model.response_logits(text_batch)
        want = distill_divergence(s.logits, t.logits, "forward", 2.0, True)
        # an off-by-one on either side changes the value
        shifted = distill_divergence(s.logits[1:], t.logits[:-1], "forward", 2.0, True)
        terms = strategy.loss(model, queries)
    assert torch.equal(s.targets, t.targets) and torch.equal(s.rows, t.rows) and s.n > len(queries)
    assert float(terms.terms["kl_s2t"]) == pytest.approx(float(want), rel=1e-6)
    assert float(shifted) != pytest.approx(float(want), rel=1e-3)
    # responses that differ cannot be matched: a clear error, never a silent misalignment
    other = [Query(text=q.transcript, response=q.response + " extra words") for q in queries]
    with pytest.raises(Exception, match="cannot be matched"):
        strategy._kl(s, strategy.teacher_response_logits(model, other))


def test_settings_are_checked(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    from speechkeep.errors import ConfigError

    for bad in ({"distill.weights": "{ce: 1, kl_x: 1}"}, {"distill.weights": "{ce: 0, kl_t2t: 0, kl_s2t: 0}"}):
        cfg = cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path, strategy="distill", **bad)
        with pytest.raises(ConfigError):
            get_strategy("distill", cfg).check()
    with pytest.raises(ConfigError):
        cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path, strategy="distill", **{"distill.temperature": 0})
