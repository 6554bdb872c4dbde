"""A module imported for the first time inside a simulation sees the real ``datetime``
classes (as if imported before it), while its clock reads stay virtual.

Libraries that build schemas from annotations at import (pydantic here) cannot handle
freezegun's ``FakeDatetime``; which test imports a module first must not decide whether it
works (under xdist that order differs from run to run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pytest_bgwork

#: The copy of pytest_bgwork under test, for the subprocesses (not whatever is installed).
_ROOT = str(Path(pytest_bgwork.__file__).resolve().parent.parent)


@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])))


MODELS = """
from datetime import date, datetime
import datetime as dt

from pydantic import BaseModel


class Order(BaseModel):
    id: str
    created: datetime
    day: date
    seen: list[dt.datetime] = []


def stamp():
    return datetime.now()


def stamp_by_module():
    return dt.datetime.now()
"""

#: An app that built a pydantic model before the test (pydantic's schema tables loaded).
WARM = """
import datetime

import pydantic


class Warm(pydantic.BaseModel):
    at: datetime.datetime
    day: datetime.date
"""

TESTS = """
import datetime
import sys

import pytest


def test_first_import_inside_a_simulation(bgwork):
    assert "orders_models" not in sys.modules
    import orders_models

    async def main():
        await bgwork.advance(90)
        return orders_models.Order(id="o1", created=datetime.datetime.now(),
                                   day=datetime.date.today(), seen=[orders_models.stamp()])

    order = bgwork.run(main())
    # the module's clock reads are virtual: 2026-01-01T00:01:30Z
    assert order.created == datetime.datetime(2026, 1, 1, 0, 1, 30)
    assert orders_models.stamp() == orders_models.stamp_by_module() == order.created
    assert order.model_dump()["day"] == datetime.date(2026, 1, 1)
    assert orders_models.Order.model_validate_json(order.model_dump_json()) == order


def test_after_the_simulation_the_module_sees_real_classes_and_time():
    import orders_models

    assert orders_models.datetime is datetime.datetime
    assert orders_models.stamp().year >= 2026
    assert type(orders_models.stamp()) is datetime.datetime
    order = orders_models.Order(id="o2", created=orders_models.stamp(), day=datetime.date.today())
    assert order.id == "o2"


def test_a_second_simulation_reads_virtual_time_through_the_module(bgwork):
    import orders_models

    assert orders_models.stamp() == datetime.datetime(2026, 1, 1)
"""


@pytest.mark.parametrize("pydantic_first", ["before", "inside"])
def test_a_pydantic_module_imported_first_inside_a_simulation_works(
    pytester: pytest.Pytester, pydantic_first: str,
) -> None:
    pytester.makepyfile(orders_models=MODELS)
    pytester.makeconftest(WARM if pydantic_first == "before" else "")
    pytester.makepyfile(test_orders=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly",
                                           "-p", "no:xdist")
    result.assert_outcomes(passed=3)


def test_the_taskiq_adapter_imported_first_inside_a_test_works(pytester: pytest.Pytester) -> None:
    pytest.importorskip("taskiq")
    pytester.makeconftest(WARM)
    pytester.makepyfile("""
        import sys

        def test_first(bgwork):
            assert "taskiq" not in sys.modules
            from pytest_bgwork.adapters.taskiq import SimBroker

            broker = SimBroker(bgwork)

            @broker.task
            async def job(x):
                return x

            async def main():
                task = await job.kiq(1)
                await bgwork.run_until_idle()
                return (await task.wait_result()).return_value

            assert bgwork.run(main()) == 1
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly",
                                           "-p", "no:xdist")
    result.assert_outcomes(passed=1)
