"""The observation and action spaces of a TeamEnv: text of any characters."""

from __future__ import annotations

from typing import Any

import gymnasium

MAX_ACTION_CHARS = 100_000  # what the action space samples up to; longer strings are still accepted
MAX_OBSERVATION_CHARS = 10_000_000


class TextSpace(gymnasium.spaces.Text):
    """gymnasium Text that accepts any Python string up to max_length, whatever its characters."""

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length
