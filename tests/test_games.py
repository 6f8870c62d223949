"""OpenSpiel (Kuhn poker) and TextArena games as scenarios: the PettingZoo harness, and
200 games with random text replies (invalid ones too) giving exactly what the bare engine
gives for the same moves."""

from __future__ import annotations

import random

import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

REPLIES = ["Bet", "pass", "bet please", "[call]", "[fold]", "[check]", "[bet]", "[raise]", "[4]", "[0]", "[8]",
           "[cooperate]", "[defect]", "hello", "", "1", "0"]


def play_randomly(scenario, game: int, rng: random.Random):
    env = scenario.make_env(seed=game)
    env.reset(seed=game)
    while env.agents:
        (agent,) = env.model_agents()
        env.step({agent: rng.choice(REPLIES)})
    return env.episode()


# ----- OpenSpiel -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kuhn():
    pytest.importorskip("pyspiel")
    from multiagent_rl.games.openspiel import openspiel_scenario

    return openspiel_scenario("kuhn_poker")


def test_kuhn_poker_passes_the_pettingzoo_harness(kuhn):
    parallel_api_test(kuhn.make_env(seed=0), num_cycles=30)
    parallel_seed_test(lambda: kuhn.make_env(seed=0), num_cycles=30)


def test_200_random_kuhn_games_give_the_bare_engines_returns(kuhn):
    import pyspiel

    rng = random.Random(3)
    game = pyspiel.load_game("kuhn_poker")
    seen = {"forfeit": 0, "played": 0}
    for g in range(200):
        episode = play_randomly(kuhn, g, rng)
        end = next(e for e in episode.events if "result" in e)
        if end.get("forfeit"):
            seen["forfeit"] += 1
            assert episode.rewards[end["agent"]] == -1.0
            continue
        seen["played"] += 1
        bare = game.new_initial_state()
        for action in end["history"]:
            bare.apply_action(action)
        assert bare.is_terminal()
        assert episode.rewards == {f"player_{i}": r for i, r in enumerate(bare.returns())}
        moves = [e["move"] for e in episode.events if "move" in e]
        player_moves = [a for i, a in enumerate(end["history"]) if i >= 2]  # the deal: two chance actions
        assert moves == player_moves
    assert seen["forfeit"] and seen["played"]


# ----- TextArena -----------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["TicTacToe-v0", "KuhnPoker-v0"])
def test_200_random_textarena_games_give_the_bare_engines_rewards(env_id):
    textarena = pytest.importorskip("textarena")
    from multiagent_rl.games.textarena import own_random, textarena_scenario

    scenario = textarena_scenario(env_id)
    rng = random.Random(5)
    for g in range(200):
        random.seed(g)
        marker = random.random()
        random.seed(g)
        episode = play_randomly(scenario, g, rng)
        assert random.random() == marker  # TextArena reseeds `random`; the wrapper keeps ours as it was
        with own_random():
            bare = textarena.make(env_id=env_id)
            bare.reset(num_players=2, seed=int(episode.task.meta["seed"]))
            done = False
            for turn in episode.turns:
                assert not done
                done, _ = bare.step(turn.message.text)
            rewards, _ = bare.close() if done else ({}, {})
        if episode.truncated:
            continue
        assert done
        assert episode.rewards == {f"player_{int(p)}": float(r) for p, r in rewards.items()}


def test_a_textarena_game_passes_the_pettingzoo_harness():
    pytest.importorskip("textarena")
    from multiagent_rl.games.textarena import textarena_scenario

    scenario = textarena_scenario("TicTacToe-v0")
    parallel_api_test(scenario.make_env(seed=0), num_cycles=30)
    parallel_seed_test(lambda: scenario.make_env(seed=0), num_cycles=30)
