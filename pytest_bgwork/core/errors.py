"""Exceptions raised by pytest-bgwork: each names what went wrong and how to fix it."""

from __future__ import annotations


class BgworkError(Exception):
    """Base class for every error pytest-bgwork raises on purpose."""


class Deadlock(BgworkError):
    """Nothing can run, no timer is pending, yet tasks are still waiting."""


class Stalled(BgworkError):
    """``run_until_idle`` passed its ``max_time`` while work was still pending."""


class RuntimeShuttingDown(BgworkError):
    """``wait_until`` was called after the runtime's shutdown began."""


class StreamClosed(BgworkError):
    """A write reached a durable stream that was already closed."""


class UnmockedRequest(BgworkError):
    """An outbound request inside a simulation that no mock, ASGI app or adapter answered."""

    def __init__(self, method: str, url: str) -> None:
        self.method = method
        """The refused request's method, e.g. ``"POST"``."""
        self.url = url
        """The refused request's URL."""
        super().__init__(
            f"{method} {url}: an outbound request inside a simulation that no respx route, ASGI "
            "destination or adapter answered; nothing was sent. Mock it (respx), route it to an "
            "in-process app, or let it through with @pytest.mark.bgwork(allow_network=True) / "
            "Simulation(allow_network=True)."
        )

    def __reduce__(self) -> tuple[type[UnmockedRequest], tuple[str, str]]:
        return (type(self), (self.method, self.url))


class NotRunning(BgworkError):
    """A simulation API that needs the virtual loop was used outside it."""


class CheckFailed(AssertionError):
    """A bgwork check failed: the message says what was expected and what happened."""


class ProcessCrashed(BaseException):
    """An injected crash: the worker process died at this point.

    It derives from ``BaseException`` so ``except Exception`` in user code does not
    swallow it; the simulation never lets it reach user code that is still observed.
    """


class LeftoverWorkWarning(UserWarning):
    """A test ended with background work still running; it was cancelled at teardown."""


class UnusedFaultRuleWarning(UserWarning):
    """A fault rule the test added never fired (a typo, or a path the test never took).

    Reported at teardown, as respx reports routes never called; a failure under
    ``@pytest.mark.bgwork(strict=True)``.
    """


class UnsupportedFeature(BgworkError, NotImplementedError):
    """An adapter was asked for something of its client library that it does not simulate.

    The message names the call and what to do instead; every adapter raises this one class
    (``adapters.celery.UnsupportedFeature``, ``adapters.sqs.UnsupportedOperation`` and
    ``adapters.agentuity.NotSimulated`` are other names for it).
    """

