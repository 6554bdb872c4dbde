"""Judging a simulation: checks, exploration, replay and chaos mode.

``checks`` (the ``bg.assert_*`` helpers), ``explore`` (the Hypothesis explorer),
``replay`` (replay tokens and seeded choices), ``chaos`` (``--bgwork-chaos`` modes).
The public strategies live in ``pytest_bgwork.strategies`` (a public import path).

May import: ``core``, ``services``, ``simulation``, ``strategies``, Hypothesis. Never
imports the plugin or pytest.
"""
