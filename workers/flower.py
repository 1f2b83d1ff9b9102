"""Flower with every page behind its authentication: `celery -A workers.flower flower`.

Flower asks for credentials (`FLOWER_BASIC_AUTH`, given in the environment so that no password
shows in the process table) on its pages and API, but serves `/metrics` (every task's name,
every worker) and `/healthcheck` to anyone; here those ask too. Prometheus scrapes Flower's
`/metrics` with `basic_auth`."""

from __future__ import annotations

from flower.views import monitor
from tornado.web import authenticated

from workers.app import app

for handler in (monitor.Metrics, monitor.Healthcheck):
    handler.get = authenticated(handler.get)

__all__ = ["app"]
