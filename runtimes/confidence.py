"""Exact binomial confidence bounds (Clopper–Pearson), numpy-free, for calibration guarantees.

The runtime side ships without scipy, so the bound is computed from its definition: the
one-sided Clopper–Pearson lower bound at level 1 - δ for s successes in n trials is the p at
which the binomial upper tail P(X >= s | n, p) equals δ (for s > 0; it is 0 for s = 0). The
tail is increasing in p, so bisection finds it; the tail itself is summed in log space from
log-binomial coefficients (math.lgamma), exact to float precision for any n calibration uses.
This equals the δ-quantile of Beta(s, n - s + 1), the textbook form.

Example::

    >>> round(clopper_pearson_lower(95, 100, 0.05), 4)
    0.8977
    >>> binomial_p_value(20, 20, 0.9) <= 0.15  # 20/20 rejects "rate < 0.9" at δ = 0.15
    True
"""

from __future__ import annotations

import math

BISECTION_STEPS = 60  # halves [0, 1] to below 1e-18: past float precision


def _check(successes: int, trials: int) -> None:
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")


def binomial_upper_tail(successes: int, trials: int, rate: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, rate)."""
    _check(successes, trials)
    if successes == 0:
        return 1.0
    if rate <= 0.0:
        return 0.0
    if rate >= 1.0:
        return 1.0
    log_p, log_q = math.log(rate), math.log1p(-rate)
    terms = [math.lgamma(trials + 1) - math.lgamma(j + 1) - math.lgamma(trials - j + 1) + j * log_p
             + (trials - j) * log_q for j in range(successes, trials + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(term - top) for term in terms))


def binomial_p_value(successes: int, trials: int, target: float) -> float:
    """Exact p-value of H0 "the success rate is below `target`" after `successes` in `trials`.

    Rejecting when it is <= δ is the same as the Clopper–Pearson lower bound clearing `target`."""
    return binomial_upper_tail(successes, trials, target)


def clopper_pearson_lower(successes: int, trials: int, delta: float) -> float:
    """One-sided lower confidence bound on a binomial rate: P(rate >= bound) >= 1 - delta."""
    _check(successes, trials)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if successes == 0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if binomial_upper_tail(successes, trials, middle) < delta:
            low = middle
        else:
            high = middle
    return low


def queries_needed(target: float, delta: float) -> int:
    """The fewest trials with which even a perfect record (all successes) gets a lower bound
    >= `target` at level 1 - delta: target^n <= delta."""
    if target >= 1.0:
        return math.inf  # type: ignore[return-value]
    return math.ceil(math.log(delta) / math.log(target))
