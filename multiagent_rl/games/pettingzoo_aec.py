"""Any PettingZoo AEC environment as a scenario: the engine decides whose turn it is
(`agent_selection`), what each player sees (`observe`), which moves are legal (the
action mask) and when the game is over and who won (terminations, rewards).

>>> from pettingzoo.classic import tictactoe_v3
>>> game = aec_scenario("my_tictactoe", tictactoe_v3.env,
...                     scripted={"player_2": random_legal_move})   # doctest: +SKIP

Each task is a seed (the engine is reset with it), so held-out games are seeded games never
seen in training. A model's reply is parsed into a move (`parse`, default: a legal move's
name or number, see `discrete_move`); a reply that is no legal move follows `invalid`:
"forfeit" (the player loses: the usual rule of board games), "penalty" (`penalty` is taken
off and a random legal move is played for it) or "retry" (the same player again, up to
`retries` times, each with the penalty, then forfeit). Nothing a model writes reaches the
engine unless it is a legal move. `legal_move_reward` pays each legal move (a per-turn
reward): a model that forfeits every game learns nothing from outcomes that are all -1.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ScenarioError
from ..hooks import EpisodeView, Outcome
from ..records import Task
from ..scenario import Scenario
from .common import Policy, discrete_move, finished, forfeit, game_scenario

INVALID_RULES = ("forfeit", "penalty", "retry")


@dataclass
class GameState:
    """One episode's engine and what the wrapper tracks beside it."""

    env: Any
    retries: int = 0
    forfeited: str | None = None
    moves: list[tuple[str, int]] = field(default_factory=list)
    totals: dict[str, float] = field(default_factory=dict)  # the engine's rewards, summed over its steps

    def over(self) -> bool:
        env = self.env
        return self.forfeited is not None or not env.agents or all(
            env.terminations.get(a, False) or env.truncations.get(a, False) for a in env.agents
        )


def legal_moves(env, agent: str) -> list[int]:
    """The legal actions of `agent` now, from the observation's action mask (else every action)."""
    observation = env.observe(agent)
    mask = observation.get("action_mask") if isinstance(observation, Mapping) else None
    if mask is None:  # some bindings put the mask in the info dict
        mask = (getattr(env, "infos", {}) or {}).get(agent, {}).get("action_mask")
    if mask is None:
        return list(range(env.action_space(agent).n))
    return [i for i, ok in enumerate(mask) if ok]


def random_legal_move(view: EpisodeView, agent: str, names: Sequence[str] | None = None) -> str:
    """A scripted player: a uniformly random legal move, drawn from the episode's rng."""
    state: GameState = view.state
    move = view.rng.choice(legal_moves(state.env, agent))
    return names[move] if names else str(move)


def engine_players(make_env: Callable[[], Any]) -> tuple[list[str], int]:
    """The players of the engine `make_env()` and how many actions they have in all, read
    from a new engine that is never reset or played: PettingZoo declares both when it
    builds an environment (`possible_agents`, `action_space`)."""
    env = make_env()
    try:
        agents = list(env.possible_agents)
        return agents, sum(int(getattr(env.action_space(a), "n", 1)) for a in agents)
    finally:
        env.close()


