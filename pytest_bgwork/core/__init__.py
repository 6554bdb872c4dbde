"""The core: virtual time and everything a simulation is made of below its services.

``clock`` and ``loop`` (virtual time), ``wallclock`` (freezegun-driven wall clock),
``history`` (events, timeline, digest), ``choices`` (seeded or Hypothesis-drawn
decisions), ``context`` (current simulation and queue attempt), ``errors``, ``faults``
(the fault injector), ``effects`` (the effect ledger) and ``kernel``, the narrow face of
a simulation that services receive.

May import: the standard library and freezegun/httpx lazily. Never imports
``services``, ``checking``, ``adapters``, ``simulation`` or the plugin, nor pytest.
"""
