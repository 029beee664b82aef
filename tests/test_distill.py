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


# ---------------------------------------------------------------------- the fast step (issue 14)
@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize("t2", [True, False])
def test_fused_divergences_equal_the_reference_in_value_and_gradient(kind, t2, monkeypatch):
    import speechkeep.strategies.distill as d

    monkeypatch.setattr(d, "_CHUNK_FLOATS", 3 * 11)  # 3 rows per chunk: the chunking is exercised
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(10, 11, generator=g) * 3
    students = [torch.randn(10, 11, generator=g, requires_grad=True) for _ in range(2)]
    ref = [distill_divergence(s, teacher, kind, 2.0, t2) for s in students]
    ref_grads = torch.autograd.grad(ref[0] * 0.7 + ref[1] * 1.3, students)
    got = d.fused_divergences(students, teacher, kind, 2.0, t2)
    grads = torch.autograd.grad(got[0] * 0.7 + got[1] * 1.3, students)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    same = d.fused_divergences([teacher.clone().requires_grad_(True)], teacher, kind, 2.0, t2)[0]
    assert float(same) == 0.0  # identical logits: exactly 0, as the LoRA student's step-0 kl_t2t needs


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
def test_top_k_divergence_with_the_whole_vocabulary_is_the_full_one(kind):
    from speechkeep.strategies.distill import teacher_top_k, top_k_divergence

    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(6, 9, generator=g) * 2
    s = torch.randn(6, 9, generator=g, requires_grad=True)
    ref = distill_divergence(s, teacher, kind, 2.0, True)
    (ref_grad,) = torch.autograd.grad(ref, s)
    ids, logp = teacher_top_k(teacher, 9, 2.0)
    got = top_k_divergence(s, ids, logp, kind, 2.0, True)
    (grad,) = torch.autograd.grad(got, s)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(grad, ref_grad)
    # k < vocabulary: top-k + one bucket is a coarser distribution, so its KL is at most the full one
    ids3, logp3 = teacher_top_k(teacher, 3, 2.0)
    assert torch.allclose(logp3.exp().sum(-1), torch.ones(6))
    coarse = top_k_divergence(s, ids3, logp3, kind, 2.0, True)
    assert 0 < float(coarse) <= float(ref) + 1e-6


def _examples(rows):
    from speechkeep.train.data import examples_from_rows

    return examples_from_rows(rows, {"qa": 1.0})


def test_adaptor_student_skips_the_text_student_pass(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir,
                                                     tmp_path, monkeypatch):
    model, strategy, opt = _setup(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path, "adaptor")
    queries = _queries(ROWS[:4])
    calls = []
    orig = type(model).response_logits
    monkeypatch.setattr(type(model), "response_logits", lambda self, b: calls.append(1) or orig(self, b))
    terms = strategy.loss(model, queries)
    assert len(calls) == 2  # the student on speech and the teacher on text; no student pass on text
    assert float(terms.terms["kl_t2t"]) == 0.0 and float(terms.terms["kl_s2t"]) > 0
    terms.total().backward()
    assert all(p.grad is None for p in model.llm.parameters())


def test_teacher_cache_equals_the_uncached_kl_and_is_reused(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir,
                                                            tmp_path):
    vocab = None
    cache_dir = tmp_path / "cache"
    model, plain, opt = _setup(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path, "lora")
    vocab = model.llm.get_output_embeddings().weight.shape[0]
    over = {"distill.cache_top_k": vocab, "distill.cache_dir": str(cache_dir)}
    cfg = cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path, strategy="distill", **{"lora.r": 4, **over})
    cached = get_strategy("distill", cfg)
    cached._student = plain.student  # same (already applied) LoRA student
    rows = ROWS[:8]
    cached.begin(model, _examples(rows))
    assert cached.teacher_calls == 2  # 8 items, batch size 4
    files = list(cache_dir.glob("*.pt"))
    assert len(files) == 1 and cached.cache.nbytes() > 0
    for _ in range(2):  # one training step between, so the student is not the teacher
        queries = _queries(rows[:4])
        a, b = plain.loss(model, queries), cached.loss(model, queries)
        for t in ("kl_t2t", "kl_s2t"):
            torch.testing.assert_close(b.terms[t], a.terms[t])
        _step(model, plain, opt, queries)
    epoch = [_queries(rows[:4]), _queries(rows[4:])]
    calls = cached.teacher_calls
    for _ in range(2):  # two epochs: no teacher forward
        for queries in epoch:
            cached.loss(model, queries).total().backward()
    assert cached.teacher_calls == calls
    again = get_strategy("distill", cfg)  # a new run on the same data: read from disk, nothing computed
    again._student = plain.student
    again.begin(model, _examples(rows))
    assert again.teacher_calls == 0 and again.cache.complete
    changed = [replace_row(rows[0], response="a different answer."), *rows[1:]]
    other = get_strategy("distill", cfg)
    other._student = plain.student
    other.begin(model, _examples(changed))  # a changed dataset invalidates it
    assert other.teacher_calls == 2 and len(list(cache_dir.glob("*.pt"))) == 2


