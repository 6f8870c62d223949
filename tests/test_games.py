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
        end = episode.events[-1]  # the move that ended the game (a forfeit or the last move)
        assert [e.term for e in episode.final] == ["result", "result"]  # the result, written once
        if end.get("forfeit"):
            seen["forfeit"] += 1
            # the game's worst loss (min_utility), the other player its opposite
            assert episode.rewards == {a: (-2.0 if a == end["agent"] else 2.0) for a in episode.rewards}
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


# ----- the package and its wrappers --------------------------------------------------------------
def test_the_package_exports_all_three_wrappers_and_imports_without_the_games_extra(monkeypatch):
    import importlib
    import sys

    for module in ("pyspiel", "textarena"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it fails
    for name in [m for m in sys.modules if m == "multiagent_rl.games" or m.startswith("multiagent_rl.games.")]:
        monkeypatch.delitem(sys.modules, name)
    games = importlib.import_module("multiagent_rl.games")
    from multiagent_rl.games import aec_scenario, openspiel_scenario, textarena_scenario  # noqa: F401

    assert {"aec_scenario", "openspiel_scenario", "textarena_scenario", "discrete_move"} <= set(games.__all__)


@pytest.mark.parametrize(("wrapper", "engine", "game"), [
    ("openspiel_scenario", "pyspiel", "kuhn_poker"), ("textarena_scenario", "textarena", "TicTacToe-v0"),
])
def test_a_missing_games_extra_is_one_scenario_error_naming_the_install_command(monkeypatch, wrapper, engine, game):
    import sys

    import multiagent_rl.games as games
    from multiagent_rl import ScenarioError

    monkeypatch.setitem(sys.modules, engine, None)
    with pytest.raises(ScenarioError, match=r"not installed: pip install 'multiagent-rl\[games\]'") as info:
        getattr(games, wrapper)(game)
    assert "\n" not in str(info.value)


def test_an_unknown_openspiel_game_is_a_scenario_error():
    pytest.importorskip("pyspiel")
    from multiagent_rl import ScenarioError
    from multiagent_rl.games import openspiel_scenario

    with pytest.raises(ScenarioError, match="unknown OpenSpiel game 'no_such_game'"):
        openspiel_scenario("no_such_game")


def test_scripted_names_must_be_players_in_every_wrapper():
    from pettingzoo.classic import tictactoe_v3

    from multiagent_rl import ScenarioError
    from multiagent_rl.games import aec_scenario, game_scenario

    with pytest.raises(ScenarioError, match=r"scripted names \['nobody'\]"):
        aec_scenario("ttt", tictactoe_v3.env, scripted={"nobody": lambda view, agent: "1"})
    with pytest.raises(ScenarioError, match=r"scripted names \['nobody'\]"):
        game_scenario("g", ["a", "b"], init_state=None, turn_order=None, observe=None, act=None, max_turns=3,
                      default_prompt="", description="", scripted={"nobody": lambda view, agent: "1"})


class CountingEngine:
    """A PettingZoo tic-tac-toe factory that counts the engines it builds and their resets."""

    def __init__(self):
        from pettingzoo.classic.tictactoe import tictactoe

        self.make, self.built, self.resets = tictactoe.env, 0, 0

    def __call__(self):
        self.built += 1
        env = self.make()
        reset = env.reset

        def counted_reset(*args, **kwargs):
            self.resets += 1
            return reset(*args, **kwargs)

        env.reset = counted_reset
        return env


def test_declaring_a_pettingzoo_game_starts_no_engine():
    from multiagent_rl.games import aec_scenario

    engine = CountingEngine()
    scenario = aec_scenario("ttt", engine, agents=["player_1", "player_2"], max_turns=9)
    assert (engine.built, engine.resets) == (0, 0)  # the players and max_turns given: nothing to probe
    scenario.make_env(seed=0).reset(seed=0)
    assert (engine.built, engine.resets) == (1, 1)  # the episode's own engine


def test_without_its_players_a_pettingzoo_game_is_read_from_an_engine_never_reset():
    from multiagent_rl.games import aec_scenario

    engine = CountingEngine()
    scenario = aec_scenario("ttt", engine)
    assert (engine.built, engine.resets) == (1, 0)
    assert scenario.agents == ["player_1", "player_2"] and scenario.max_turns == 4 * 18


def test_players_declared_wrongly_are_named_when_the_engine_starts():
    from pettingzoo.classic import tictactoe_v3

    from multiagent_rl import ScenarioError
    from multiagent_rl.games import aec_scenario

    scenario = aec_scenario("ttt", tictactoe_v3.env, agents=["x", "o"], max_turns=9)
    with pytest.raises(ScenarioError, match=r"engine's agents are \['player_1', 'player_2'\], declared \['x', 'o'\]"):
        scenario.make_env(seed=0).reset(seed=0)


def test_the_tictactoe_scenario_is_declared_without_an_engine(monkeypatch):
    from pettingzoo.classic.tictactoe import tictactoe

    from multiagent_rl import load_scenario

    engine = CountingEngine()
    monkeypatch.setattr(tictactoe, "env", engine)  # what `pettingzoo.classic.tictactoe_v3` re-exports
    scenario = load_scenario("tictactoe")
    assert engine.built == 0
    scenario.make_env(seed=0).reset(seed=0)
    assert engine.built == 1


def test_a_forfeit_is_the_same_rule_in_every_wrapper():
    from multiagent_rl.games.common import forfeit

    outcome = forfeit(["a", "b", "c"], "b", "x" * 500)
    assert outcome.done and not outcome.valid and outcome.winner == "draw"  # two players share the win
    assert outcome.event == {"invalid": "x" * 200, "forfeit": True}
    assert outcome.result == {"a": 1.0, "b": -1.0, "c": 1.0}
    assert forfeit(["a", "b"], "a", "?").winner == "b"
    staked = forfeit(["a", "b", "c"], "a", "?", loss=4.0, gain=2.0)  # a game with stakes: zero-sum
    assert staked.result == {"a": -4.0, "b": 2.0, "c": 2.0} and staked.winner == "draw"


@pytest.mark.parametrize(("game", "loss"), [("kuhn_poker", 2.0), ("leduc_poker", 13.0),
                                            ("kuhn_poker(players=3)", 2.0)])
def test_an_openspiel_forfeit_costs_the_games_worst_loss(game, loss):
    # Folding after raises costs Leduc up to 7 chips: a forfeit at -1 would make junk the cheaper reply.
    pytest.importorskip("pyspiel")
    from multiagent_rl.games.openspiel import openspiel_scenario

    env = openspiel_scenario(game).make_env(seed=0)
    env.reset(seed=0)
    (agent,) = env.model_agents()
    env.step({agent: "no move at all"})
    episode = env.episode()
    others = [a for a in episode.rewards if a != agent]
    assert episode.rewards == {agent: -loss, **{a: loss / len(others) for a in others}}
    assert sum(episode.rewards.values()) == 0.0 and episode.events[-1]["forfeit"]
