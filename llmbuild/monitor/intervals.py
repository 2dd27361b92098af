"""Rates with counts and Wilson score intervals, for weighted samples and for units clustered in responses.

A rate here is sum(w_i s_i) / sum(w_i c_i) over responses i, where c_i is the number of units a response
contributes (1 for response-level rates, its claims or citations for claim- and citation-level ones),
s_i how many of them count, and w_i the response's inverse sampling probability. The interval is
Wilson's score interval (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the normal one for
small n and rates near 0 or 1) computed at the *effective* sample size n_eff = p(1-p) / Var(p), with
Var(p) the linearization (ratio-estimator) variance sum(w_i^2 (s_i - p c_i)^2) / (sum w_i c_i)^2. With
equal weights and one unit per response this is the textbook Wilson interval (n_eff = n); unequal weights
shrink n_eff as Kish's design effect does; claims of one response that stand or fall together shrink it
as clustering should, instead of pretending claims are independent. n_eff never exceeds the unit count,
so for a mean of [0, 1] scores (token F1, ROUGE-L) the interval is conservative: the Bernoulli variance is
the largest a [0, 1] variable with that mean can have. No NaN: an empty rate has value None and n 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist


def z_for(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def wilson(p: float, n: float, z: float) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


@dataclass
class Estimate:
    value: float | None  # the rate (weighted), None when nothing applies
    low: float  # Wilson interval
    high: float
    n: int  # units counted (responses, claims or citations), unweighted
    responses: int  # responses that contributed
    successes: float  # units that count, unweighted
    n_eff: float  # effective sample size the interval is computed at

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("value", "low", "high", "n_eff", "successes"):
            if d[k] is not None:
                d[k] = round(d[k], 6)
        return d


def estimate(units: list[tuple[float, float, float]], confidence: float = 0.95) -> Estimate:
    """units: (s_i, c_i, w_i) per response with c_i > 0."""
    units = [u for u in units if u[1] > 0]
    if not units:
        return Estimate(None, 0.0, 1.0, 0, 0, 0.0, 0.0)
    num = sum(w * s for s, c, w in units)
    den = sum(w * c for s, c, w in units)
    p = min(1.0, max(0.0, num / den))
    n_units = sum(c for _, c, _ in units)
    var = sum((w * (s - p * c)) ** 2 for s, c, w in units) / den ** 2
    if var > 0 and 0 < p < 1:
        n_eff = p * (1 - p) / var
    else:  # every unit agrees: the sample size is the weighted unit count's Kish size
        n_eff = den ** 2 / sum((w * c) ** 2 for _, c, w in units) * (n_units / len(units))
    n_eff = min(n_eff, float(n_units))
    low, high = wilson(p, n_eff, z_for(confidence))
    return Estimate(p, low, high, round(n_units), len(units), sum(s for s, _, _ in units), n_eff)
