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
