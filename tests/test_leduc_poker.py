"""Leduc poker (scenarios/leduc_poker.py): the PettingZoo harness, games played through the
scenario give OpenSpiel's returns, the rendering says what the player knows (checked against
the history at every decision of the game tree) and nothing else, every information state is
one chat, an illegal reply forfeits, and a uniform policy read through us has OpenSpiel's
exploitability."""

from __future__ import annotations

import random

import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from multiagent_rl import ScenarioError, load_scenario

pyspiel = pytest.importorskip("pyspiel")  # the games extra
policy = pytest.importorskip("open_spiel.python.policy")
exploitability = pytest.importorskip("open_spiel.python.algorithms.exploitability")

from multiagent_rl.games.exploitability import decision_chats, exploitability_of  # noqa: E402
from multiagent_rl.games.openspiel import move_names  # noqa: E402
from scenarios.leduc_poker import render  # noqa: E402

GAME = "leduc_poker"
FOLD, CALL, RAISE = 0, 1, 2
JH, JS, QH, QS, KH, KS = range(6)  # OpenSpiel's cards: rank c // 2, suit c % 2
REPLIES = ["Call", "Raise", "Fold", "call", "raise please", "[fold]", "1", "2", "0", "check", "", "bet"]


@pytest.fixture(scope="module")
def game():
    return pyspiel.load_game(GAME)


@pytest.fixture(scope="module")
def selfplay():
    return load_scenario(GAME, opponent="model")


@pytest.fixture(scope="module")
def points(selfplay):
    return decision_chats(selfplay, GAME)  # raises if one information state showed two chats


def state_after(game, actions):
    state = game.new_initial_state()
    for action in actions:
        state.apply_action(action)
    return state


def legal_names(env) -> list[str]:
    state = env.view.state.state
    return list(move_names(state, state.current_player()).values())


def play(scenario, seed: int, replies) -> object:
    env = scenario.make_env(seed=seed)
    env.reset(seed=seed)
    while env.agents:
        (agent,) = env.model_agents()
        env.step({agent: replies(env)})
    return env.episode()


def test_leduc_poker_is_built_in_and_passes_the_pettingzoo_harness():
    scenario = load_scenario(GAME)
    assert scenario.openspiel_game == GAME and [a for a in scenario.agents if scenario.role(a).scripted] == ["player_1"]
    parallel_api_test(scenario.make_env(seed=0), num_cycles=30)
    parallel_seed_test(lambda: scenario.make_env(seed=0), num_cycles=30)


def test_a_bad_opponent_is_a_scenario_error():
    with pytest.raises(ScenarioError, match="leduc_poker: opponent='bogus'"):
        load_scenario(GAME, opponent="bogus")


@pytest.mark.parametrize("opponent", ["random", "model"])
def test_games_played_to_the_end_give_openspiels_returns(game, opponent):
    scenario = load_scenario(GAME, opponent=opponent)
    rng = random.Random(7)
    played = 0
    for seed in range(150):
        episode = play(scenario, seed, lambda env: rng.choice(legal_names(env) if rng.random() < 0.8 else REPLIES))
        end = episode.events[-1]
        if end.get("forfeit"):
            assert episode.rewards == {a: (-13.0 if a == end["agent"] else 13.0) for a in episode.rewards}
            continue
        played += 1
        bare = state_after(game, end["history"])
        assert bare.is_terminal() and not episode.truncated
        assert episode.rewards == {f"player_{i}": r for i, r in enumerate(bare.returns())}
        moves = [e["move"] for e in episode.events if "move" in e]
        assert moves == [a.action for a in bare.full_history() if a.player >= 0]
    assert played > 50


def test_the_longest_game_fits_in_max_turns(selfplay, game):
    # call, raise, raise, call in both rounds: 8 moves, 13 chips each, the most there is
    longest = iter(["Call", "Raise", "Raise", "Call"] * 2)
    episode = play(selfplay, 0, lambda env: next(longest))
    assert selfplay.max_turns == 8 == game.max_game_length()
    assert not episode.truncated and len(episode.turns) == 8
    assert sorted(abs(r) for r in episode.rewards.values()) in ([13.0, 13.0], [0.0, 0.0])


