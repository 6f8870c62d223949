"""The declaration error every layer may raise, kept below them all so that none of them
imports `scenario.py` only to name it (env.py, rewards.py, registry.py, the game wrappers)."""

from __future__ import annotations


class ScenarioError(ValueError):
    """A scenario declaration or its output is invalid; the message names the problem."""
