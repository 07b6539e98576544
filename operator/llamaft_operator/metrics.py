"""Prometheus metrics of the operator, served on `LLAMAFT_METRICS_PORT` at `/metrics`."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "llamaft_reconciles_total", "Reconciles of LlamaFineTunes by result.", ["result"]
)
RECONCILE_ERRORS = Counter(
    "llamaft_reconcile_errors_total", "Reconciles that raised (retried with back-off)."
)
RECONCILE_SECONDS = Histogram(
    "llamaft_reconcile_duration_seconds",
    "Wall time of one reconcile: reading the world, computing, applying.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOBS_CREATED = Counter("llamaft_jobs_created_total", "Step Jobs created, by step.", ["step"])
WEBHOOKS = Counter("llamaft_webhooks_total", "Completion webhooks posted, by result.", ["result"])
RUNS = Gauge("llamaft_runs", "LlamaFineTunes this operator has seen, by phase.", ["phase"])


class PhaseTracker:
    """Keeps `llamaft_runs{phase}` equal to the count of known runs in each phase."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], str] = {}

    def set(self, key: tuple[str, str], phase: str) -> None:
        with self._lock:
            self._phases[key] = phase
            self._publish()

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._phases.pop(key, None)
            self._publish()

    def _publish(self) -> None:
        counts: dict[str, int] = {}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for labels in list(RUNS._metrics):  # reset phases that emptied
            RUNS.labels(*labels).set(0)
        for name, count in counts.items():
            RUNS.labels(name).set(count)


PHASES = PhaseTracker()


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a daemon thread (port 0: disabled)."""
    if port:
        start_http_server(port)
