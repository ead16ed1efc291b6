"""The calibration's guarantee rests on one number: the Clopper–Pearson lower bound. Check it
against closed forms, against an independent beta quantile, and against its own definition."""

from __future__ import annotations

import math

import pytest

from edgekit.runtimes.confidence import (
    binomial_p_value,
    binomial_upper_tail,
    clopper_pearson_lower,
    queries_needed,
)


def test_95_of_100_at_delta_005() -> None:
    # one-sided 95% bound: the 0.05 quantile of Beta(95, 6) = 0.897747 (scipy.stats.beta.ppf,
    # and R's binom.test(95, 100, alternative="greater")$conf.int[1]); not 0.8968
    assert clopper_pearson_lower(95, 100, 0.05) == pytest.approx(0.8977466, abs=1e-6)


def test_closed_forms() -> None:
    # all n succeed: P(X >= n) = p^n = delta  ->  p = delta^(1/n)
    assert clopper_pearson_lower(10, 10, 0.1) == pytest.approx(0.1 ** (1 / 10), abs=1e-12)
    # one success: 1 - (1 - p)^n = delta  ->  p = 1 - (1 - delta)^(1/n)
    assert clopper_pearson_lower(1, 20, 0.05) == pytest.approx(1 - 0.95 ** (1 / 20), abs=1e-12)
    assert clopper_pearson_lower(0, 20, 0.05) == 0.0


def test_the_bound_is_where_the_tail_equals_delta() -> None:
    bound = clopper_pearson_lower(37, 50, 0.1)
    assert binomial_upper_tail(37, 50, bound) == pytest.approx(0.1, abs=1e-9)
    # the tail against a direct sum of binomial terms
    direct = sum(math.comb(50, j) * 0.7**j * 0.3 ** (50 - j) for j in range(37, 51))
    assert binomial_upper_tail(37, 50, 0.7) == pytest.approx(direct, rel=1e-12)


def test_matches_scipy_when_it_is_there() -> None:
    stats = pytest.importorskip("scipy.stats")
    for successes, trials, delta in [(95, 100, 0.05), (3, 50, 0.1), (499, 500, 0.01), (1, 2, 0.3)]:
        assert clopper_pearson_lower(successes, trials, delta) == pytest.approx(
            stats.beta.ppf(delta, successes, trials - successes + 1), abs=1e-9)


def test_p_value_rejects_exactly_when_the_bound_clears_the_target() -> None:
    for successes in range(15, 31):
        rejected = binomial_p_value(successes, 30, 0.7) <= 0.1
        assert rejected == (clopper_pearson_lower(successes, 30, 0.1) >= 0.7)


def test_how_many_queries_a_target_needs() -> None:
    assert queries_needed(0.995, 0.1) == 460  # 0.995^460 <= 0.1 < 0.995^459
    assert 0.995**460 <= 0.1 < 0.995**459
    assert queries_needed(1.0, 0.1) == math.inf  # a certain target is never certified


@pytest.mark.parametrize("args", [(5, 4, 0.1), (1, 0, 0.1), (1, 2, 0.0), (1, 2, 1.0)])
def test_nonsense_inputs_are_refused(args: tuple[int, int, float]) -> None:
    with pytest.raises(ValueError):
        clopper_pearson_lower(*args)
