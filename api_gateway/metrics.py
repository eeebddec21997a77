"""Prometheus metrics: request counts and latency per route template, plus state read at scrape.

Series (one registry per app, so several apps in one process never collide):
  apa_http_requests_total{method, route, status}            counter
  apa_http_request_duration_seconds{method, route, status}  histogram
  apa_submissions{status}                                   gauge, counted in the database per scrape
  apa_queue_depth{queue}                                    gauge, messages waiting in the broker
  apa_workers{queues, health}                               gauge, worker pool processes by health (heartbeats)
  apa_callback_deliveries{state}                            gauge, undelivered callbacks: pending, retrying, failed
  apa_callback_deliveries_failing                           gauge, callbacks whose last try failed (retrying + failed)
  apa_metrics_collect_errors{source}                        gauge, 1 when a source could not be read

`route` is the route template (`/v1/submissions/{submission_id}`), never the raw path, so the
label set stays bounded; requests that match no route count as `unmatched`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet.broker import queue_depth

if TYPE_CHECKING:
    from api_gateway.deps import Services

log = logging.getLogger(__name__)

QUEUES = ("score", "deliver", "train")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StateCollector:
    """Reads submission counts and queue depths when Prometheus scrapes, not on a timer."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        from db.queries import submission_counts

        errors = GaugeMetricFamily(
            "apa_metrics_collect_errors", "1 when a source could not be read at this scrape", labels=["source"]
        )
        subs = GaugeMetricFamily("apa_submissions", "Submissions by status (from the database)", labels=["status"])
        try:
            with self.services.sessions() as session:
                counts = submission_counts(session)
            for status, n in counts.items():
                subs.add_metric([status], n)
            errors.add_metric(["database"], 0)
        except Exception as exc:
            log.warning("metrics: cannot count submissions: %s", exc)
            errors.add_metric(["database"], 1)
        yield subs
        yield from self._deliveries(errors)

        depth = GaugeMetricFamily("apa_queue_depth", "Messages waiting in a broker queue", labels=["queue"])
        try:
            for queue in QUEUES:
                n = queue_depth(self.services.celery, queue)
                if n is not None:
                    depth.add_metric([queue], n)
            errors.add_metric(["broker"], 0)
        except Exception as exc:
            log.warning("metrics: cannot read queue depth: %s", exc)
            errors.add_metric(["broker"], 1)
        yield depth

        workers = GaugeMetricFamily("apa_workers", "Worker pool processes by health, from their heartbeats",
                                    labels=["queues", "health"])
        try:
            from api_gateway.worker_status import worker_statuses

            with self.services.sessions() as session:
                statuses = worker_statuses(session, self.services.settings)
            counts: dict[tuple[str, str], int] = {}
            for w in statuses:
                for health in ("healthy", "unhealthy"):
                    counts.setdefault((w.queues, health), 0)
                counts[(w.queues, "healthy" if w.healthy else "unhealthy")] += 1
            for (queues, health), n in sorted(counts.items()):
                workers.add_metric([queues, health], n)
            errors.add_metric(["workers"], 0)
        except Exception as exc:
            log.warning("metrics: cannot read worker heartbeats: %s", exc)
            errors.add_metric(["workers"], 1)
        yield workers
        yield errors


    def _deliveries(self, errors: GaugeMetricFamily) -> Iterable[Metric]:
        """Failing LMS callbacks, counted in the database (the workers that try them are elsewhere)."""
        from db.results import delivery_counts

        by_state = GaugeMetricFamily("apa_callback_deliveries", "Result callbacks not delivered, by state "
                                     "(retrying: the last try failed; failed: given up)", labels=["state"])
        failing = GaugeMetricFamily("apa_callback_deliveries_failing",
                                    "Result callbacks whose last try failed (retrying + failed)")
        try:
            with self.services.sessions() as session:
                counts = delivery_counts(session)
            for state, n in counts.items():
                by_state.add_metric([state], n)
            failing.add_metric([], counts["retrying"] + counts["failed"])
            errors.add_metric(["deliveries"], 0)
        except Exception as exc:
            log.warning("metrics: cannot count callback deliveries: %s", exc)
            errors.add_metric(["deliveries"], 1)
        yield by_state
        yield failing


class GatewayMetrics:
    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "apa_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "apa_http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(StateCollector(services))


def route_template(scope: Scope) -> str:
    """The matched route's path template; plain Starlette routes (docs, openapi) are looked up."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
    return getattr(route, "path", None) or "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware: times every HTTP request and labels it by its route template."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = route_template(scope)
            labels = (scope.get("method", ""), template, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)