def test_hand_picked_states_render_card_board_bets_and_chips(game):
    start = state_after(game, [QH, KS])
    assert render(start, 0) == (
        "Your card: Queen of hearts. Board card: not dealt yet. Round 1 of 2. Round 1 bets: none yet. "
        "Chips in the pot: player_0 1, player_1 1."
    )
    facing = state_after(game, [QH, KS, CALL, RAISE])
    assert render(facing, 0) == (
        "Your card: Queen of hearts. Board card: not dealt yet. Round 1 of 2. Round 1 bets: player_0 called, "
        "player_1 raised. Chips in the pot: player_0 1, player_1 3. Calling costs you 2 chips."
    )
    river = state_after(game, [QH, KS, RAISE, RAISE, CALL, KH, RAISE])
    assert render(river, 1) == (
        "Your card: King of spades. Board card: King of hearts. Round 2 of 2. Round 1 bets: player_0 raised, "
        "player_1 raised, player_0 called. Round 2 bets: player_0 raised. Chips in the pot: player_0 9, "
        "player_1 5. Calling costs you 4 chips."
    )
    assert "Queen" not in render(river, 1) and "King of spades" not in render(river, 0)  # no peeking


def expected_render(state, player: int) -> str:
    """The rendering rebuilt from the state's full history (not its information state string)."""
    ranks, suits = ("Jack", "Queen", "King"), ("hearts", "spades")
    deals = [a.action for a in state.full_history() if a.player < 0]
    card = f"{ranks[deals[player] // 2]} of {suits[deals[player] % 2]}"
    chips, rounds, round_moves = [1, 1], [], []
    for a in state.full_history()[2:]:
        if a.player < 0:  # the board card: round 2 starts
            rounds.append(round_moves)
            round_moves = []
            continue
        size = 2 if not rounds else 4
        chips[a.player] = max(chips) + (size if a.action == RAISE else 0)
        round_moves.append(f"player_{a.player} {['folded', 'called', 'raised'][a.action]}")
    rounds.append(round_moves)
    text = f"Your card: {card}. "
    if len(deals) == 3:
        text += f"Board card: {ranks[deals[2] // 2]} of {suits[deals[2] % 2]}. Round 2 of 2. "
    else:
        text += "Board card: not dealt yet. Round 1 of 2. "
    for r, moves in enumerate(rounds, 1):
        text += f"Round {r} bets: {', '.join(moves) or 'none yet'}. "
    text += f"Chips in the pot: player_0 {chips[0]}, player_1 {chips[1]}."
    if chips[1 - player] > chips[player]:
        text += f" Calling costs you {chips[1 - player] - chips[player]} chips."
    return text


def test_every_decision_of_the_game_tree_renders_what_its_history_says(game):
    decisions = 0
    stack = [game.new_initial_state()]
    while stack:
        state = stack.pop()
        if state.is_terminal():
            continue
        if state.is_chance_node():
            stack += [state.child(a) for a, _ in state.chance_outcomes()]
            continue
        decisions += 1
        for player in (0, 1):  # the one to act, and the one waiting
            assert render(state, player) == expected_render(state, player), state.history()
        stack += [state.child(a) for a in state.legal_actions()]
    assert decisions > 936  # many histories per information state: the opponent's card differs


def test_every_information_state_is_one_chat_and_reached_in_self_play(points, game):
    assert len(points) == 936 == len(policy.TabularPolicy(game).state_lookup)
    assert len({point.chat[-1]["content"] for point in points}) == 936
    for point in points:
        assert [m["role"] for m in point.chat] == ["system", "user"]
        assert f"Legal moves: {', '.join(point.moves.values())}\n" in point.chat[1]["content"]
        assert set(point.moves.values()) <= {"Fold", "Call", "Raise"}


def test_an_illegal_reply_forfeits_at_the_worst_loss(selfplay):
    # Fold is no legal move before anyone raised: player_0 forfeits its first turn, at -13
    # (the most a legal game can lose), so junk is never cheaper than folding after raises
    episode = play(selfplay, 3, lambda env: "Fold")
    assert episode.rewards == {"player_0": -13.0, "player_1": 13.0}
    assert episode.events[-1]["forfeit"] and episode.events[-1]["invalid"] == "Fold"
    assert [t.valid for t in episode.turns] == [False]


def test_the_uniform_policys_exploitability_is_openspiels(points, game):
    uniform = {p.info_state: dict.fromkeys(p.moves, 1.0) for p in points}
    expected = exploitability.exploitability(game, policy.UniformRandomPolicy(game))
    assert exploitability_of(GAME, uniform) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(2.3736, abs=1e-4)
