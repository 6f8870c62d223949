"""OpenSpiel games as scenarios, played on `pyspiel` directly.

The issue asked for Shimmy's PettingZoo binding; with shimmy 2.0.1 and open-spiel 2.0.2
(what PyPI installs here) that binding does not advance `agent_selection` after a move:
in Kuhn poker, after player 0 bets (state "1 0 b", player 1 to act) it still names
player 0, with an all-zero action mask, and the game ends with no returns. So the engine
is driven here through the scenario hooks: OpenSpiel decides whose turn it is
(`current_player`), what each player knows (`information_state_string`), the legal moves
and their names (`action_to_string`) and the returns; chance nodes are sampled from the
episode's rng, so a seed fixes the deal.

A reply that is no legal move forfeits, and a forfeit costs the game's worst loss
(`game.min_utility()`: Kuhn poker 2 chips, Leduc 13), shared out zero-sum among the other
players: were it the board-game -1, junk would be cheaper than folding after raises (Leduc:
a fold can cost 7 chips), and a model could learn to reply junk.

    pip install "multiagent-rl[games]"       # open-spiel

>>> kuhn = openspiel_scenario("kuhn_poker", scripted={"player_1": random_action})   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ScenarioError
from ..hooks import EpisodeView, Outcome
from ..records import Task
from ..scenario import Scenario
from .common import Policy, discrete_move, engine_module, finished, forfeit, game_scenario


@dataclass
class SpielState:
    state: Any  # a pyspiel.State
    rng: random.Random
    forfeited: str | None = None


def _advance_chance(game_state: SpielState) -> None:
    """Play every chance node (a deal, a die) with the episode's rng."""
    state = game_state.state
    while state.is_chance_node():
        outcomes, probs = zip(*state.chance_outcomes(), strict=True)
        state.apply_action(game_state.rng.choices(outcomes, weights=probs)[0])


def move_names(state, player: int) -> dict[int, str]:
    return {a: state.action_to_string(player, a) for a in state.legal_actions(player)}


def random_action(view: EpisodeView, agent: str) -> str:
    """A scripted player: a uniformly random legal action, by name."""
    state = view.state.state
    names = move_names(state, state.current_player())
    return names[view.rng.choice(sorted(names))]


# What exploitability reads for a seat this player takes: each legal move equally likely.
random_action.move_probabilities = lambda names: [1.0 / len(names)] * len(names)


def openspiel_scenario(
    game_name: str,
    *,
    scripted: Mapping[str, Policy] | None = None,
    system_prompts: Mapping[str, str] | None = None,
    max_turns: int = 50,
    max_new_tokens: int = 6,
    name: str | None = None,
    train_defaults: Mapping[str, Any] | None = None,
    render: Callable[[Any, int], str] | None = None,
    description: str | None = None,
    reference_players: Mapping[str, Policy] | None = None,
) -> Scenario:
    """A sequential OpenSpiel game as a scenario: agents `player_0`, `player_1`, ... (each
    its own team), replies parsed into a legal move by name ("Bet") or number; a reply that
    is no legal move forfeits: the game's worst loss for that player (`game.min_utility()`,
    Kuhn poker -2, Leduc -13), its opposite shared equally by the others (two players: +2,
    +13). `render(state, player)` says in words what the player knows (default: OpenSpiel's
    information state string)."""
    pyspiel = engine_module("pyspiel", "open-spiel", "OpenSpiel games")
    try:  # the game's definition (players, rules); a game's state is made per episode
        game = pyspiel.load_game(game_name)
    except pyspiel.SpielError as exc:
        raise ScenarioError(f"unknown OpenSpiel game {game_name!r}; pyspiel.registered_names() lists them") from exc
    if game.get_type().dynamics != pyspiel.GameType.Dynamics.SEQUENTIAL:
        raise ScenarioError(f"{game_name}: only sequential (turn-taking) games are supported")
    agents = [f"player_{i}" for i in range(game.num_players())]
    # Never cheaper than the worst legal play (the module docstring says why); at least the
    # board-game 1 for a game whose worst result is no loss.
    forfeit_loss = max(-game.min_utility(), 1.0)

    def init_state(task: Task, rng: random.Random) -> SpielState:
        state = SpielState(game.new_initial_state(), random.Random(int(task.meta["seed"])))
        _advance_chance(state)
        return state

    def fork(s: SpielState) -> SpielState:
        # OpenSpiel's own copy of a game state; the deal's rng is copied with it.
        return SpielState(s.state.clone(), copy.deepcopy(s.rng), s.forfeited)

    def turn_order(view: EpisodeView) -> list[str]:
        s: SpielState = view.state
        return [] if s.forfeited or s.state.is_terminal() else [agents[s.state.current_player()]]

    def observe(view: EpisodeView, agent: str) -> str:
        state = view.state.state
        player = agents.index(agent)
        names = move_names(state, player)
        known = render(state, player) if render is not None else f"What you know: {state.information_state_string(player)}"
        return (f"You are {agent} in {game_name}. {known}\n"
                f"Legal moves: {', '.join(names.values())}\nReply with one legal move.")

    def legal_moves(view: EpisodeView, agent: str) -> list[str]:
        return list(move_names(view.state.state, agents.index(agent)).values())

    def act(view: EpisodeView, agent: str, text: str) -> Outcome:
        s: SpielState = view.state
        player = agents.index(agent)
        names = move_names(s.state, player)
        legal = sorted(names)
        move = discrete_move(text, legal, [names.get(i, "") for i in range(max(legal) + 1)])
        if move is None:
            s.forfeited = agent
            return forfeit(agents, agent, text, loss=forfeit_loss, gain=forfeit_loss / max(len(agents) - 1, 1))
        s.state.apply_action(move)
        _advance_chance(s)
        outcome = Outcome(event={"agent": agent, "move": move, "name": names[move]})
        if s.state.is_terminal():
            outcome.event["history"] = list(s.state.history())  # every action, chance ones too: replayable
            return finished(outcome, dict(zip(agents, s.state.returns(), strict=True)))
        return outcome

    return game_scenario(
        name or game_name,
        agents,
        init_state=init_state,
        turn_order=turn_order,
        observe=observe,
        act=act,
        max_turns=max_turns,
        default_prompt=f"You play {game_name} as {{agent}}. Reply with one legal move.",
        description=description or f"the OpenSpiel game {game_name}",
        scripted=scripted,
        system_prompts=system_prompts,
        max_new_tokens=max_new_tokens,
        train_defaults=train_defaults,
        reference_players={"random": random_action, **(reference_players or {})},
        openspiel_game=game_name,
        fork=fork,
        legal_moves=legal_moves,
    )
