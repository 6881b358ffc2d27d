"""A worker's Prometheus metrics: what the scheduler and service record, and the port that serves them.

Each `WorkerMetrics` has its own registry (a process may hold several workers, e.g. in tests) and is
served by `serve(port)` (prometheus-client's `start_http_server`; `orcd worker --metrics-port`).
The scheduler records at the points where it already calls a job's sink; the service records jobs it
ends before they reach the scheduler (a rejected job, one cancelled while still in Redis).

Every job that leaves a worker is counted once in ``orcd_worker_jobs_finished_total{reason}``:
``stop``, ``length``, ``cancelled``, or ``error`` (then also ``orcd_worker_errors_total{type}``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

TTFT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOK_S_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
STEP_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class WorkerMetrics:
    """The counters, gauges and histograms of one worker."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.jobs_started = Counter("orcd_worker_jobs_started", "jobs admitted into the batch", registry=r)
        self.jobs_finished = Counter("orcd_worker_jobs_finished", "jobs ended, by finish reason",
                                     ["reason"], registry=r)
        self.errors = Counter("orcd_worker_errors", "jobs ended with an error, by error type", ["type"],
                              registry=r)
        self.active = Gauge("orcd_worker_active_jobs", "jobs in the batch (decoding)", registry=r)
        self.queued = Gauge("orcd_worker_queued_jobs", "jobs taken, waiting for a batch slot", registry=r)
        self.tokens = Counter("orcd_worker_tokens_generated", "completion tokens generated", registry=r)
        self.ttft = Histogram("orcd_worker_ttft_seconds", "submitted → first token", registry=r,
                              buckets=TTFT_BUCKETS_S)
        self.decode_tok_s = Histogram("orcd_worker_decode_tokens_per_second",
                                      "per job: tokens after the first per second", registry=r,
                                      buckets=TOK_S_BUCKETS)
        self.kv_slots = Gauge("orcd_worker_kv_slots_in_use", "engine KV slots held by jobs", registry=r)
        self.step_seconds = Histogram("orcd_worker_engine_step_seconds", "one engine call, by phase",
                                      ["phase"], registry=r, buckets=STEP_BUCKETS_S)

    def started(self) -> None:
        self.jobs_started.inc()

    def finished(self, reason: str) -> None:
        self.jobs_finished.labels(reason=reason).inc()

    def failed(self, error_type: str) -> None:
        self.jobs_finished.labels(reason="error").inc()
        self.errors.labels(type=error_type).inc()

    def token(self) -> None:
        self.tokens.inc()

    def first_token(self, ttft_s: float) -> None:
        self.ttft.observe(ttft_s)

    def decode_rate(self, tok_s: float) -> None:
        self.decode_tok_s.observe(tok_s)

    def engine_step(self, phase: str, seconds: float) -> None:
        self.step_seconds.labels(phase=phase).observe(seconds)

    def load(self, *, active: int, queued: int, kv_slots: int) -> None:
        """The batch's state at the end of a scheduler turn."""
        self.active.set(active)
        self.queued.set(queued)
        self.kv_slots.set(kv_slots)

    def serve(self, port: int, addr: str = "0.0.0.0"):
        """Serve ``/metrics`` on `port` (0: a free one) in a daemon thread; the server (``.server_port``,
        ``.shutdown()``)."""
        server, _thread = start_http_server(port, addr, registry=self.registry)
        return server
