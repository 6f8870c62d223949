"""TextArena games as scenarios (`pip install "multiagent-rl[games]"`: textarena==0.7.4).

TextArena's games are text already: the engine gives each player its observation and
takes a reply as the move; its own rules judge invalid moves (most give an error
allowance, then the game is lost). Agents are `player_0`, `player_1`, ... (each its own
team). TextArena reseeds Python's global `random` in `reset` (and uses it in play): every
engine call here runs with the caller's `random` state saved and restored, so the
framework's own streams stay reproducible.

>>> ipd = textarena_scenario("IteratedPrisonersDilemma-v0")                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..hooks import EpisodeView, Outcome
from ..records import Task
from ..scenario import Scenario
from .common import Policy, engine_module, finished, game_scenario


@contextlib.contextmanager
def own_random():
    """Run TextArena code without letting it move Python's global `random` for anyone else."""
    saved = random.getstate()
    try:
        yield
    finally:
        random.setstate(saved)


@dataclass
class ArenaState:
    env: Any
    player: int = 0
    observation: str = ""
    done: bool = False
    engine_random: Any = None  # the global-random state TextArena left itself, restored on each call
    info: dict = field(default_factory=dict)


def _call(state: ArenaState, fn, *args):
    """Call the engine under its own random state (it reseeded `random` in reset)."""
    with own_random():
        if state.engine_random is not None:
            random.setstate(state.engine_random)
        out = fn(*args)
        state.engine_random = random.getstate()
    return out


def textarena_scenario(
    env_id: str,
    *,
    num_players: int = 2,
    scripted: Mapping[str, Policy] | None = None,
    system_prompts: Mapping[str, str] | None = None,
    max_turns: int = 100,
    max_new_tokens: int = 24,
    name: str | None = None,
    train_defaults: Mapping[str, Any] | None = None,
) -> Scenario:
    """A TextArena game as a scenario; the engine's rewards at the end are the episode's."""
    textarena = engine_module("textarena", "textarena", "TextArena games")
    agents = [f"player_{i}" for i in range(num_players)]

    def init_state(task: Task, rng: random.Random) -> ArenaState:
        with own_random():
            env = textarena.make(env_id=env_id)
        state = ArenaState(env)
        _call(state, env.reset, num_players, int(task.meta["seed"]))
        state.player, state.observation = _call(state, env.get_observation)
        return state

    def turn_order(view: EpisodeView) -> list[str]:
        s: ArenaState = view.state
        return [] if s.done else [agents[s.player]]

    def observe(view: EpisodeView, agent: str) -> str:
        return str(view.state.observation)

    def act(view: EpisodeView, agent: str, text: str) -> Outcome:
        s: ArenaState = view.state
        s.done, s.info = _call(s, s.env.step, text)
        outcome = Outcome(event={"agent": agent, "move": text[:200]})
        if s.done:
            rewards, game_info = _call(s, s.env.close)
            result = {agents[int(p)]: float(r) for p, r in (rewards or {}).items()}
            outcome.event["game_info"] = _plain(game_info)
            return finished(outcome, {a: result.get(a, 0.0) for a in agents})
        s.player, s.observation = _call(s, s.env.get_observation)
        return outcome

    return game_scenario(
        name or env_id,
        agents,
        init_state=init_state,
        turn_order=turn_order,
        observe=observe,
        act=act,
        max_turns=max_turns,
        default_prompt="You are {agent} in a game. Follow the game's instructions exactly.",
        description=f"the TextArena game {env_id}",
        scripted=scripted,
        system_prompts=system_prompts,
        max_new_tokens=max_new_tokens,
        train_defaults=train_defaults,
    )


def _plain(value: Any) -> Any:
    """Engine info as plain data for the log (msgpack): dicts, lists, strings, numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
