"""examples/take_away.py, the game written on the run-time hooks by hand (docs/games.md): the
PettingZoo harness, games played to the end with the right winner, the forfeit rule, the
reference players, and forked game states. No model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from multiagent_rl import Scenario, ScenarioError, Task, load_scenario

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "take_away.py"


def take_away(**options) -> Scenario:
    return load_scenario(f"{EXAMPLE}:make_scenario", **options)


def game(scenario: Scenario, stones: int, seed: int = 0):
    env = scenario.make_env(seed=0)
    env.reset(seed=0, options={"task": Task(key=f"{stones}-{seed}", prompt="", meta={"stones": stones, "seed": seed})})
    return env


def play(env, replies):
    """Each model turn says the next reply (scripted players move by themselves)."""
    replies = iter(replies)
    while env.agents:
        env.step({agent: next(replies) for agent in env.model_agents()})
    return env.episode()


@pytest.mark.parametrize("options", [{}, {"opponent": "model"}, {"opponent": "perfect"}])
def test_passes_the_pettingzoo_harness(options):
    parallel_api_test(take_away(**options).make_env(seed=0), num_cycles=30)
    parallel_seed_test(lambda: take_away(**options).make_env(seed=0), num_cycles=30)


def test_both_spellings_load_from_the_file():
    assert load_scenario(f"{EXAMPLE}:take_away").model_agents == ["first"]
    assert take_away(opponent="model").model_agents == ["first", "second"]
    with pytest.raises(ScenarioError, match="opponent='nobody'"):
        take_away(opponent="nobody")


def test_self_play_ends_with_the_player_who_takes_the_last_stone():
    episode = play(game(take_away(opponent="model"), stones=7), ["3", "I take 1", "<answer>3</answer>"])
    assert [(e["agent"], e["move"], e["left"]) for e in episode.events] == [("first", 3, 4), ("second", 1, 3), ("first", 3, 0)]
    assert episode.winner == "first" and not episode.truncated
    assert [(e.agent, e.value, e.term) for e in episode.final] == [("first", 1.0, "result"), ("second", -1.0, "result")]
    assert episode.returns() == {"first": pytest.approx(1.2), "second": pytest.approx(-0.9)}  # result + 0.1 per legal move
    assert [t.observation for t in episode.turns][1].startswith("first took 3. The pile has 4 stones.")


def test_the_perfect_player_wins_from_a_multiple_of_four():
    for first_moves in (["1", "1"], ["3", "2"], ["2", "3"]):
        episode = play(game(take_away(opponent="perfect"), stones=8), first_moves)
        assert episode.winner == "second" and episode.returns()["first"] == pytest.approx(-1.0 + 0.2)
        assert [t.scripted for t in episode.turns] == [False, True, False, True]


def test_an_illegal_move_forfeits():
    for reply in ["4", "three", "", "3"]:  # "3" is illegal with 2 stones left
        env = game(take_away(), stones=2)
        episode = play(env, [reply])
        assert episode.winner == "second" and len(episode.turns) == 1
        assert not episode.turns[0].valid and episode.turns[0].trainable
        assert episode.returns() == {"first": -1.0, "second": 1.0}


def test_group_samples_of_one_task_meet_the_same_random_opponent():
    games = [play(game(take_away(), stones=20, seed=5), ["1"] * 20) for _ in range(2)]
    assert games[0].events == games[1].events
    other = play(game(take_away(), stones=20, seed=6), ["1"] * 20)
    assert other.events != games[0].events


def test_the_state_forks_into_independent_games():
    env = game(take_away(opponent="model"), stones=9)
    env.step({"first": "1"})
    branch = env.fork(seed=1)
    branch.step({"second": "3"})
    env.step({"second": "2"})
    assert env.view.state.stones == 6 and branch.view.state.stones == 5
    assert [t.message.text for t in branch.turns] == ["1", "3"] and [t.message.text for t in env.turns] == ["1", "2"]


def test_the_script_plays_one_game():
    out = subprocess.run([sys.executable, str(EXAMPLE)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "winner: first" in out.stdout
