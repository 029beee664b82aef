"""Statistical power of accuracy comparisons: bootstrap confidence intervals and paired tests.

100 questions cannot tell 7% from 11% apart. Every accuracy speechkeep reports carries a 95% bootstrap
interval (:func:`bootstrap_ci`), and two models evaluated on the *same* questions are compared
paired: the bootstrap interval of the accuracy difference (:func:`paired_difference`, resampling
questions, not models) and the exact McNemar test on the questions where exactly one of them is
right (:func:`mcnemar_exact`). A difference is called a difference only when the paired test says so.

Resampling uses a fixed seed, so the same predictions always give the same interval.
"""

from __future__ import annotations

import math
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


def wer_ci(errors: Sequence[tuple[int, int]], confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
           seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of a corpus WER from per-utterance ``(edits, reference words)``
    (:func:`speechkeep.metrics.utterance_errors`): utterances are resampled and the WER of each
    resample is total edits / total words."""
    e, w = _errors(errors)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, e.size, size=(n_resamples, e.size))
    stats = e[idx].sum(1) / np.maximum(w[idx].sum(1), 1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


@dataclass(frozen=True)
class PairedWer:
    """Model A's WER against model B's on the same utterances."""

    n: int
    wer_a: float
    wer_b: float
    difference: float
    """wer_a - wer_b."""
    ci_low: float
    ci_high: float
    """Paired percentile-bootstrap interval of the difference (utterances resampled together)."""
    significant: bool
    """The interval excludes 0."""

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (f"WER {100 * self.difference:+.1f} points (95% CI {100 * self.ci_low:+.1f} to {100 * self.ci_high:+.1f}, "
                f"paired bootstrap over {self.n} utterances: {verdict})")


def paired_wer_difference(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]], confidence: float = CONFIDENCE,
                          n_resamples: int = N_RESAMPLES, seed: int = SEED) -> PairedWer:
    """Compare two systems' WER on the same utterances (same order; ``(edits, words)`` per utterance)."""
    ea, wa = _errors(a)
    eb, wb = _errors(b)
    if ea.shape != eb.shape or not np.array_equal(wa, wb):
        raise ValueError("paired WER needs the same utterances (same reference word counts) in the same order")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, ea.size, size=(n_resamples, ea.size))
    words = np.maximum(wa[idx].sum(1), 1)
    d = (ea[idx].sum(1) - eb[idx].sum(1)) / words
    alpha = (1 - confidence) / 2
    low, high = float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))
    w = max(int(wa.sum()), 1)
    return PairedWer(n=int(ea.size), wer_a=float(ea.sum() / w), wer_b=float(eb.sum() / w),
                     difference=float((ea.sum() - eb.sum()) / w), ci_low=low, ci_high=high,
                     significant=not (low <= 0.0 <= high))


@dataclass(frozen=True)
class DegradationReduction:
    """Seed 003's degradation reduction of a strategy X against full fine-tuning on the same questions:
    (drop_full - drop_X) / drop_full, where drop = base accuracy - accuracy (T2T)."""

    n: int
    drop_full: float
    drop_x: float
    reduction: float | None
    """None when full fine-tuning did not degrade (drop_full <= 0): the ratio is undefined."""
    ci_low: float | None
    ci_high: float | None
    """Percentile interval over all paired bootstrap resamples of the questions; a resample where drop_full <= 0
    (the ratio undefined) counts as -inf for the lower end and +inf for the upper end, so the interval is never
    narrower than the data allow (None where that end is infinite)."""
    undefined_fraction: float
    """Share of resamples where drop_full <= 0 (left out of the interval); large values mean the interval is not trustworthy."""

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.reduction is None:
            return f"undefined: full fine-tuning did not lower the accuracy (drop {100 * self.drop_full:+.1f} points)"
        lo = "-inf" if self.ci_low is None else f"{100 * self.ci_low:.0f}%"
        hi = "+inf" if self.ci_high is None else f"{100 * self.ci_high:.0f}%"
        ci = f" (95% CI {lo} to {hi})"
        note = f"; {100 * self.undefined_fraction:.0f}% of resamples had no full-FT drop" if self.undefined_fraction > 0.01 else ""
        return (f"{100 * self.reduction:.0f}%{ci}: drop {100 * self.drop_x:.1f} vs full's {100 * self.drop_full:.1f} points{note}")


def degradation_reduction(base: Sequence[bool], full: Sequence[bool], x: Sequence[bool], confidence: float = CONFIDENCE,
                          n_resamples: int = N_RESAMPLES, seed: int = SEED) -> DegradationReduction:
    """:class:`DegradationReduction` from per-question outcomes of the base model, full fine-tuning and X."""
    b, f = _paired(base, full)
    _, xx = _paired(base, x)
    b, f, xx = (v.astype(np.float64) for v in (b, f, xx))
    drop_full, drop_x = float(b.mean() - f.mean()), float(b.mean() - xx.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, b.size, size=(n_resamples, b.size))
    df = b[idx].mean(1) - f[idx].mean(1)
    dx = b[idx].mean(1) - xx[idx].mean(1)
    ok = df > 0
    red = (df - dx) / np.where(ok, df, 1.0)
    alpha = (1 - confidence) / 2
    lo = float(np.quantile(np.where(ok, red, -np.inf), alpha, method="inverted_cdf"))
    hi = float(np.quantile(np.where(ok, red, np.inf), 1 - alpha, method="inverted_cdf"))
    lo, hi = (v if math.isfinite(v) else None for v in (lo, hi))
    point = (drop_full - drop_x) / drop_full if drop_full > 0 else None
    return DegradationReduction(n=int(b.size), drop_full=drop_full, drop_x=drop_x, reduction=point,
                                ci_low=lo if point is not None else None, ci_high=hi if point is not None else None,
                                undefined_fraction=float(1 - ok.mean()))


def retention_ci(base: Sequence[bool], x: Sequence[bool], confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[float, float, float] | None:
    """Retention of a model X against the base model on the same questions, accuracy_X / accuracy_base, with a
    percentile interval over paired bootstrap resamples of the questions (resamples where the base got nothing right
    are left out). None when the base got nothing right."""
    b, xx = (v.astype(np.float64) for v in _paired(base, x))
    if b.sum() == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, b.size, size=(n_resamples, b.size))
    bm, xm = b[idx].mean(1), xx[idx].mean(1)
    ok = bm > 0
    r = xm[ok] / bm[ok]
    alpha = (1 - confidence) / 2
    return float(xx.mean() / b.mean()), float(np.quantile(r, alpha)), float(np.quantile(r, 1 - alpha))


def _errors(errors: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(errors, dtype=np.float64).reshape(-1, 2)
    if x.shape[0] == 0:
        raise ValueError("a WER interval needs at least one utterance")
    if (x < 0).any():
        raise ValueError("edits and word counts must be >= 0")
    return x[:, 0], x[:, 1]


def _paired(a: Sequence[bool], b: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes need two equal-length lists, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired outcomes need at least one question")
    return a, b
