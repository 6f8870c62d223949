"""The team-against-one twins (division_of_labour, long_list, lookup): each `solo=True`
twin holds out exactly its team's tasks and pays on the team's reward formula, and
long_list's list cannot fit one reply while the solver gets the team's total budget."""

from __future__ import annotations

import random

import pytest
from pettingzoo.test import parallel_api_test

from multiagent_rl import ScenarioError, load_scenario

TWINS = ["division_of_labour", "long_list", "lookup"]


def play(scenario, task, reply):
    """The episode where every agent replies `reply(agent, round)`."""
    env = scenario.make_env(seed=0)
    env.reset(seed=0, options={"task": task})
    while env.agents:
        env.step({a: reply(a, env.round) for a in env.acting_agents()})
    return env.episode()


@pytest.mark.parametrize("name", TWINS)
@pytest.mark.parametrize("seed", [0, 3])
def test_the_twin_holds_out_exactly_the_teams_tasks(name, seed):
    team, solo = load_scenario(name), load_scenario(name, solo=True)
    held_team, held_solo = team.heldout_tasks(40, seed=seed), solo.heldout_tasks(40, seed=seed)
    assert [t.key for t in held_solo] == [t.key for t in held_team]
    assert [t.answer for t in held_solo] == [t.answer for t in held_team]
    rng_team, rng_solo = random.Random(seed), random.Random(seed)
    assert [team.sample_task(rng_team).key for _ in range(20)] == [solo.sample_task(rng_solo).key for _ in range(20)]


@pytest.mark.parametrize("name", TWINS)
def test_the_twins_pay_on_one_formula(name):
    team, solo = load_scenario(name), load_scenario(name, solo=True)
    assert [(t.name, t.weight) for t in team.reward.terms] == [(t.name, t.weight) for t in solo.reward.terms]
    task = solo.heldout_tasks(1)[0]
    # long_list's solver says its list a stretch a turn, as the budget makes it
    parts = task.meta.get("stretches") if name == "long_list" else None
    right = play(solo, task, lambda agent, round_index: parts[round_index] if parts else task.answer)
    assert right.team_answer == task.answer and right.rewards["solver"] == pytest.approx(1.0)
    assert play(solo, task, lambda a, r: "no idea").rewards["solver"] == pytest.approx(0.0)


@pytest.mark.parametrize("name", TWINS)
def test_the_twins_are_parallel_environments(name):
    for solo in (False, True):
        parallel_api_test(load_scenario(name, solo=solo).make_env(seed=0), num_cycles=4)


def test_long_list_team_gets_the_whole_list_only_by_splitting_it():
    team = load_scenario("long_list")
    task = team.heldout_tasks(1)[0]
    stretches = task.meta["stretches"]
    assert " ".join(stretches) == task.answer and len(task.answer.split()) == 12
    budget = {r.name: r.max_new_tokens for r in team.roles}
    assert budget == {"worker_1": 10, "worker_2": 10, "worker_3": 10}
    assert 2 * len(task.answer.split()) > 10  # two tokens a result: no one reply can carry the list
    done = play(team, task, lambda agent, r: stretches[int(agent[-1]) - 1])
    assert done.team_answer == task.answer and done.rewards == pytest.approx(dict.fromkeys(budget, 1.0))
    # one worker wrong on its stretch: the team loses its share, that worker loses its own job too
    first_wrong = play(team, task, lambda agent, r: "1 1 1 1" if agent == "worker_1" else stretches[int(agent[-1]) - 1])
    rewards = first_wrong.rewards
    assert rewards["worker_1"] < rewards["worker_2"] == rewards["worker_3"] < 1.0


def test_long_list_solver_carries_the_list_over_the_teams_turns():
    solo = load_scenario("long_list", solo=True)
    assert solo.num_rounds == 3 and [r.max_new_tokens for r in solo.roles] == [10]
    task = solo.heldout_tasks(1)[0]
    parts = task.meta["stretches"]
    episode = play(solo, task, lambda agent, round_index: parts[round_index])
    assert episode.team_answer == task.answer and episode.rewards["solver"] == pytest.approx(1.0)
    assert len(episode.turns) == 3
    half = play(solo, task, lambda agent, round_index: parts[round_index] if round_index < 2 else "")
    assert 0 < half.rewards["solver"] < 1 and half.team_answer != task.answer
    # a number past the list's end counts against the answer
    longer = play(solo, task, lambda agent, round_index: parts[round_index] + (" 5" if round_index == 2 else ""))
    assert longer.rewards["solver"] < 1.0


def test_lookup_needs_both_halves_and_pays_the_asker_for_naming_the_colour():
    team = load_scenario("lookup")
    task = team.heldout_tasks(1)[0]
    table, asked = task.meta["table"], task.meta["asked"]
    assert task.private["keeper"].count(",") == 3 and asked not in task.private["keeper"].split(":")[0]
    assert str(table[asked]) not in task.private["asker"]
    good = play(team, task, lambda agent, r: asked if agent == "asker" else task.answer)
    assert good.team_answer == task.answer and good.rewards == pytest.approx({"asker": 1.0, "keeper": 1.0})
    other = next(c for c in table if c != asked)
    vague = play(team, task, lambda agent, r: f"{asked} or {other}" if agent == "asker" else task.answer)
    assert vague.rewards["asker"] < 1.0 == vague.rewards["keeper"]
    env = team.make_env(seed=0)
    env.reset(options={"task": task})
    env.step({"asker": asked})
    keeper_view = "\n".join(m["content"] for m in env.chat("keeper"))
    assert asked in keeper_view and "Your table" in keeper_view


@pytest.mark.parametrize(("name", "options", "named"), [
    ("long_list", {"workers": 13}, "workers"),
    ("long_list", {"turn_tokens": 1}, "turn_tokens"),
    ("long_list", {"solo": "yes"}, "solo"),
    ("lookup", {"entries": 9}, "entries"),
    ("lookup", {"own_weight": 2.0}, "own_weight"),
])
def test_bad_options_are_named(name, options, named):
    with pytest.raises(ScenarioError, match=named):
        load_scenario(name, **options)
