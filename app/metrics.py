"""Prometheus metrics FinGate exposes at /metrics (one registry per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "fingate_requests_total",
    "HTTP requests served, by path, method and status.",
    ["path", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "fingate_graphql_seconds",
    "GraphQL request latency by operation type.",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
ERRORS = Counter("fingate_graphql_errors_total", "GraphQL errors by extensions.code.", ["code"], registry=REGISTRY)
MONGO_COMMANDS = Counter(
    "fingate_mongo_commands_total", "Database commands sent, by command name.", ["command"], registry=REGISTRY
)
