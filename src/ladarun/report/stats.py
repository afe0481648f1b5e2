"""The statistics behind every verdict the reports print: Welch's test with its confidence
interval, Holm's correction, the table's bold rule and the simulation that checks its error rate.

A claim is a difference of per-seed means with its 95 % confidence interval and a two-sided p
(one-sided only where the direction was named before the data were read), Holm-corrected within
the family of comparisons it was declared in (docs/methods.md §15).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.stats import ttest_ind

ALPHA = 0.05
CONFIDENCE = 0.95
ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) over seeds, with Welch's confidence interval and p-value."""

    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    low: float  # confidence bounds of the difference (one-sided tests: one bound is infinite)
    high: float
    p: float  # NaN where either side has fewer than two seeds
    alternative: str = "two-sided"

    @property
    def diff(self) -> float:
        return self.mean_a - self.mean_b


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def welch(
    a: Sequence[float],
    b: Sequence[float],
    alternative: str = "two-sided",
    confidence: float = CONFIDENCE,
) -> Difference:
    """Welch's t-test of mean(a) - mean(b) (scipy.stats.ttest_ind, equal_var=False) and its
    Welch-Satterthwaite confidence interval. Fewer than two values on a side: p and CI are NaN.
    No spread on either side: any difference is beyond the (absent) noise, p = 0, the CI a point."""
    if alternative not in ALTERNATIVES:
        raise ValueError(
            f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}"
        )
    ma, mb = _mean(a), _mean(b)
    if min(len(a), len(b)) < 2:
        return Difference(ma, mb, len(a), len(b), math.nan, math.nan, math.nan, alternative)
    if np.var(a) == 0 and np.var(b) == 0:
        d = ma - mb
        if d == 0:
            p = 1.0
        elif alternative == "two-sided":
            p = 0.0
        else:
            p = 0.0 if (d > 0) == (alternative == "greater") else 1.0
        return Difference(ma, mb, len(a), len(b), d, d, p, alternative)
    with warnings.catch_warnings():  # scipy warns of precision loss for nearly identical values
        warnings.simplefilter("ignore", RuntimeWarning)
        result = ttest_ind(list(a), list(b), equal_var=False, alternative=alternative)
        ci = result.confidence_interval(confidence)
    return Difference(
        ma, mb, len(a), len(b), float(ci.low), float(ci.high), float(result.pvalue), alternative
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (as statsmodels' multipletests(method="holm")).

    NaN p-values (untestable comparisons) stay NaN and do not count in the family's size."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    steps = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return [float(x) for x in out]


def pairwise_p(samples: Sequence[Sequence[float]]) -> dict[tuple[int, int], float]:
    """Two-sided Welch p of every pair (i < j) of rows, as :func:`welch` gives it; pairs whose
    rows have the same seed counts go to scipy in one vectorised call."""
    pairs = [(i, j) for i in range(len(samples)) for j in range(i + 1, len(samples))]
    out: dict[tuple[int, int], float] = {}
    by_shape: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, j in pairs:
        by_shape.setdefault((len(samples[i]), len(samples[j])), []).append((i, j))
    for (na, nb), group in by_shape.items():
        a = np.array([samples[i] for i, _ in group], dtype=float).reshape(len(group), na)
        b = np.array([samples[j] for _, j in group], dtype=float).reshape(len(group), nb)
        if min(na, nb) < 2:
            out.update(dict.fromkeys(group, math.nan))
            continue
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            p = np.atleast_1d(ttest_ind(a, b, axis=1, equal_var=False).pvalue)
        # no spread on either side: welch()'s convention (p = 0 unless the means are equal)
        still = (a.var(axis=1) == 0) & (b.var(axis=1) == 0)
        p = np.where(still, np.where(a.mean(axis=1) == b.mean(axis=1), 1.0, 0.0), p)
        out.update({pair: float(x) for pair, x in zip(group, p)})
    return {pair: out[pair] for pair in pairs}


def bold_rows(samples: Sequence[Sequence[float]], alpha: float = ALPHA) -> list[bool]:
    """Bold marks for the rows of one group, from each row's per-seed values.

    Every row is bold unless it is significantly worse than the row with the best mean: a
    two-sided Welch test of every pair of rows in the group, Holm-corrected over all those
    k(k-1)/2 pairs (the best row is chosen after seeing the data, so its k-1 comparisons alone
    would not hold the error rate), rejects at ``alpha``. A row with one seed is never
    significantly worse; a group of fewer than two rows has no bold."""
    if len(samples) < 2:
        return [False] * len(samples)
    means = [_mean(s) for s in samples]
    best = max(range(len(samples)), key=lambda i: means[i])  # ties: the first in table order
    pairs = pairwise_p(samples)
    adjusted = dict(zip(pairs, holm(list(pairs.values()))))
    worse = [
        i != best and adjusted[(min(i, best), max(i, best))] < alpha for i in range(len(samples))
    ]
    return [not w for w in worse]


Rule = Callable[[Sequence[Sequence[float]]], list[bool]]

#: The per-seed standard deviations of the committed Final and Area columns of
#: results/fashion_budget and results/fashion_quick when the bold rule was chosen: the spreads
#: under which its error rate is simulated (:func:`null_error_rate`).
COMMITTED_SPREADS = (
    0.67, 2.12, 1.07, 1.05, 0.26, 0.68, 0.41, 0.36, 0.49,
    0.61, 1.91, 0.45, 1.39, 0.47, 0.41, 0.87, 0.60, 0.86,
    1.28, 2.18, 1.93, 0.74, 0.32, 2.73, 1.56, 1.14, 0.82,
    1.27, 0.93, 1.19, 1.73, 1.38, 0.32, 1.63, 0.51, 0.82,
    1.25, 1.13, 0.69, 0.41, 1.02, 1.38, 1.98, 1.28, 1.78,
    1.18, 1.48, 0.59, 0.97, 1.58, 1.53, 1.67, 1.53, 0.66,
)  # fmt: skip
NULL_DRAWS = 2000
NULL_SEED = 20260
NULL_ROWS = (2, 3, 4, 6)
NULL_SEEDS = 5  # the committed tables' seeds per row
#: :func:`null_error_rate` of :func:`bold_rows` with the defaults above (tests/test_stats.py
#: recomputes them): the error rates the table's caption states.
NULL_RATES = {2: 0.047, 3: 0.0335, 4: 0.041, 6: 0.0195}


def null_error_rate(
    rule: Rule,
    rows: int,
    seeds: int = NULL_SEEDS,
    spreads: Sequence[float] = COMMITTED_SPREADS,
    draws: int = NULL_DRAWS,
    seed: int = NULL_SEED,
) -> float:
    """The share of ``draws`` groups of ``rows`` rows with equal true means (each row's spread
    drawn from ``spreads``, ``seeds`` values each) in which ``rule`` marks any row wrongly: a
    row not bold (marked worse than the best), which is also what a lone bold row means."""
    rng = np.random.default_rng(seed)
    errors = 0
    for _ in range(draws):
        sds = rng.choice(np.asarray(spreads, dtype=float), size=rows)
        samples = [list(rng.normal(0.0, sd, seeds)) for sd in sds]
        errors += not all(rule(samples))
    return errors / draws


def simulation_error(rate: float = ALPHA, draws: int = NULL_DRAWS) -> float:
    """Two standard errors of a rate estimated from ``draws`` independent draws."""
    return 2 * math.sqrt(rate * (1 - rate) / draws)
