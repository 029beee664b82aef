"""Statistical power of accuracy comparisons: bootstrap confidence intervals and paired tests.

100 questions cannot tell 7% from 11% apart. Every accuracy speechkeep reports carries a 95% bootstrap
interval (:func:`bootstrap_ci`), and two models evaluated on the *same* questions are compared
paired: the bootstrap interval of the accuracy difference (:func:`paired_difference`, resampling
questions, not models) and the exact McNemar test on the questions where exactly one of them is
right (:func:`mcnemar_exact`). A difference is called a difference only when the paired test says so.

Resampling uses a fixed seed, so the same predictions always give the same interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
SEED = 0


def bootstrap_ci(correct: Sequence[bool], confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (mean of ``correct``), via ``scipy.stats.bootstrap``."""
    from scipy import stats

    x = np.asarray(correct, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one item")
    if x.min() == x.max():  # every resample has the same mean: scipy would warn, the interval is the point
        return float(x[0]), float(x[0])
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", rng=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value for paired outcomes: a binomial test of the discordant pairs
    (a right and b wrong vs a wrong and b right) against 1/2. 1.0 when there are none."""
    from scipy import stats

    a, b = _paired(a, b)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


@dataclass(frozen=True)
class PairedComparison:
    """Model A against model B on the same questions."""

    n: int
    """Questions scored for both."""
    accuracy_a: float
    accuracy_b: float
    difference: float
    """accuracy_a - accuracy_b."""
    ci_low: float
    ci_high: float
    """Paired percentile-bootstrap interval of the difference (questions resampled together)."""
    only_a: int
    """Questions A gets right and B wrong."""
    only_b: int
    """Questions B gets right and A wrong."""
    p_value: float
    """Exact McNemar test."""
    significant: bool
    """p_value < 1 - confidence."""

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (f"{100 * self.difference:+.1f} points (95% CI {100 * self.ci_low:+.1f} to {100 * self.ci_high:+.1f}; "
                f"{self.only_a} vs {self.only_b} discordant questions, McNemar p = {self.p_value:.3g}: {verdict})")


def paired_difference(a: Sequence[bool], b: Sequence[bool], confidence: float = CONFIDENCE,
                      n_resamples: int = N_RESAMPLES, seed: int = SEED) -> PairedComparison:
    """Compare two models' per-question outcomes on the same questions (same order)."""
    from scipy import stats

    a, b = _paired(a, b)
    diff = a.astype(np.float64) - b.astype(np.float64)
    if diff.min() == diff.max():
        low = high = float(diff[0])
    else:
        res = stats.bootstrap((diff,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                              method="percentile", rng=np.random.default_rng(seed), vectorized=True)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    p = mcnemar_exact(a, b)
    return PairedComparison(n=int(a.size), accuracy_a=float(a.mean()), accuracy_b=float(b.mean()),
                            difference=float(diff.mean()), ci_low=low, ci_high=high,
                            only_a=int(np.sum(a & ~b)), only_b=int(np.sum(~a & b)), p_value=p,
                            significant=p < 1 - confidence)


def _paired(a: Sequence[bool], b: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes need two equal-length lists, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired outcomes need at least one question")
    return a, b