def replace_row(row, **kw):
    from dataclasses import replace

    return replace(row, **kw)


def test_teacher_cache_resumes_a_partial_build(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path,
                                               monkeypatch):
    import speechkeep.strategies.distill as d

    over = {"distill.cache_top_k": 5, "distill.cache_dir": str(tmp_path / "cache")}
    model, strategy, _ = _setup(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path, "full", **over)
    monkeypatch.setattr(d, "_SAVE_EVERY_S", 0.0)
    orig = strategy.teacher_response_logits

    def dies_on_the_second(model, qs):
        if strategy.teacher_calls == 1:
            raise KeyboardInterrupt
        return orig(model, qs)

    strategy.teacher_response_logits = dies_on_the_second
    with pytest.raises(KeyboardInterrupt):
        strategy.begin(model, _examples(ROWS[:8]))
    del strategy.teacher_response_logits
    strategy.teacher_calls = 0
    strategy.begin(model, _examples(ROWS[:8]))
    assert strategy.teacher_calls == 1 and len(strategy.cache.index) == 8  # only the missing half
    ids, logp, _ = strategy.cache.lookup(list(strategy.cache.index))
    assert ids.shape[1] == 5 and logp.shape[1] == 6
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(logp.shape[0]))


@pytest.mark.parametrize("student, extra", [("lora", {}), ("full", {}), ("adaptor", {}),
                                            ("lora", {"distill.cache_top_k": 8})])
def test_strategy_distill_trains_with_every_student(student, extra, tiny_llm_dir, tiny_whisper_dir, tmp_path):
    import csv

    from speechkeep.train.loop import train

    if extra:
        extra = {**extra, "distill.cache_dir": str(tmp_path / "cache")}
    cfg = cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path / "run", strategy="distill", max_steps=3,
                  **{"distill.student": student, "lora.r": 4, **extra})
    res = train(cfg, rows=ROWS, features=fake_features, progress=False)
    assert res.steps == 3 and math.isfinite(res.final_loss)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert all(r["term_kl_t2t"] != "" and r["term_kl_s2t"] != "" for r in rows)
    if student == "adaptor":
        assert all(float(r["term_kl_t2t"]) == 0.0 for r in rows)
    if extra:
        assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


@pytest.mark.parametrize("merge", [True, False])
def test_one_forward_for_both_student_passes_is_the_same_loss(merge, tiny_speech_llm_factory, tiny_llm_dir,
                                                              tiny_whisper_dir, tmp_path, monkeypatch):
    """The student's speech and text passes as one 2B-row forward give the values and gradients of two
    forwards, and the LoRA student's kl_t2t is still exactly 0 at step 0 (the teacher uses the same layout)."""
    import speechkeep.strategies.distill as d

    model, strategy, opt = _setup(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path, "lora")
    queries = _queries(ROWS[:4])
    text = [d.as_text_query(q) for q in queries]

    def loss_and_grads(slack):
        monkeypatch.setattr(d, "_MERGE_SLACK", slack)
        _, _, _, layout = strategy.student_passes(model, queries, text)
        assert (layout is not None) == (slack > 0)
        terms = strategy.loss(model, queries)
        params = [p for g in opt.param_groups for p in g["params"]]
        grads = torch.autograd.grad(terms.total(), params, allow_unused=True)
        return {k: v.detach() for k, v in terms.terms.items()}, grads

    slack = 10.0 if merge else -1.0
    first, _ = loss_and_grads(slack)
    assert float(first["kl_t2t"]) == 0.0
    _step(model, strategy, opt, queries)
    a, ga = loss_and_grads(slack)
    b, gb = loss_and_grads(-1.0 if merge else 10.0)
    assert float(a["kl_t2t"]) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    for x, y in zip(ga, gb):
        if x is not None or y is not None:
            torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("kind", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize("k", [3, 11])
def test_fused_top_k_divergences_equal_the_reference(kind, k, monkeypatch):
    import speechkeep.strategies.distill as d

    monkeypatch.setattr(d, "_CHUNK_FLOATS", 4 * 11)
    g = torch.Generator().manual_seed(2)
    ids, logp = d.teacher_top_k(torch.randn(10, 11, generator=g) * 3, k, 2.0)
    students = [torch.randn(10, 11, generator=g, requires_grad=True) for _ in range(2)]
    ref = [d.top_k_divergence(s, ids, logp, kind, 2.0, True) for s in students]
    ref_grads = torch.autograd.grad(ref[0] * 0.6 + ref[1] * 1.5, students)
    got = d.fused_top_k_divergences(students, ids, logp, kind, 2.0, True)
    grads = torch.autograd.grad(got[0] * 0.6 + got[1] * 1.5, students)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
