"""Celery workers (segment, classify, assemble queues) arrive with the service issue (#5).

This package will import the core package (`karyoflow`) and never the reverse."""
