"""division_of_labour's solo option: one solver on exactly the team's tasks, on the
team's reward scale, for a team-against-one comparison at equal compute."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pettingzoo.test import parallel_api_test

from multiagent_rl import ScenarioError, load_scenario
from multiagent_rl.config import load_config


def say(scenario, task, text: str):
    """The solo episode where the solver replies `text`."""
    env = scenario.make_env(seed=0)
    env.reset(seed=0, options={"task": task})
    while env.agents:
        env.step(dict.fromkeys(env.acting_agents(), text))
    return env.episode()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_solo_holds_out_exactly_the_teams_tasks(seed):
    team = load_scenario("division_of_labour").heldout_tasks(50, seed=seed)
    solo = load_scenario("division_of_labour", solo=True).heldout_tasks(50, seed=seed)
    assert [t.key for t in solo] == [t.key for t in team]
    assert [t.answer for t in solo] == [t.answer for t in team]
    # and the training draws too: the options change the views, not the task stream
    team_scenario, solo_scenario = load_scenario("division_of_labour"), load_scenario("division_of_labour", solo=True)
    rng_team, rng_solo = random.Random(seed), random.Random(seed)
    assert [team_scenario.sample_task(rng_team).key for _ in range(20)] == [solo_scenario.sample_task(rng_solo).key for _ in range(20)]


def test_the_solver_sees_every_part_and_nobody_else_is_there():
    scenario = load_scenario("division_of_labour", solo=True)
    assert scenario.agents == ["solver"] and scenario.adapter_for("solver") == "solver"
    task = scenario.heldout_tasks(1)[0]
    a, b, c, d = task.meta["numbers"]
    assert task.private == {"solver": f"What is ({a} + {b}) + ({c} + {d})?"}
    env = scenario.make_env(seed=0)
    env.reset(options={"task": task})
    view = "\n".join(m["content"] for m in env.chat("solver"))
    assert f"({a} + {b}) + ({c} + {d})" in view and "workers" not in view  # no aggregator's instruction
    parallel_api_test(load_scenario("division_of_labour", solo=True).make_env(seed=0), num_cycles=3)


def test_solo_reward_is_on_the_teams_scale():
    scenario = load_scenario("division_of_labour", solo=True, own_weight=0.5, format_bonus=0.1)
    task = scenario.heldout_tasks(1)[0]
    right = say(scenario, task, task.answer)
    assert right.team_answer == task.answer
    assert right.rewards == pytest.approx({"solver": 1.0})  # a whole team's best
    assert say(scenario, task, str(int(task.answer) + 1)).rewards == pytest.approx({"solver": 0.1})  # format only
    wordy = say(scenario, task, f"The total is {task.answer}")
    assert wordy.rewards == pytest.approx({"solver": 0.9})  # right, but not a bare number
    assert say(scenario, task, "no idea").rewards == pytest.approx({"solver": 0.0})
    # own_weight moves nothing: the solver's own job is the team's correctness
    plain = load_scenario("division_of_labour", solo=True, own_weight=0.0, format_bonus=0.1)
    assert say(plain, task, f"The total is {task.answer}").rewards == pytest.approx({"solver": 0.9})
    assert set(right.reward_terms) == {"correct", "own_job", "format"}  # logged under the team's term names


@pytest.mark.parametrize(("options", "named"), [
    ({"planner": True}, "planner"),
    ({"workers_see_parts": False}, "workers_see_parts"),
    ({"shared_workers": True}, "shared_workers"),
])
def test_solo_refuses_team_options_naming_both(options, named):
    with pytest.raises(ScenarioError, match="solo") as caught:
        load_scenario("division_of_labour", solo=True, **options)
    assert named in str(caught.value)
    with pytest.raises(ScenarioError, match="solo must be true or false"):
        load_scenario("division_of_labour", solo="yes")


def test_the_single_agent_example_matches_the_team_example():
    root = Path(__file__).resolve().parents[1] / "examples"
    team = load_config(root / "division_learning.yaml").model_dump()
    solo = load_config(root / "division_single_agent.yaml").model_dump()
    assert solo["scenario"] == "division_of_labour" and solo["scenario_options"]["solo"] is True
    same = ["model", "adapters", "lr", "temperature", "lora", "tasks_per_step", "group_size", "eval_episodes", "eval_every",
            "steps", "time_budget_minutes", "save_every", "trainer", "seed"]
    assert {k: solo[k] for k in same} == {k: team[k] for k in same}
    # The comment's command: the team's token budget, neither the clock nor the step cap in its way
    given = load_config(root / "division_single_agent.yaml",
                        ["token_budget=1000", "time_budget_minutes=null", "steps=2000"],
                        scenario_defaults=load_scenario("division_of_labour", solo=True).train_defaults)
    assert (given.token_budget, given.time_budget_minutes, given.steps) == (1000, None, 2000)
