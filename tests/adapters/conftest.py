"""The task-framework fixtures, until plugin.py registers them (importing registers them)."""

from pytest_bgwork.adapters._task_fixtures import bg_celery, bg_dramatiq, bg_taskiq

__all__ = ["bg_celery", "bg_dramatiq", "bg_taskiq"]
