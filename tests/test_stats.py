"""Bootstrap intervals and paired tests of accuracies (speechkeep.evaluate.stats)."""

import numpy as np
import pytest

from speechkeep.evaluate.stats import bootstrap_ci, mcnemar_exact, paired_difference


def test_bootstrap_interval_brackets_the_accuracy_and_shrinks_with_more_questions():
    small = [True] * 11 + [False] * 89
    lo, hi = bootstrap_ci(small)
    assert lo < 0.11 < hi
    assert 0.09 < hi - lo < 0.15  # about +-6 points at 11% of 100 questions: 7% and 11% overlap
    assert bootstrap_ci(small) == (lo, hi)  # seeded: the same predictions give the same interval
    big = small * 12  # 1,200 questions
    blo, bhi = bootstrap_ci(big)
    assert blo < 0.11 < bhi and (bhi - blo) < 0.4 * (hi - lo)


def test_bootstrap_of_a_constant_is_the_point():
    assert bootstrap_ci([False] * 10) == (0.0, 0.0)
    assert bootstrap_ci([True] * 3) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_mcnemar_exact_matches_the_binomial_formula():
    # 6 discordant pairs, all for b: p = 2 * 0.5**6
    a = [False] * 6 + [True] * 4 + [False] * 10
    b = [True] * 6 + [True] * 4 + [False] * 10
    assert mcnemar_exact(a, b) == pytest.approx(2 * 0.5**6)
    assert mcnemar_exact(a, a) == 1.0
    # 3 vs 1 discordant: P(X<=1)+P(X>=3) for Binomial(4, 1/2) = (1 + 4 + 4 + 1) / 16
    assert mcnemar_exact([1, 1, 1, 0, 1], [0, 0, 0, 1, 1]) == pytest.approx(10 / 16)


def test_paired_difference_calls_only_real_differences_significant():
    rng = np.random.default_rng(1)
    base = rng.random(400) < 0.3
    # the same model twice apart from 2 questions: not significant
    near = base.copy()
    near[:2] = ~near[:2]
    c = paired_difference(near, base)
    assert not c.significant and c.ci_low <= c.difference <= c.ci_high
    # 40 more questions right, none lost: significant, interval excludes 0
    better = base.copy()
    better[np.flatnonzero(~base)[:40]] = True
    c = paired_difference(better, base)
    assert c.significant and c.only_a == 40 and c.only_b == 0 and c.ci_low > 0
    assert c.difference == pytest.approx(0.1) and "significant" in c.describe()
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([True], [True, False])


# --- WER intervals -----------------------------------------------------------------------------------


def test_utterance_errors_sum_to_corpus_wer():
    from speechkeep.metrics import corpus_wer, utterance_errors

    refs = ["who was the first president", "what is the capital of france", "Hello, World!", ""]
    hyps = ["who is the first president of", "what capital of france", "hello world", "anything"]
    errs = utterance_errors(refs, hyps)
    assert len(errs) == 3  # the empty reference is left out, as corpus_wer does
    assert errs[2] == (0, 2)  # normalization: case and punctuation do not count
    assert sum(e for e, _ in errs) / sum(w for _, w in errs) == pytest.approx(corpus_wer(refs, hyps))
    assert utterance_errors(["a b c"], [""]) == [(3, 3)]


def test_wer_ci_brackets_the_corpus_wer_and_shrinks_with_n():
    from speechkeep.evaluate.stats import wer_ci

    rng = np.random.default_rng(1)
    small = [(int(rng.integers(0, 3)), 6) for _ in range(50)]
    big = small * 20
    wer = sum(e for e, _ in small) / sum(w for _, w in small)
    lo, hi = wer_ci(small)
    assert lo < wer < hi
    lo2, hi2 = wer_ci(big)
    assert lo2 < wer < hi2 and (hi2 - lo2) < (hi - lo) / 3
    assert wer_ci([(0, 5)] * 10) == (0.0, 0.0)
    with pytest.raises(ValueError):
        wer_ci([])


def test_paired_wer_difference_detects_a_real_gap_and_not_noise():
    from speechkeep.evaluate.stats import paired_wer_difference

    rng = np.random.default_rng(2)
    base = [(int(rng.integers(0, 2)), 8) for _ in range(300)]
    worse = [(e + 1, w) for e, w in base]  # one more edit on every utterance: +12.5 points
    d = paired_wer_difference(worse, base)
    assert d.difference == pytest.approx(1 / 8) and d.significant and d.ci_low > 0.1
    same = paired_wer_difference(base, base)
    assert same.difference == 0 and not same.significant
    with pytest.raises(ValueError, match="same utterances"):
        paired_wer_difference(base, base[:-1])


def test_degradation_reduction_matches_its_definition():
    from speechkeep.evaluate.stats import degradation_reduction

    base = [True] * 200 + [False] * 800
    full = [True] * 100 + [False] * 900  # drop 10 points
    x = [True] * 175 + [False] * 825  # drop 2.5 points: 75% less
    r = degradation_reduction(base, full, x)
    assert r.drop_full == pytest.approx(0.10) and r.drop_x == pytest.approx(0.025)
    assert r.reduction == pytest.approx(0.75)
    assert r.ci_low < 0.75 < r.ci_high and r.undefined_fraction == 0
    assert degradation_reduction(base, base, x).reduction is None  # full did not degrade: undefined
    assert degradation_reduction(base, full, full).reduction == pytest.approx(0.0)


def test_retention_ci_is_the_ratio_with_a_paired_interval():
    from speechkeep.evaluate.stats import retention_ci

    base = [True] * 200 + [False] * 800
    x = [True] * 150 + [False] * 850  # the base's first 150 right: 75% retained
    point, lo, hi = retention_ci(base, x)
    assert point == pytest.approx(0.75) and lo < 0.75 < hi
    # paired: X right exactly where the base is right on 150 of them, so the ratio varies less than two independent
    # accuracies would make it (their interval is wider)
    rng = np.random.default_rng(1)
    y = list(rng.permutation(x))
    _, lo_y, hi_y = retention_ci(base, y)
    assert hi - lo < hi_y - lo_y
    assert retention_ci(base, base)[1:] == (1.0, 1.0)
    assert retention_ci([False] * 10, [True] * 10) is None


def test_unscored_questions_are_left_out_of_paired_outcomes(tmp_path):
    import json

    from speechkeep.evaluate.report import outcomes

    rows = [{"task": "t2t", "id": "a", "correct": True}, {"task": "t2t", "id": "b", "correct": False},
            {"task": "t2t", "id": "c", "correct": None},  # no reference answers: not scored, not "wrong"
            {"task": "s2t", "id": "a", "correct": False}]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert outcomes(tmp_path, "t2t") == {"a": True, "b": False}
    assert outcomes(tmp_path, "s2t") == {"a": False}
    with pytest.raises(ValueError, match="no scored predictions"):
        outcomes(tmp_path, "asr")


def test_degradation_reduction_interval_counts_undefined_resamples_against_the_claim():
    from speechkeep.evaluate.stats import degradation_reduction

    base = [True] * 30 + [False] * 170
    full = [True] * 27 + [False] * 173  # a 1.5-point drop: some resamples have none, where the ratio is undefined
    x = [True] * 29 + [False] * 171
    r = degradation_reduction(base, full, x)
    assert 0 < r.undefined_fraction
    assert r.ci_low is None or r.ci_low <= r.reduction  # an undefined resample is -inf for the lower end
    assert r.ci_high is None or r.ci_high >= r.reduction
    if r.undefined_fraction >= 0.025:
        assert r.ci_low is None and r.ci_high is None and "-inf" in r.describe()
