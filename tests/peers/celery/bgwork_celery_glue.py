"""Glue that runs Celery's own ``t/integration/test_tasks.py`` on ``adapters.celery`` (a plugin).

Celery's integration suite expects a broker, a result backend and a session worker
(``celery_session_worker``). This plugin replaces that worker with nothing (the
simulation is the worker, with one pool process as ``start_worker`` has) and installs
the test's app on the test's simulation (``adapters.celery.install``): ``bgwork://``
broker; the suite's ``redis://`` result backend is Celery's own, on ``adapters.redis``.
Tests keep their ``.get(timeout=...)`` calls: from a sync test they run the simulation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import celery.contrib.pytest as celery_pytest
import pytest

import pytest_bgwork as bg
from pytest_bgwork.adapters import celery as bc


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app: Any, celery_includes: Any, celery_class_tasks: Any) -> Iterator[None]:
    """No worker: the app is set up for one (logging), its tasks imported and registered;
    the simulation delivers them."""
    from celery.contrib.testing.worker import WORKER_LOGLEVEL, setup_app_for_worker

    setup_app_for_worker(celery_session_app, WORKER_LOGLEVEL, None)
    for module in celery_includes:
        celery_session_app.loader.import_task_module(module)
    for class_task in celery_class_tasks:
        celery_session_app.register_task(class_task)
    yield None


# the suite's conftest imports this fixture from celery.contrib.pytest: replace it first
celery_pytest.celery_session_worker = celery_session_worker  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _bgwork_celery(request: pytest.FixtureRequest, bgwork: bg.Simulation) -> Iterator[None]:
    """Each test's app (``app``, Celery's ``celery_app``) on the test's simulation."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    bc.reset()
    with bc.install(bgwork, app, concurrency=1):  # start_worker's pool: one process
        yield
    bc.reset()
