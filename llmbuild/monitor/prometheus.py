"""Prometheus exposition through prometheus-client: a textfile for node_exporter and a /metrics endpoint.

Names follow Prometheus' conventions (https://prometheus.io/docs/practices/naming/): ratios in 0-1
end in `_ratio`, the interval's bounds are separate gauges (`..._lower_bound_ratio`,
`..._upper_bound_ratio`), the effective sample size is `..._samples`, counters end in `_total`. Labels
are model, build, scorer (and outcome, metric, format where they say what is counted): a handful of
values each, never a request id or text. Counters only grow: in follow mode each response is counted
once, when it first enters the window.
"""

from __future__ import annotations

import contextlib

from llmbuild.monitor.metrics import METRICS, OUTCOMES

PREFIX = "llmbuild_monitor_"
NAMES = {"hallucination_rate": "hallucination", "refusal_rate": "refusal", "empty_rate": "empty_response",
         "no_context_rate": "no_context", "error_rate": "error", "citation_rate": "citation"}
LABELS = ("model", "build", "scorer")


def prom_name(metric: str) -> str:
    return PREFIX + NAMES.get(metric, metric)


def group_labels(analyses) -> tuple[str, str]:
    ex = analyses[0].ex
    return ex.model or "unknown", ex.build or "none"


class Exposition:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        r = self.registry
        self.rate, self.low, self.high, self.samples = {}, {}, {}, {}
        for m, doc in METRICS.items():
            base = prom_name(m)
            self.rate[m] = Gauge(f"{base}_ratio", f"{doc} (share, 0-1) in the window", LABELS, registry=r)
            self.low[m] = Gauge(f"{base}_lower_bound_ratio", f"lower bound of the Wilson interval of {base}_ratio",
                                LABELS, registry=r)
            self.high[m] = Gauge(f"{base}_upper_bound_ratio", f"upper bound of the Wilson interval of {base}_ratio",
                                 LABELS, registry=r)
            self.samples[m] = Gauge(f"{base}_samples", f"effective sample size behind {base}_ratio", LABELS, registry=r)
        self.breached = Gauge(PREFIX + "threshold_breached", "1 when the metric's budget is breached (interval bound)",
                              (*LABELS, "metric"), registry=r)
        self.responses = Counter(PREFIX + "responses", "responses read, by outcome", ("model", "build", "outcome"),
                                 registry=r)
        self.claims = Counter(PREFIX + "claims", "claims checked, by verdict", (*LABELS, "supported"), registry=r)
        self.skipped = Counter(PREFIX + "log_lines_skipped", "log lines that could not be used", ("format",), registry=r)
        self.window = Gauge(PREFIX + "window_seconds", "length of the window the ratios are computed over", registry=r)
        self.updated = Gauge(PREFIX + "last_update_timestamp_seconds", "when the ratios were last computed", registry=r)

    def set_rates(self, groups: dict, scorer: str, results: list[dict], window_s: float) -> None:
        """groups: {key: (analyses, summary)} for the window; results: thresholds.evaluate output."""
        import time

        for key, (analyses, summary) in groups.items():
            if key == "all" or not analyses:
                continue
            model, build = group_labels(analyses)
            for m, e in summary["rates"].items():
                labels = (model, build, scorer)
                if e.value is None:  # no data: drop the series rather than export a made-up value
                    for g in (self.rate, self.low, self.high):
                        with contextlib.suppress(KeyError):
                            g[m].remove(*labels)
                    self.samples[m].labels(*labels).set(0)
                    continue
                self.rate[m].labels(*labels).set(e.value)
                self.low[m].labels(*labels).set(e.low)
                self.high[m].labels(*labels).set(e.high)
                self.samples[m].labels(*labels).set(e.n_eff)
        for r in results:
            if r["group"] == "all" and len(groups) > 1:
                continue
            analyses = groups.get(r["group"], ([], None))[0]
            if analyses:
                model, build = group_labels(analyses)
                self.breached.labels(model, build, scorer, r["metric"]).set(1.0 if r["status"] == "breached" else 0.0)
        self.window.set(window_s)
        self.updated.set(time.time())

    def count(self, analyses, scorer: str) -> None:
        """Add these (new) responses to the counters."""
        for a in analyses:
            model, build = a.ex.model or "unknown", a.ex.build or "none"
            self.responses.labels(model, build, a.outcome).inc()
            if a.claims:
                self.claims.labels(model, build, scorer, "true").inc(a.supported)
                self.claims.labels(model, build, scorer, "false").inc(a.claims - a.supported)
        for model, build in {(a.ex.model or "unknown", a.ex.build or "none") for a in analyses}:
            for o in OUTCOMES:  # every outcome series exists, so rate() sees zeros
                self.responses.labels(model, build, o).inc(0)

    def count_skipped(self, fmt: str, n: int) -> None:
        if n:
            self.skipped.labels(fmt).inc(n)

    def write_textfile(self, path) -> None:
        from prometheus_client import write_to_textfile

        write_to_textfile(str(path), self.registry)  # writes a temporary file and renames it: atomic

    def serve(self, host: str, port: int):
        from prometheus_client import start_http_server

        return start_http_server(port, addr=host, registry=self.registry)
