"""Budgets and breaches: a breach is an interval bound past its budget, with enough samples to say so.

For a `max` budget (e.g. hallucination_rate max 0.1), mode `confident` breaches when the interval's
lower bound is above it (the rate is above the budget with 95% confidence), mode `cautious` when the
upper bound is (the data cannot rule it out). A `min` budget mirrors this. The point estimate never
decides. A rate measured on fewer than `min_samples` effective samples is reported as "too few samples"
and never breaches; a rate with no samples at all is "no data". Exit code 5 tells cron or CI to act.
"""

from __future__ import annotations

from llmbuild.errors import BuildError


class ThresholdBreached(BuildError):
    """A monitoring threshold is breached (exit 5): raised after the report and history are written."""

    exit_code = 5


def evaluate(groups: dict[str, dict], thresholds) -> list[dict]:
    """One result per (budget, group): status breached | ok | too few samples | no data."""
    results = []
    for metric, budget in thresholds.budgets.items():
        for group, summary in groups.items():
            e = summary["rates"][metric]
            r = {"metric": metric, "group": group, "min": budget.min, "max": budget.max, "value": e.value,
                 "low": e.low, "high": e.high, "n_eff": round(e.n_eff, 2), "mode": thresholds.mode}
            if e.value is None:
                r["status"] = "no data"
            elif e.n_eff < thresholds.min_samples:
                r["status"] = "too few samples"
            else:
                hi_bound = e.low if thresholds.mode == "confident" else e.high
                lo_bound = e.high if thresholds.mode == "confident" else e.low
                over = budget.max is not None and hi_bound > budget.max
                under = budget.min is not None and lo_bound < budget.min
                r["status"] = "breached" if over or under else "ok"
                if over or under:
                    side, limit, bound = ("max", budget.max, hi_bound) if over else ("min", budget.min, lo_bound)
                    r["reason"] = (f"{metric} {e.value:.3f} [{e.low:.3f}, {e.high:.3f}] for {group}: the "
                                   f"{'lower' if bound == e.low else 'upper'} bound {bound:.3f} is "
                                   f"{'above' if side == 'max' else 'below'} the {side} {limit}")
            results.append(r)
    return results


def breaches(results: list[dict]) -> list[dict]:
    return [r for r in results if r["status"] == "breached"]
