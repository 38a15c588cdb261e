"""Celery workers, the runner, the Redis store, the scheduler and the traffic routers."""
