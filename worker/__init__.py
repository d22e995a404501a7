"""Celery workers: run queued jobs' training in a spawned child, with leases, heartbeats, cancel and recovery."""
