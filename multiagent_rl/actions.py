"""An agent's action and what the env keeps of it: the typed `Action` the rollout hands to
`TeamEnv.step` (text plus the generation's facts), text made storable, the answer parsed
from it, and the numbers a scenario's `act` hook may give as rewards.

>>> Action(text="<answer>4</answer>", adapter="solver", completion_ids=[19, 2]).text
'<answer>4</answer>'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ScenarioError


@dataclass(frozen=True)
class Action:
    """What a model did in its turn, as the rollout hands it to `TeamEnv.step`: the text and
    the generation's facts, kept on the turn. A plain string is an action too (no facts)."""

    text: str
    adapter: str | None = None  # None: the base model played it
    prompt_ids: tuple[int, ...] | list[int] = ()
    completion_ids: tuple[int, ...] | list[int] = ()
    logprobs: tuple[float, ...] | list[float] = ()  # the sampler's, per completion token
    finish_reason: str | None = None
    temperature: float = 1.0


def clean_text(value: Any, limit: int) -> tuple[str, bool]:
    """Any action as storable text: non-strings become '', lone surrogates are replaced
    (msgpack and tokenizers need valid UTF-8), and text beyond `limit` is cut."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > limit:
        return text[:limit], True
    return text, False


def safe_parse(parse: Callable[[str], Any], text: str) -> str | None:
    # A scenario's parser must not be able to crash the env on hostile text.
    try:
        answer = parse(text)
    except Exception:
        return None
    return answer if answer is None else str(answer)[:500]


def generation_facts(action: Any, cut: bool, declared_adapter: str | None) -> dict[str, Any]:
    """The turn's generation facts: from an `Action`, as the rollout gave them; for plain text
    (or a scripted role's reply), the adapter the scenario declares for the role (None for a
    scripted role): nobody else can say who played it."""
    facts: dict[str, Any] = {"finish_reason": "cut" if cut else None}
    if not isinstance(action, Action):
        return {**facts, "adapter": declared_adapter}
    return {
        "adapter": action.adapter, "prompt_tokens": len(action.prompt_ids), "completion_tokens": len(action.completion_ids),
        "finish_reason": facts["finish_reason"] or action.finish_reason,
    }


def finite_number(value: Any) -> float | None:
    """`value` as a finite float, or None where it is not a finite number (a string, None, NaN)."""
    if not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def checked_rewards(given: Any, agents: Sequence[str], what: str) -> dict[str, float]:
    """An `act` hook's rewards (or result) as {agent: float}; a ScenarioError naming the
    first that is not a finite number for a known agent."""
    if not isinstance(given, Mapping):
        raise ScenarioError(f"act gave {what} {given!r}; expected {{agent: number}}")
    checked = {}
    for agent, value in given.items():
        number = finite_number(value)
        if agent not in agents or number is None:
            raise ScenarioError(f"act gave {what} {value!r} to {agent!r}; rewards are finite numbers, for known agents")
        checked[agent] = number
    return checked
