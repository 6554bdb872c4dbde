"""The CPython and asyncio internals the virtual loop reads, each in one place, each gated.

The loop's fast path (skipping a service call's no-op ``yield``) asks three questions whose
answers only CPython's internals give cheaply. Each function below answers from the
internal on the versions it was checked on (CPython 3.11 and 3.13; ``CHECKED``), and
otherwise takes a fallback that is always correct but may be slower: the fast path is not
taken, the call ``yield``s as plain asyncio code does.
"""

from __future__ import annotations

import asyncio
import opcode
import operator
import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["CHECKED", "await_opcode", "cancel_requested", "cancel_requested_getter",
           "current_task_getter", "handle_run_code", "is_awaiting"]

#: The CPython versions these readings were checked on (3.11 and 3.13; 3.12 lies between:
#: same ``SEND`` opcode, same ``_must_cancel`` and ``_current_tasks``). Other versions and
#: other implementations get the fallbacks.
CHECKED = sys.implementation.name == "cpython" and (3, 11) <= sys.version_info[:2] <= (3, 13)



def await_opcode(checked: bool = CHECKED) -> int:
    """The opcode at ``f_lasti`` of a running frame that awaits: ``SEND`` (``await`` and
    ``yield from`` delegate through it). The loop compares it inline, on every service call.

    Checked on 3.11 and 3.13 (``f_lasti`` is a byte offset into the unspecialised
    ``co_code``). Fallback (another version, no ``SEND``): -1, which no byte equals, so no
    frame counts as awaiting and the caller yields.
    """
    return opcode.opmap.get("SEND", -1) if checked else -1


def current_task_getter(checked: bool = CHECKED) -> Callable[[Any], asyncio.Task[Any] | None]:
    """A function loop -> the task the loop is stepping.

    Checked on 3.11 and 3.13: ``asyncio.tasks._current_tasks`` is the dict asyncio's own
    ``current_task`` reads (C and Python tasks both keep it); its ``get`` skips a call and a
    ``get_running_loop``. Fallback (missing, or another version, where 3.14 keeps the
    current task elsewhere): ``asyncio.current_task``.
    """
    table = getattr(asyncio.tasks, "_current_tasks", None) if checked else None
    if isinstance(table, dict):
        return table.get
    return asyncio.current_task


def cancel_requested(task: asyncio.Task[Any]) -> bool:
    """Whether ``task.cancel()`` was called and the task has not yet been stepped to raise it.

    Checked on 3.11 and 3.13: ``Task._must_cancel`` (C and Python tasks). Fallback (the
    field missing): True, so the caller assumes a cancellation may be pending and yields.
    """
    return bool(getattr(task, "_must_cancel", True))


def cancel_requested_getter(checked: bool = CHECKED) -> Callable[[asyncio.Task[Any]], bool]:
    """``cancel_requested`` for the loop's every service call: on the checked versions,
    ``operator.attrgetter("_must_cancel")`` (no Python frame; it raises ``AttributeError``
    for a task without the field, which the loop reads as "may be pending"). Fallback
    (another version): ``cancel_requested`` itself.
    """
    return operator.attrgetter("_must_cancel") if checked else cancel_requested


def is_awaiting(frame: types.FrameType, checked: bool = CHECKED) -> bool:
    """Whether a running ``frame`` is suspended in an ``await`` (delegating to the frame below).

    The instruction at ``f_lasti`` is ``await_opcode()`` (checked on 3.11 and 3.13).
    Fallback: False, so the caller cannot prove the yield reaches the loop and yields.
    """
    send = await_opcode(checked)
    code = frame.f_code.co_code
    lasti = frame.f_lasti
    return send >= 0 and 0 <= lasti < len(code) and code[lasti] == send


def handle_run_code(checked: bool = CHECKED) -> types.CodeType | None:
    """The code of ``asyncio.Handle._run``: the frame a task's coroutine runs under when the
    loop itself steps it (its coroutine frame's ``f_back``).

    Checked on 3.11 and 3.13 (Python and C tasks alike are stepped from that Python method).
    Fallback (another version, or the method not Python code): None, which matches no frame,
    so the caller yields.
    """
    run = getattr(getattr(asyncio, "Handle", None), "_run", None)
    code = getattr(run, "__code__", None)
    return code if checked and isinstance(code, types.CodeType) else None
