"""Prometheus metrics of one gateway app (own registry, so several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .gateway_backend import JobEvent, WorkerInfo

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "orcd_gateway_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.errors = Counter(
            "orcd_gateway_errors", "errors by type (HTTP answers and job error events)", ["type"], registry=r
        )
        self.active_streams = Gauge("orcd_gateway_active_streams", "event streams being sent", registry=r)
        self.active_jobs = Gauge(
            "orcd_gateway_active_jobs", "jobs running on live workers (heartbeats)", ["model"], registry=r
        )
        self.queue_depth = Gauge(
            "orcd_gateway_queue_depth", "jobs waiting for a live worker (heartbeats)", ["model"], registry=r
        )
        self.live_workers = Gauge(
            "orcd_gateway_live_workers", "workers with a current heartbeat", ["model"], registry=r
        )
        self.ttft = Histogram(
            "orcd_gateway_ttft_seconds",
            "submit to first tokens event, seen by the gateway",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.job_duration = Histogram(
            "orcd_gateway_job_duration_seconds",
            "submit to done/error",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "orcd_gateway_tokens_generated", "tokens streamed to clients", ["model"], registry=r
        )

    def observe_workers(self, workers: list[WorkerInfo]) -> None:
        for gauge in (self.active_jobs, self.queue_depth, self.live_workers):
            gauge.clear()
        for w in workers:
            self.active_jobs.labels(w.model).inc(w.active)
            self.queue_depth.labels(w.model).inc(w.queued)
            self.live_workers.labels(w.model).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class JobTimer:
    """Per-job observer of a first stream: TTFT at the first tokens event, tokens as they pass,
    duration (and job errors by type) at the end."""

    def __init__(self, metrics: GatewayMetrics, model: str, submitted: float) -> None:
        self.metrics = metrics
        self.model = model
        self.submitted = submitted
        self.first_token = False

    def __call__(self, event: JobEvent) -> None:
        if event.type == "tokens":
            self.metrics.tokens.labels(self.model).inc(len(event.data.get("ids") or ()))
            if not self.first_token:
                self.metrics.ttft.labels(self.model).observe(time.perf_counter() - self.submitted)
            self.first_token = True
        elif event.type in ("done", "error"):
            self.metrics.job_duration.labels(self.model).observe(time.perf_counter() - self.submitted)
            if event.type == "error":
                self.metrics.errors.labels(f"job:{event.data.get('error_type', 'error')}").inc()
