"""The simulated services, one module each, built on the core's kernel.

``queues`` (public API) over ``delivery`` (the engine: attempts, visibility, retries,
dead letters) and ``http`` (ASGI and URL destinations); ``kv``, ``streams``,
``runtime`` (waitUntil), ``task_manager``, ``schedules``, ``webhooks``, ``tasks``.

May import: ``pytest_bgwork.core`` and each other. Never imports pytest, the plugin,
``simulation``, ``checking`` or ``adapters``: a service receives a ``Kernel``.
"""