def aec_scenario(
    name: str,
    make_env: Callable[[], Any],
    *,
    agents: Sequence[str] | None = None,
    render: Callable[[Any, str], str] | None = None,
    move_names: Sequence[str] | None = None,
    parse: Callable[[str, Sequence[int]], int | None] | None = None,
    scripted: Mapping[str, Policy] | None = None,
    system_prompts: Mapping[str, str] | None = None,
    invalid: str = "forfeit",
    penalty: float = 0.1,
    retries: int = 2,
    legal_move_reward: float = 0.0,
    max_new_tokens: int = 8,
    max_turns: int | None = None,
    temperature: float = 1.0,
    description: str = "",
    train_defaults: Mapping[str, Any] | None = None,
    reference_players: Mapping[str, Policy] | None = None,
) -> Scenario:
    """A scenario over the AEC environment `make_env()`: one role per engine agent (each its
    own team), scripted roles where `scripted` names a policy, the engine's rewards as the
    episode's rewards (a forfeit: -1 for the forfeiting player, +1 for the others).

    `agents` (the engine's `possible_agents`) and `max_turns` given, declaring builds no
    engine; else one is built (never reset) to read its players and their actions
    (`max_turns` defaults to 4 x all their actions: a safety net, games end long before).
    """
    if invalid not in INVALID_RULES:
        raise ScenarioError(f"{name}: invalid={invalid!r}; use one of {INVALID_RULES}")
    for option, value in (("penalty", penalty), ("legal_move_reward", legal_move_reward)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ScenarioError(f"{name}: {option} must be a finite number, got {value!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ScenarioError(f"{name}: retries must be an int >= 0, got {retries!r}")
    if agents is None or max_turns is None:
        players, actions = engine_players(make_env)
        agents = players if agents is None else agents
        max_turns = 4 * actions if max_turns is None else max_turns
    agents = list(agents)
    render = render or default_render
    parse = parse or (lambda text, legal: discrete_move(text, legal, move_names))

    def init_state(task: Task, rng: random.Random) -> GameState:
        env = make_env()
        if set(env.possible_agents) != set(agents):
            raise ScenarioError(f"{name}: the engine's agents are {list(env.possible_agents)}, declared {agents}")
        env.reset(seed=int(task.meta["seed"]))
        return GameState(env)

    def turn_order(view: EpisodeView) -> list[str]:
        state: GameState = view.state
        return [] if state.over() else [state.env.agent_selection]

    def listed_moves(view: EpisodeView, agent: str) -> list[str]:
        legal = legal_moves(view.state.env, agent)
        return [move_names[i] for i in legal] if move_names else [str(i) for i in legal]

    def observe(view: EpisodeView, agent: str) -> str:
        shown = listed_moves(view, agent)
        return f"{render(view.state.env, agent)}\nLegal moves: {', '.join(shown)}\nReply with one legal move."

    def act(view: EpisodeView, agent: str, text: str) -> Outcome:
        state: GameState = view.state
        legal = legal_moves(state.env, agent)
        move = parse(text, legal)
        if move is not None and move not in legal:
            move = None  # a parser may return anything: only a legal move reaches the engine
        valid = move is not None
        if not valid:
            if invalid == "forfeit" or (invalid == "retry" and state.retries >= retries):
                state.forfeited = agent
                return forfeit(agents, agent, text)
            if invalid == "retry":
                state.retries += 1
                return Outcome(reward=-penalty, valid=False, event={"invalid": text[:200], "retry": state.retries})
            move = view.rng.choice(legal)  # penalty: a random legal move is played for it
        reward = legal_move_reward if valid else -penalty
        state.retries = 0
        state.env.step(move)
        state.moves.append((agent, move))
        for a, value in state.env.rewards.items():
            state.totals[a] = state.totals.get(a, 0.0) + float(value)
        # Named apart from the result: shaping pays for form, and a schedule may anneal it away.
        outcome = Outcome(reward=reward, valid=valid, term="legal_move" if valid else "penalty",
                          event={"agent": agent, "move": move, "name": move_names[move] if move_names else str(move)})
        return finished(outcome, {a: state.totals.get(a, 0.0) for a in agents}) if state.over() else outcome

    return game_scenario(
        name,
        agents,
        init_state=init_state,
        turn_order=turn_order,
        observe=observe,
        act=act,
        max_turns=int(max_turns) * (retries + 1 if invalid == "retry" else 1),
        default_prompt=f"You play {name} as {{agent}}. Reply with one legal move.",
        description=description or f"the PettingZoo game {name}: the engine decides turns, legality and the winner",
        scripted=scripted,
        system_prompts=system_prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        train_defaults=train_defaults,
        reference_players=reference_players,
        legal_moves=listed_moves,
    )


def default_render(env, agent: str) -> str:
    """A generic text view of an AEC observation."""
    observation = env.observe(agent)
    if isinstance(observation, Mapping):
        observation = observation.get("observation", observation)
    tolist = getattr(observation, "tolist", None)
    return f"You are {agent}. Observation: {tolist() if tolist else observation}"
