"""negotiation's rules: the forgiving parser, deals and their payoffs, no deal, malformed
replies, what each side is shown, the winner a league counts, zero-sum and advisors."""

from __future__ import annotations

import pytest

from multiagent_rl import Episode, Task, load_scenario
from multiagent_rl.league import outcome_score
from scenarios.negotiation import ACCEPT, REFUSE, Bargain, bargain, parse_reply

TEAMS = {"red_negotiator": "red", "blue_negotiator": "blue"}


def trade(cost: int = 2, value: int = 8) -> Task:
    return Task(key=f"lamp|cost {cost}|value {value}", prompt="Red sells a lamp to blue.",
                meta={"item": "lamp", "cost": cost, "value": value})


def negotiate(replies: list[str], task: Task | None = None, **options) -> Episode:
    """Red and blue say replies[k] in the k-th turn, until the episode ends (advisors, with
    team_size=2, say "accept")."""
    scenario = load_scenario("negotiation", **{"format_bonus": 0.0, **options})
    env = scenario.make_env(seed=0)
    env.reset(seed=0, options={"task": task or trade()})
    replies = list(replies)
    while env.agents:
        env.step({a: "accept" if a.endswith("advisor") else replies.pop(0) for a in env.acting_agents()})
    return env.episode()


def shown(scenario, replies: list[str], agent: str, task: Task | None = None) -> str:
    """What `agent` is shown in its turn after `replies`."""
    env = scenario.make_env(seed=0)
    env.reset(seed=0, options={"task": task or trade()})
    for reply in replies:
        env.step({a: reply for a in env.acting_agents()})
    assert env.acting_agents() == [agent]
    return env.chat(agent)[-1]["content"]


@pytest.mark.parametrize(("text", "parsed"), [
    ("accept", ACCEPT), ("Accept.", ACCEPT), ("Yes, 6 is fine", ACCEPT), ("OK", ACCEPT), ("Deal!", ACCEPT),
    ("I agree", ACCEPT), ("7", "7"), ("I'd say 7 coins", "7"), ("The price of the lamp is 10", "10"),
    ("price 007", "7"), ("6 is fine, yes", "6"), ("No deal", REFUSE), ("I don't accept", REFUSE),
    ("I won\u2019t", REFUSE), ("You cannot accept 4", REFUSE), ("", None), ("To solve this problem", None),
    ("12345", None), (None, None), (42, None),
])
def test_the_first_accept_word_refusal_or_number_decides(text, parsed):
    assert parse_reply(text) == parsed


def test_bargain_rules():
    assert bargain([("red", "8"), ("blue", ACCEPT)]).price == 8
    assert bargain([("red", "8"), ("blue", "5"), ("red", ACCEPT)]).price == 5
    assert bargain([("red", "8"), ("blue", "8")]).price == 8  # naming the other side's price agrees
    assert bargain([("red", "8"), ("blue", REFUSE), ("red", ACCEPT)]).price is None  # not its own price
    no_offer = bargain([("red", ACCEPT), ("blue", "11"), ("red", None)])
    assert no_offer == Bargain(valid=(False, False, False))
    standing = bargain([("red", "8"), ("blue", REFUSE), ("red", "7")])
    assert (standing.price, standing.standing, standing.offered_by, standing.valid) == (None, 7, "red", (True,) * 3)


def test_an_accepted_offer_is_a_deal_paying_each_side_its_gain():
    episode = negotiate(["7", "accept"], trade(cost=2, value=8))
    assert [t.agent for t in episode.turns] == ["red_negotiator", "blue_negotiator"]  # ended at once
    assert episode.team_answer == "deal at 7"
    assert episode.rewards == pytest.approx({"red_negotiator": 0.5, "blue_negotiator": 0.1})
    assert episode.winner == "red"


def test_red_can_take_blues_counter_offer_in_the_last_turn():
    episode = negotiate(["9", "Too much. 4", "ok"], trade(cost=2, value=8))
    assert episode.team_answer == "deal at 4"
    assert episode.rewards == pytest.approx({"red_negotiator": 0.2, "blue_negotiator": 0.4})
    assert episode.winner == "blue"


def test_a_deal_outside_the_values_costs_the_side_that_took_it():
    episode = negotiate(["10", "Accept"], trade(cost=2, value=8))
    assert episode.rewards == pytest.approx({"red_negotiator": 0.8, "blue_negotiator": -0.2})


@pytest.mark.parametrize("replies", [
    ["9", "3", "no"],  # each counters, red refuses in the last turn
    ["9", "no", "accept"],  # red cannot accept its own price
    ["I am sorry", "accept", "To solve this"],  # nothing to accept
    ["42", "accept", "5"],  # a price above 10 is no offer
])
def test_no_deal_pays_nothing_and_is_a_draw(replies):
    episode = negotiate(replies)
    assert len(episode.turns) == 3
    assert episode.team_answer is None
    assert episode.rewards == {"red_negotiator": 0.0, "blue_negotiator": 0.0}
    assert episode.winner == "draw"


