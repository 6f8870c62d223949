"""The scripted tic-tac-toe reference players: the minimax player never loses (to the random
player in either seat, and draws against itself), takes a win and blocks a loss; games are
played through the scenario's TeamEnv, each seat's reply written by the policy chosen."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pettingzoo.classic import tictactoe_v3

from multiagent_rl import ScenarioError
from multiagent_rl.games import GameState
from scenarios.tictactoe import (
    OPPONENTS,
    REFERENCE_PLAYERS,
    best_cell,
    make_scenario,
    minimax_value,
    perfect_move,
    random_move,
)


def play(players: dict, game: int, scenario=None) -> str:
    """One game with every seat played by the policy `players` names; the winner or "draw"."""
    scenario = scenario or make_scenario(opponent="model")
    env = scenario.make_env(seed=game)
    env.reset(seed=game)
    while env.agents:
        (agent,) = env.model_agents()
        turns = env.advance({agent: players[agent](env.view, agent)})
        assert all(t.valid for t in turns)  # a scripted player only plays legal moves
    assert not env.truncated and env.result is not None
    return env.winner


@pytest.mark.parametrize("perfect_seat", ["player_1", "player_2"])
def test_the_perfect_player_never_loses_200_games_against_the_random_player(perfect_seat):
    scenario = make_scenario(opponent="model")
    random_seat = "player_2" if perfect_seat == "player_1" else "player_1"
    players = {perfect_seat: perfect_move, random_seat: random_move}
    winners = [play(players, game, scenario) for game in range(200)]
    assert random_seat not in winners
    assert winners.count(perfect_seat) > 100  # it also wins most games: it is no mere blocker


def test_the_perfect_player_draws_against_itself():
    scenario = make_scenario(opponent="model")
    both = dict.fromkeys(["player_1", "player_2"], perfect_move)
    assert {play(both, game, scenario) for game in range(5)} == {"draw"}  # deterministic: one game, replayed
    assert minimax_value((0,) * 9) == 0


def position(cells: list[int]) -> tuple[SimpleNamespace, str]:
    """An EpisodeView-like view of the engine after these actions, and the player to move."""
    env = tictactoe_v3.env()
    env.reset(seed=0)
    for cell in cells:
        env.step(cell)
    return SimpleNamespace(state=GameState(env)), env.agent_selection


def test_the_perfect_player_takes_an_immediate_win():
    # X: 0, 1 (row 0 open at 2); O: 3, 4 (row 1 open at 5); X to move wins at 2, not block at 5.
    view, agent = position([0, 3, 1, 4])
    assert (agent, perfect_move(view, agent)) == ("player_1", "3")


def test_the_perfect_player_blocks_an_immediate_loss():
    # X: 0, 1 (threatens 2); O to move must block at 2.
    view, agent = position([0, 4, 1])
    assert (agent, perfect_move(view, agent)) == ("player_2", "3")
    # X: 4, 8 (centre, corner), O: 0; an edge now loses to a fork, a corner holds the draw.
    view, agent = position([4, 0, 8])
    assert (agent, perfect_move(view, agent)) == ("player_2", "3")  # cell 2: the lower of 2 and 6


def test_the_quickest_win_is_preferred_and_ties_go_to_the_lowest_cell():
    mine, theirs = 1, 2
    # Two ways to win now (2 and 6): the lowest cell; a slower win elsewhere is not chosen.
    board = (mine, mine, 0, mine, theirs, theirs, 0, theirs, 0)
    assert best_cell(board) == 2
    assert best_cell((0,) * 9) == 0  # every opening draws: the lowest cell


def test_the_scenario_offers_the_reference_players_as_opponents():
    assert OPPONENTS == ("random", "perfect", "model")
    assert REFERENCE_PLAYERS == {"random": random_move, "perfect": perfect_move}
    scenario = make_scenario(opponent="perfect")
    assert scenario.role("player_2").policy is perfect_move and not scenario.role("player_1").scripted
    # The model (X) plays the random player's moves against the scripted perfect O: O never loses.
    winners = [play({"player_1": random_move}, game, scenario) for game in range(30)]
    assert "player_1" not in winners
    with pytest.raises(ScenarioError, match="use one of random, perfect, model"):
        make_scenario(opponent="bogus")
