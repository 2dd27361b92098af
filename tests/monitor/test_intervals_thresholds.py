"""Wilson intervals (textbook values), weights and clustering; breaches decided by bounds, not point estimates."""

from __future__ import annotations

import pytest

from llmbuild.monitor.config import Budget, ThresholdsConfig
from llmbuild.monitor.intervals import estimate, wilson, z_for
from llmbuild.monitor.thresholds import evaluate


def test_wilson_textbook_values():
    # Brown, Cai & DasGupta (2001) / Newcombe (1998) example: 81 of 263 -> [0.2553, 0.3662] at 95%
    lo, hi = wilson(81 / 263, 263, z_for(0.95))
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = wilson(0.0, 10, 1.96)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)  # no success in 10 is not a rate of 0
    assert wilson(0.5, 0, 1.96) == (0.0, 1.0)


def test_unweighted_binary_is_the_textbook_interval():
    e = estimate([(1.0, 1.0, 1.0)] * 81 + [(0.0, 1.0, 1.0)] * 182)
    assert e.n == 263 and e.n_eff == pytest.approx(263) and e.value == pytest.approx(81 / 263)
    assert (round(e.low, 4), round(e.high, 4)) == (0.2553, 0.3662)


def test_sampling_weights_keep_the_rate_and_widen_unequal_weights():
    # a 10% sample: every kept response weighs 10; the rate and the interval are those of the sample
    same = estimate([(1.0, 1.0, 10.0)] * 20 + [(0.0, 1.0, 10.0)] * 80)
    assert same.value == pytest.approx(0.2) and same.n_eff == pytest.approx(100)
    # unequal weights, unrelated to the outcome: the effective sample is Kish's (sum w)^2 / sum w^2
    mixed = estimate([(1.0, 1.0, 1.0)] * 10 + [(0.0, 1.0, 1.0)] * 40 + [(1.0, 1.0, 4.0)] * 10 + [(0.0, 1.0, 4.0)] * 40)
    assert mixed.value == pytest.approx(0.2)
    assert mixed.n_eff == pytest.approx(250 ** 2 / (50 + 50 * 16))
    # weights that follow the outcome move the rate towards the heavy responses
    skewed = estimate([(1.0, 1.0, 1.0)] * 20 + [(0.0, 1.0, 4.0)] * 80)
    assert skewed.value == pytest.approx(20 / 340)


def test_clustered_claims_shrink_the_effective_sample():
    # 20 responses of 5 claims each: all supported or all not, half and half -> like 20 samples, not 100
    clustered = estimate([(5.0, 5.0, 1.0)] * 10 + [(0.0, 5.0, 1.0)] * 10)
    assert clustered.value == 0.5 and clustered.n == 100
    assert clustered.n_eff == pytest.approx(20)
    spread = estimate([(3.0, 5.0, 1.0), (2.0, 5.0, 1.0)] * 10)  # within-response variation: more information
    assert spread.n_eff > clustered.n_eff
    assert estimate([]).value is None and estimate([]).n == 0


def _groups(value_units):
    return {"m @ b": {"rates": {"hallucination_rate": estimate(value_units)}}}


def test_breach_is_decided_by_the_interval_bound():
    t = ThresholdsConfig(min_samples=30, mode="confident", budgets={"hallucination_rate": Budget(max=0.1)})
    # 6 of 40 = 0.15 is above the budget, but the interval [0.07, 0.29] reaches below it: no confident breach
    r = evaluate(_groups([(1.0, 1.0, 1.0)] * 6 + [(0.0, 1.0, 1.0)] * 34), t)[0]
    assert r["value"] > 0.1 and r["low"] < 0.1 and r["status"] == "ok"
    t.mode = "cautious"  # ... but the cautious mode alerts: the upper bound is above the budget
    assert evaluate(_groups([(1.0, 1.0, 1.0)] * 6 + [(0.0, 1.0, 1.0)] * 34), t)[0]["status"] == "breached"
    t.mode = "confident"
    r = evaluate(_groups([(1.0, 1.0, 1.0)] * 30 + [(0.0, 1.0, 1.0)] * 70), t)[0]
    assert r["low"] > 0.1 and r["status"] == "breached" and "lower bound" in r["reason"]
    # the same rate on too few samples never breaches
    few = evaluate(_groups([(1.0, 1.0, 1.0)] * 6 + [(0.0, 1.0, 1.0)] * 14), t)[0]
    assert few["status"] == "too few samples"
    assert evaluate(_groups([]), t)[0]["status"] == "no data"
    low = ThresholdsConfig(min_samples=5, budgets={"hallucination_rate": Budget(min=0.9)})
    r = evaluate(_groups([(1.0, 1.0, 1.0)] * 10 + [(0.0, 1.0, 1.0)] * 10), low)[0]
    assert r["status"] == "breached" and "upper bound" in r["reason"]