def test_a_malformed_reply_counts_as_refusing_and_is_marked_invalid():
    episode = negotiate(["8", "Hmm, let me think", "accept"], trade())
    assert [t.valid for t in episode.turns] == [True, False, False]  # red's own price is not its to accept
    assert episode.team_answer is None
    episode = negotiate(["8", "Hmm, let me think", "7", "accept"], trade(), turns=4)
    assert [t.valid for t in episode.turns] == [True, False, True, True]  # red's price stood; it may lower it
    assert episode.team_answer == "deal at 7"


def test_the_format_term_pays_each_side_its_share_of_well_formed_turns():
    episode = negotiate(["8", "Hmm", "no"], trade(), format_bonus=0.1)
    assert episode.rewards == pytest.approx({"red_negotiator": 0.1, "blue_negotiator": 0.0})
    assert {line.term for line in episode.final} == {"deal_value", "format"}


def test_each_side_sees_its_own_value_the_price_it_faces_and_what_accepting_earns():
    scenario = load_scenario("negotiation")
    task = trade(cost=1, value=6)
    assert shown(scenario, [], "red_negotiator", task) == (
        "Your lamp cost you 1 coin.\nAnswer with a price from 0 to 10:"
    )
    blue = shown(scenario, ["9"], "blue_negotiator", task)
    assert blue == "The lamp is worth 6 coins to you. The seller asks 9. Accept and you lose 3.\nAnswer accept or a price:"
    assert "cost" not in blue  # red's cost is red's own
    assert shown(scenario, ["9", "4"], "red_negotiator", task) == (
        "Your lamp cost you 1 coin. The buyer offers 4. Accept and you earn 3.\nLast turn. Answer accept or a price:"
    )
    assert shown(scenario, ["9", "no"], "red_negotiator", task) == (
        "Your lamp cost you 1 coin. The buyer did not take your price of 9.\nLast turn. "
        "Answer with a price from 0 to 10:"
    )
    assert shown(scenario, ["um"], "blue_negotiator", task).endswith("The seller named no price.\nAnswer with a price from 0 to 10:")


def test_a_league_counts_the_larger_gain_as_the_win_and_leaves_the_format_term_out():
    shaping = ["format"]
    won = negotiate(["7", "accept"], trade(cost=2, value=8), format_bonus=0.1)
    assert outcome_score(won, "red", TEAMS, shaping) == 1.0 and outcome_score(won, "blue", TEAMS, shaping) == 0.0
    middle = negotiate(["5", "accept"], trade(cost=2, value=8), format_bonus=0.1)
    assert middle.winner == "draw" and outcome_score(middle, "red", TEAMS, shaping) == 0.5
    # Without a deal the side that wrote better-formed replies still does not win.
    none = negotiate(["7", "hmm", "no"], trade(), format_bonus=0.1)
    assert none.rewards["red_negotiator"] > none.rewards["blue_negotiator"]
    assert outcome_score(none, "red", TEAMS, shaping) == outcome_score(none, "red", TEAMS, []) == 0.5


@pytest.mark.parametrize("team_size", [1, 2])
def test_zero_sum_rewards_sum_to_zero_and_favour_the_larger_gain(team_size):
    for replies in (["7", "accept"], ["3", "accept"], ["9", "no", "no"], ["x", "y", "z"]):
        episode = negotiate(replies, trade(cost=2, value=8), mode="zero_sum", team_size=team_size)
        assert sum(episode.rewards.values()) == pytest.approx(0.0, abs=1e-9)
    episode = negotiate(["7", "accept"], trade(cost=2, value=8), mode="zero_sum")
    assert episode.rewards == pytest.approx({"red_negotiator": 0.2, "blue_negotiator": -0.2})


def test_advisors_speak_first_and_only_their_negotiator_hears_them():
    scenario = load_scenario("negotiation", team_size=2)
    assert [r.team for r in scenario.roles] == ["red", "blue", "red", "blue"]
    env = scenario.make_env(seed=0)
    env.reset(seed=0, options={"task": trade(cost=2, value=8)})
    env.step({"red_advisor": "Ask 9."})
    assert env.chat("red_negotiator")[-1]["content"].endswith("\nYour advisor says: Ask 9.")
    env.step({"red_negotiator": "9"})
    assert "advisor" not in env.chat("blue_advisor")[-1]["content"]  # the other side's advice is unseen
    assert env.chat("blue_advisor")[-1]["content"].startswith("The lamp is worth 8 coins to you. The seller asks 9.")
    env.step({"blue_advisor": "Say 5."})
    env.step({"blue_negotiator": "5"})
    for turn in env.turns:
        if turn.agent.endswith("advisor"):
            assert turn.message.receivers == [turn.agent.replace("advisor", "negotiator")]
    assert [t.message.answer for t in env.turns] == ["9", "9", "5", "5"]


def test_tasks_hide_each_sides_value_and_always_leave_room_for_a_deal():
    scenario = load_scenario("negotiation")
    tasks = scenario.heldout_tasks(50, seed=0)
    assert all(t.meta["cost"] < t.meta["value"] for t in tasks)
    assert all(not t.private and str(t.meta["value"]) not in t.prompt for t in tasks)
