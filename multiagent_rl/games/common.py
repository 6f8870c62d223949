"""What every engine wrapper shares, and the one place a game engine becomes a Scenario
(`game_scenario`): one role per player (each its own team, scripted where a policy is
named), the table graph, seeded tasks, the engine's result written once as the episode's
final reward (`Outcome.result`) with its winner as the team answer; the forfeit rule for a reply that is no legal move; and
reading a move out of a reply (`discrete_move`).

A wrapper brings only what its engine decides: who moves (`turn_order`), what a player
sees (`observe`), what a reply does (`act`) and a fresh engine per episode (`init_state`).
"""

from __future__ import annotations

import importlib
import random
import re
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from ..errors import ScenarioError
from ..graph import MessageGraph, complete
from ..hooks import EpisodeView, Outcome
from ..records import Episode, Task
from ..scenario import Role, Scenario

GAMES_EXTRA = "pip install 'multiagent-rl[games]'"
Policy = Callable[[EpisodeView, str], str]


def engine_module(module: str, package: str, games: str) -> ModuleType:
    """Import a game engine of the `games` extra, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ScenarioError(f"{games} need {package}, which is not installed: {GAMES_EXTRA}") from exc


def seed_task(rng: random.Random) -> Task:
    """A task that is a seed for the engine; held-out games are seeds never seen in training."""
    seed = rng.randrange(2**31)
    return Task(key=f"seed-{seed}", prompt="", meta={"seed": seed})


def finished(outcome: Outcome, result: Mapping[str, float]) -> Outcome:
    """Mark `outcome` as the game's end: the result becomes the episode's final reward
    (`Outcome.result`), the winner the one agent with the best result, else "draw"."""
    result = {a: float(v) for a, v in result.items()}
    best = max(result.values())
    leaders = [a for a, v in result.items() if v == best]
    outcome.result = result
    outcome.winner = leaders[0] if len(leaders) == 1 else "draw"
    outcome.done = True
    return outcome


def forfeit(agents: Sequence[str], loser: str, text: str, loss: float = 1.0, gain: float | None = None) -> Outcome:
    """The end of a game lost by a reply that is no legal move: `-loss` for the player who
    wrote it, `gain` (default `loss`) for every other player. The defaults are the usual rule
    of board games, -1 and +1; a game with stakes makes a forfeit cost its worst loss, so a
    junk reply is never cheaper than a legal one (`openspiel_scenario`).

    >>> forfeit(["a", "b"], "a", "?").result, forfeit(["a", "b", "c"], "a", "?", loss=2, gain=1).result
    ({'a': -1.0, 'b': 1.0}, {'a': -2.0, 'b': 1.0, 'c': 1.0})
    """
    outcome = Outcome(valid=False, event={"invalid": text[:200], "forfeit": True})
    won = loss if gain is None else gain
    return finished(outcome, {a: (-loss if a == loser else won) for a in agents})


def discrete_move(text: str, legal: Sequence[int], names: Sequence[str] | None = None) -> int | None:
    """A legal move from a reply: its first word that is a legal move's name (when `names`
    are given, name i is action i; case does not matter), else its first integer that is a
    legal action's number. None: no legal move in it.

    >>> discrete_move("I play 4", [0, 4, 8]), discrete_move("bet!", [0, 1], ["Pass", "Bet"])
    (4, 1)
    """
    wanted = {names[i].lower(): i for i in legal} if names else {str(i): i for i in legal}
    for token in re.findall(r"[A-Za-z0-9_]+", text):
        key = token.lower() if names else (str(int(token)) if token.isdigit() else None)
        if key in wanted:
            return wanted[key]
    return None


def undecided_reward(agents: Sequence[str]):
    """The reward of a game that ends without a result (cut off at max_turns): 0 for everyone.
    A decided game's reward is its result, written by the move that ended it."""

    def reward(task: Task, episode: Episode) -> dict[str, float]:
        return dict.fromkeys(agents, 0.0)

    return reward


def winner(episode: Episode) -> str | None:
    """A game's team answer: the winning player, "draw", or None (cut off undecided)."""
    return episode.winner


def game_roles(
    agents: Sequence[str], default_prompt: str, system_prompts: Mapping[str, str] | None, scripted: Mapping | None
) -> list[Role]:
    """One role per engine player, each its own team; `default_prompt` may name `{agent}`;
    a player `scripted` names is played by that policy."""
    prompts, policies = dict(system_prompts or {}), dict(scripted or {})
    return [Role(a, prompts.get(a, default_prompt.format(agent=a)), team=a, policy=policies.get(a)) for a in agents]


def table_graph(agents: Sequence[str]) -> MessageGraph:
    """Moves reach the players through the engine's observations; the replies themselves go
    to every player too (a complete graph), as at a game table."""
    return complete(list(agents))


def game_scenario(
    name: str,
    agents: Sequence[str],
    *,
    init_state: Callable[[Task, random.Random], Any],
    turn_order: Callable[[EpisodeView], Sequence[str]],
    observe: Callable[[EpisodeView, str], str],
    act: Callable[[EpisodeView, str, str], Outcome | None],
    max_turns: int,
    default_prompt: str,
    description: str,
    scripted: Mapping[str, Policy] | None = None,
    system_prompts: Mapping[str, str] | None = None,
    max_new_tokens: int = 8,
    temperature: float = 1.0,
    train_defaults: Mapping[str, Any] | None = None,
    reference_players: Mapping[str, Policy] | None = None,
    openspiel_game: str | None = None,
    fork: Callable[[Any], Any] | None = None,
    legal_moves: Callable[[EpisodeView, str], Sequence[str]] | None = None,
) -> Scenario:
    """A game engine as a Scenario, the same way for every wrapper: the engine's players
    `agents` (each its own team; those `scripted` names are played by their policy), the
    table graph, each task a seed, the engine's result as the reward and its winner as the
    team answer; the hooks drive the engine. `default_prompt` may name `{agent}`; `fork` copies
    an episode's engine state for branched rollouts where a deep copy would not do;
    `legal_moves` lists the acting player's moves as replies (the exact move policy)."""
    agents = list(agents)
    unknown = [a for a in scripted or {} if a not in agents]
    if unknown:
        raise ScenarioError(f"{name}: scripted names {unknown}; the game's agents are {agents}")
    return Scenario(
        name=name,
        description=description,
        roles=game_roles(agents, default_prompt, system_prompts, scripted),
        graph=table_graph(agents),
        schedule=None,
        make_task=seed_task,
        reward=undecided_reward(agents),
        turn_order=turn_order,
        init_state=init_state,
        observe=observe,
        act=act,
        max_turns=max_turns,
        team_answer=winner,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        train_defaults=train_defaults,
        reference_players=reference_players,
        openspiel_game=openspiel_game,
        fork=fork,
        legal_moves=legal_moves,
    )
