"""negotiation's rules: the forgiving parser, deals and their payoffs, no deal, walking
away and malformed replies, what each side is shown, the winner a league counts,
zero-sum and advisors."""

from __future__ import annotations

import pytest

from multiagent_rl import Episode, Task, load_scenario
from multiagent_rl.league import outcome_score
from scenarios.negotiation import ACCEPT, REFUSE, Bargain, bargain, parse_reply

TEAMS = {"red_negotiator": "red", "blue_negotiator": "blue"}


def trade(cost: int = 2, value: int = 8, market: int = 7) -> Task:
    return Task(key=f"lamp|cost {cost}|value {value}|market {market}", prompt="Red sells a lamp to blue.",
                meta={"item": "lamp", "cost": cost, "value": value, "market": market})


def negotiate(replies: list[str], task: Task | None = None, **options) -> Episode:
    """Red and blue say replies[k] in the k-th turn until the episode ends (advisors, with
    team_size=2, say "accept")."""
    scenario = load_scenario("negotiation", **{"format_bonus": 0.0, **options})
    env = scenario.make_env(seed=0)
    env.reset(seed=0, options={"task": task or trade()})
    replies = list(replies)
    while env.agents:
        env.step({a: "accept" if a.endswith("advisor") else replies.pop(0) for a in env.acting_agents()})
    assert not replies, "the episode ended before every reply was said"
    return env.episode()


def shown(scenario, replies: list[str], agent: str, task: Task) -> str:
    """What `agent` is shown in its turn after `replies`."""
    env = scenario.make_env(seed=0)
    env.reset(seed=0, options={"task": task})
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
    assert bargain([("red", "6"), ("blue", "7")]).price == 6  # a bid above the ask: the ask
    assert bargain([("red", "8"), ("blue", "5"), ("red", "3")]).price == 5  # an ask below the bid: the bid
    countered = bargain([("red", "8"), ("blue", "5"), ("red", "7")])
    assert countered == Bargain(standing=7, offered_by="red", valid=(True, True, True))
    assert bargain([("red", "8"), ("blue", REFUSE)]) == Bargain(standing=8, offered_by="red", over=True, valid=(True, True))
    for malformed in (None, "11", ACCEPT):  # nothing, a price above 10, an accept with nothing to accept
        assert bargain([("red", malformed)]) == Bargain(over=True, valid=(False,))
    assert bargain([("red", "8"), ("blue", "4"), ("blue", ACCEPT)]).over  # not its own price to accept


def test_an_accepted_offer_is_a_deal_paying_each_side_its_gain():
    episode = negotiate(["7", "accept"], trade(cost=2, value=8))
    assert [t.agent for t in episode.turns] == ["red_negotiator", "blue_negotiator"]  # it ended at once
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


def test_a_counter_in_the_last_turn_is_no_deal_and_a_draw():
    episode = negotiate(["9", "3", "5"])
    assert len(episode.turns) == 3
    assert episode.team_answer is None and episode.winner == "draw"
    assert episode.rewards == {"red_negotiator": 0.0, "blue_negotiator": 0.0}


@pytest.mark.parametrize(("replies", "valid"), [
    (["9", "no"], [True, True]),  # a refusal walks away
    (["9", "Hmm, let me think"], [True, False]),  # so does a malformed reply, marked invalid
    (["9", "3", "To solve this"], [True, True, False]),
    (["accept"], [False]),  # red has nothing to accept
    (["42"], [False]),  # a price above 10 is no price
])
def test_a_reply_that_is_neither_a_deal_nor_a_price_walks_away(replies, valid):
    episode = negotiate(replies)  # every reply said: each episode ends at its last one
    assert [t.valid for t in episode.turns] == valid
    assert episode.team_answer is None and episode.winner == "draw"
    assert episode.rewards == {"red_negotiator": 0.0, "blue_negotiator": 0.0}
    side = "red" if len(replies) % 2 else "blue"
    assert episode.events == [{"step": len(replies) - 1, "agent": f"{side}_negotiator", "walked_away": side}]


def test_the_format_term_pays_each_side_its_share_of_well_formed_turns():
    episode = negotiate(["8", "4", "Hmm"], trade(), format_bonus=0.1)
    assert episode.rewards == pytest.approx({"red_negotiator": 0.05, "blue_negotiator": 0.1})
    assert {line.term for line in episode.final} == {"deal_value", "format"}


def test_each_side_sees_its_own_value_the_price_it_faces_and_what_accepting_earns():
    scenario = load_scenario("negotiation")
    task = trade(cost=1, value=6, market=7)
    assert shown(scenario, [], "red_negotiator", task) == (
        "A lamp sells for about 7 coins. Yours cost you 1 coin.\nAnswer with a price from 0 to 10:"
    )
    blue = shown(scenario, ["9"], "blue_negotiator", task)
    assert blue == "The lamp is worth 6 coins to you. The seller asks 9. Accept and you lose 3.\nAnswer accept or a price:"
    assert "cost" not in blue  # red's cost is red's own
    red = shown(scenario, ["9", "4"], "red_negotiator", task)
    assert red == "Your lamp cost you 1 coin. The buyer offers 4. Accept and you earn 3.\nLast turn. Answer accept or a price:"
    assert "worth" not in red  # and blue's value blue's own


def test_a_league_counts_the_larger_gain_as_the_win_and_leaves_the_format_term_out():
    shaping = ["format"]
    won = negotiate(["7", "accept"], trade(cost=2, value=8), format_bonus=0.1)
    assert outcome_score(won, "red", TEAMS, shaping) == 1.0 and outcome_score(won, "blue", TEAMS, shaping) == 0.0
    middle = negotiate(["5", "accept"], trade(cost=2, value=8), format_bonus=0.1)
    assert middle.winner == "draw" and outcome_score(middle, "red", TEAMS, shaping) == 0.5
    # Without a deal, the side with the better-formed replies still does not win, whatever
    # the run counts as shaping: the winner is decided by the deal alone.
    none = negotiate(["7", "hmm"], trade(), format_bonus=0.1)
    assert none.rewards["red_negotiator"] > none.rewards["blue_negotiator"]
    assert outcome_score(none, "red", TEAMS, shaping) == outcome_score(none, "red", TEAMS, []) == 0.5


@pytest.mark.parametrize("team_size", [1, 2])
def test_zero_sum_rewards_sum_to_zero_and_favour_the_larger_gain(team_size):
    for replies in (["7", "accept"], ["3", "accept"], ["9", "no"], ["9", "4", "6"], ["x"]):
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
    blue_advisor = env.chat("blue_advisor")[-1]["content"]
    assert blue_advisor.startswith("The lamp is worth 8 coins to you. The seller asks 9.")
    assert "advisor" not in blue_advisor  # the other side's advice is unseen
    env.step({"blue_advisor": "Say 5."})
    env.step({"blue_negotiator": "5"})
    for turn in env.turns:
        if turn.agent.endswith("advisor"):
            assert turn.message.receivers == [turn.agent.replace("advisor", "negotiator")]
    assert [t.message.answer for t in env.turns] == ["9", "9", "5", "5"]


def test_tasks_hide_each_sides_value_and_always_leave_room_for_a_deal():
    tasks = load_scenario("negotiation").heldout_tasks(50, seed=0)
    assert all(t.meta["cost"] < t.meta["value"] for t in tasks)
    assert all(not t.private and str(t.meta["value"]) not in t.prompt for t in tasks)
    assert len({(t.meta["cost"], t.meta["value"], t.meta["market"]) for t in tasks}) > 30
