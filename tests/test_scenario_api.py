"""Tests for multiagent_rl.scenario (declaration checks), multiagent_rl.rewards (reward checks
and helpers) and multiagent_rl.registry (names, files, options)."""

from __future__ import annotations

import math
import random
import textwrap
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import multiagent_rl.registry as registry_module
from multiagent_rl import (
    Episode,
    Message,
    Role,
    Scenario,
    ScenarioError,
    Task,
    Turn,
    blend,
    chain,
    complete,
    from_edges,
    individual_rewards,
    list_scenarios,
    load_scenario,
    majority_answer,
    register,
    team_reward,
    zero_sum,
)

AGENTS = ["alice", "bob"]


def make_task(rng: random.Random) -> Task:
    a, b = rng.randint(1, 50), rng.randint(1, 50)
    return Task(key=f"{a}+{b}", prompt=f"What is {a} + {b}?", answer=str(a + b))


def correct_reward(task: Task, episode: Episode) -> dict[str, float]:
    return team_reward(float(episode.team_answer == task.answer), [r for r in episode.teams])


def make_scenario(**overrides) -> Scenario:
    fields = dict(
        name="duo",
        roles=[Role("alice", "Solve it."), Role("bob", "Check alice.")],
        graph=complete(AGENTS),
        schedule=[AGENTS, AGENTS],
        make_task=make_task,
        reward=correct_reward,
    )
    fields.update(overrides)
    return Scenario(**fields)


def episode_with(answers: list[tuple[str, str | None]], teams: dict[str, str] | None = None) -> Episode:
    """An episode whose turns are (agent, parsed answer) in order, one round each."""
    turns = [
        Turn(agent=agent, round=i, message=Message(sender=agent, round=i, text=str(answer), answer=answer))
        for i, (agent, answer) in enumerate(answers)
    ]
    return Episode(
        episode_id="e",
        scenario="duo",
        task=Task(key="k", prompt="p", answer="7"),
        turns=turns,
        teams=teams or dict.fromkeys(AGENTS, "team"),
    )


@pytest.fixture(autouse=True)
def private_registry(monkeypatch):
    """Each test registers into its own copy of the registry."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


# ----- declaration errors ---------------------------------------------------------------
def test_a_good_declaration():
    duo = make_scenario()
    assert duo.agents == AGENTS
    assert duo.num_rounds == 2
    assert duo.teams == {"alice": "team", "bob": "team"}
    assert duo.graph_at(1) == complete(AGENTS)
    assert "duo" in repr(duo)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"graph": from_edges([("alice", "carol")])}, r"round 0 graph.*unknown agent 'carol'"),
        ({"graph": lambda r: complete(AGENTS) if r == 0 else chain(["alice", "zed"])}, r"round 1 graph.*'zed'"),
        ({"graph": ["alice", "bob"]}, r"graph spec is a list"),
        ({"schedule": []}, r"empty schedule"),
        ({"schedule": [[]]}, r"empty schedule"),
        ({"schedule": [AGENTS, []]}, r"round 1 of the schedule has no acting agent"),
        ({"schedule": [["alice", "carol"]]}, r"schedule round 0 names unknown agent 'carol'; known: alice, bob"),
        ({"roles": [Role("alice", "x"), Role("alice", "y")]}, r"duplicate role name 'alice'"),
        ({"roles": [Role("alice", "x", adapter=""), Role("bob", "y")]}, r"role 'alice' has no adapter name"),
        ({"roles": []}, r"declares no roles"),
        ({"name": ""}, r"scenario name must be a non-empty string"),
        ({"make_task": "not a function"}, r"make_task and reward must be callables"),
        ({"reward": None}, r"make_task and reward must be callables"),
        ({"heldout_percent": 0}, r"heldout_percent must be in 1..99, got 0"),
        ({"heldout_percent": 100}, r"heldout_percent must be in 1..99, got 100"),
    ],
)
def test_bad_declarations_raise_one_clear_error(overrides, message):
    with pytest.raises(ScenarioError, match=message):
        make_scenario(**overrides)


def test_scenario_error_is_a_value_error():
    assert issubclass(ScenarioError, ValueError)


def test_non_role_is_a_scenario_error():
    with pytest.raises(ScenarioError, match="roles must be Role"):
        make_scenario(roles=[("alice", "Solve it."), Role("bob", "Check.")])


def test_schedule_of_strings_names_the_mistake():
    with pytest.raises(ScenarioError, match="'alice'"):
        make_scenario(schedule=["alice", "bob"])


# ----- reward checks ------------------------------------------------------------------------
def _scenario_with_reward(values) -> Scenario:
    return make_scenario(reward=lambda task, episode: values)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"alice": 1.0}, r"missing agents: bob"),
        ({}, r"missing agents: alice, bob"),
        ({"alice": 1.0, "bob": math.nan}, r"for 'bob' is nan; rewards must be finite"),
        ({"alice": math.inf, "bob": 0.0}, r"for 'alice' is inf"),
        ({"alice": 1.0, "bob": 1.0, "carol": 1.0}, r"unknown agents: carol"),
        ({"alice": 1.0, "bob": "high"}, r"for 'bob' is not a number: 'high'"),
        ({"alice": 1.0, "bob": None}, r"for 'bob' is not a number"),
        ([1.0, 1.0], r"must return a dict agent -> float, got list"),
        (1.0, r"must return a dict"),
    ],
)
def test_bad_rewards_raise_one_clear_error(values, message):
    duo = _scenario_with_reward(values)
    with pytest.raises(ScenarioError, match=message) as info:
        duo.rewards(make_task(random.Random(0)), episode_with([]))
    assert "'duo' reward" in str(info.value)


def test_good_rewards_become_floats():
    duo = _scenario_with_reward({"alice": 1, "bob": True})
    assert duo.rewards(make_task(random.Random(0)), episode_with([])) == {"alice": 1.0, "bob": 1.0}


def test_nan_reward_is_caught_when_the_episode_ends():
    env = _scenario_with_reward({"alice": 0.0, "bob": math.nan}).make_env(seed=0)
    env.reset(seed=0)
    env.step({a: "7" for a in AGENTS})
    with pytest.raises(ScenarioError, match="'bob' is nan"):
        env.step({a: "7" for a in AGENTS})


def test_make_task_returning_a_non_task():
    duo = make_scenario(make_task=lambda rng: {"key": "k", "prompt": "p"})
    with pytest.raises(ScenarioError, match="make_task returned dict, expected Task"):
        duo.sample_task(random.Random(0))
    with pytest.raises(ScenarioError, match="make_task returned dict"):
        duo.make_env(seed=0).reset(seed=0)


def test_unknown_split():
    with pytest.raises(ScenarioError, match="unknown split 'test'"):
        make_scenario().sample_task(random.Random(0), "test")


def test_task_keys_that_never_vary():
    duo = make_scenario(make_task=lambda rng: Task(key="alpha", prompt="p"))  # crc32 bucket 90: train
    assert duo.split_of(Task(key="alpha", prompt="p")) == "train"
    with pytest.raises(ScenarioError, match="no 'eval' task in 50 draws; task keys must vary"):
        duo.sample_task(random.Random(0), "eval", max_draws=50)


# ----- registry -------------------------------------------------------------------------------
def test_register_an_instance_and_load_it_by_name():
    duo = make_scenario(name="duo_test")
    register("duo_test", duo)
    assert "duo_test" in list_scenarios()
    assert load_scenario("duo_test") is duo


def test_register_a_factory_as_decorator_and_pass_options():
    @register("sized_test")
    def make_sized(solvers: int = 2) -> Scenario:
        names = [f"s{i}" for i in range(solvers)]
        return make_scenario(name="sized_test", roles=[Role(n, "x") for n in names], graph=complete(names), schedule=[names])

    assert callable(make_sized)  # the decorator returns the factory itself
    assert load_scenario("sized_test").agents == ["s0", "s1"]
    assert load_scenario("sized_test", solvers=3).agents == ["s0", "s1", "s2"]


def test_built_in_scenario_by_name():
    debate = load_scenario("debate")
    assert debate.name == "debate"
    assert "debate" in list_scenarios()


def test_unknown_name_lists_known_names():
    register("duo_test", make_scenario())
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'") as info:
        load_scenario("nope")
    text = str(info.value)
    assert "duo_test" in text and "debate" in text and "path/file.py:NAME" in text


SCENARIO_FILE = '''
import random
from multiagent_rl import Role, Scenario, Task, complete, team_reward

NAMES = ["x", "y"]

def task(rng: random.Random) -> Task:
    n = rng.randint(0, 1000)
    return Task(key=str(n), prompt=f"{n}?", answer=str(n))

def make(rounds=1):
    return Scenario(
        name="from_file",
        roles=[Role(n, "hi") for n in NAMES],
        graph=complete(NAMES),
        schedule=[NAMES] * rounds,
        make_task=task,
        reward=lambda t, e: team_reward(0.0, NAMES),
    )

INSTANCE = make(rounds=2)
NOT_A_SCENARIO = 42

def wrong_factory():
    return "a string"
'''


@pytest.fixture
def scenario_file(tmp_path):
    path = tmp_path / "my_scenario.py"
    path.write_text(SCENARIO_FILE)
    return path


def test_load_an_instance_from_a_file(scenario_file):
    loaded = load_scenario(f"{scenario_file}:INSTANCE")
    assert loaded.name == "from_file" and loaded.num_rounds == 2


def test_load_a_factory_from_a_file_with_options(scenario_file):
    assert load_scenario(f"{scenario_file}:make").num_rounds == 1
    assert load_scenario(f"{scenario_file}:make", rounds=3).num_rounds == 3


def test_file_errors(scenario_file, tmp_path):
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(f"{tmp_path / 'missing.py'}:make")
    with pytest.raises(ScenarioError, match="has no attribute 'nope'"):
        load_scenario(f"{scenario_file}:nope")
    with pytest.raises(ScenarioError, match="gave str, expected a Scenario"):
        load_scenario(f"{scenario_file}:wrong_factory")
    with pytest.raises(ScenarioError, match="unknown scenario 'my_scenario.py'"):
        load_scenario("my_scenario.py")  # no :NAME, so it is looked up as a registry name


def test_file_attribute_that_is_not_a_scenario(scenario_file):
    with pytest.raises(ScenarioError, match="NOT_A_SCENARIO"):
        load_scenario(f"{scenario_file}:NOT_A_SCENARIO")


def test_file_with_a_dataclass_loads(tmp_path):
    path = tmp_path / "dc_scenario.py"
    path.write_text(
        textwrap.dedent(
            """
            from __future__ import annotations
            from dataclasses import dataclass

            @dataclass
            class Options:
                rounds: int = 1
            """
        )
        + SCENARIO_FILE
    )
    assert load_scenario(f"{path}:INSTANCE").name == "from_file"


# ----- options ---------------------------------------------------------------------------------
def test_an_unknown_option_is_a_scenario_error_naming_it(scenario_file):
    register("duo_factory_test", lambda rounds=1: make_scenario(schedule=[AGENTS] * rounds))
    for spec in ("duo_factory_test", f"{scenario_file}:make", "debate"):
        with pytest.raises(ScenarioError, match="rejected options.*no_such_option"):
            load_scenario(spec, no_such_option=1)


def test_options_given_to_a_scenario_instance_are_refused(scenario_file):
    register("duo_instance_test", make_scenario())
    for spec in ("duo_instance_test", f"{scenario_file}:INSTANCE"):
        with pytest.raises(ScenarioError, match="takes no options, got {'rounds': 3}"):
            load_scenario(spec, rounds=3)


def test_a_value_the_factory_refuses_is_a_scenario_error():
    def make_picky(mode: str = "a") -> Scenario:
        if mode not in ("a", "b"):
            raise ValueError(f"mode={mode!r}; use 'a' or 'b'")  # not a ScenarioError: still one line
        return make_scenario()

    register("picky_test", make_picky)
    with pytest.raises(ScenarioError, match=r"'picky_test' rejected options \{'mode': 'z'\}: mode='z'; use 'a' or 'b'"):
        load_scenario("picky_test", mode="z")


def test_moved_names_still_import_from_their_old_module():
    from multiagent_rl.scenario import ScenarioError as OldScenarioError

    assert OldScenarioError is ScenarioError
    assert registry_module.load_scenario is load_scenario and registry_module.list_scenarios is list_scenarios


# ----- reward helpers ---------------------------------------------------------------------------
def test_team_reward():
    assert team_reward(1, ["a", "b"]) == {"a": 1.0, "b": 1.0}
    assert all(isinstance(v, float) for v in team_reward(1, ["a"]).values())
    assert team_reward(0.5, []) == {}


def test_individual_rewards_is_a_float_copy():
    values = {"a": 1, "b": 0}
    out = individual_rewards(values)
    assert out == {"a": 1.0, "b": 0.0} and all(isinstance(v, float) for v in out.values())
    out["a"] = 9.0
    assert values["a"] == 1


def test_zero_sum_example():
    assert zero_sum({"red": 3.0, "blue": 1.0}, {"a": "red", "b": "blue"}) == {"a": 1.0, "b": -1.0}
    # Two reds share their team's margin; the blue gets all of its own.
    assert zero_sum({"red": 3.0, "blue": 1.0}, {"a": "red", "b": "red", "c": "blue"}) == {
        "a": 0.5,
        "b": 0.5,
        "c": -1.0,
    }


def test_zero_sum_missing_team_score():
    with pytest.raises(ScenarioError, match="no score for team 'blue'"):
        zero_sum({"red": 1.0}, {"a": "red", "b": "blue"})


@given(
    scores=st.lists(st.floats(-100, 100), min_size=1, max_size=5),
    data=st.data(),
)
def test_zero_sum_sums_to_zero(scores, data):
    team_names = [f"t{i}" for i in range(len(scores))]
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=len(scores), max_size=len(scores)))
    teams = {f"{t}_{j}": t for t, n in zip(team_names, sizes, strict=True) for j in range(n)}
    out = zero_sum(dict(zip(team_names, scores, strict=True)), teams)
    assert set(out) == set(teams)
    assert abs(sum(out.values())) <= 1e-9 * max(1.0, *map(abs, scores))
    for t in team_names:  # members of a team get the same share
        assert len({out[a] for a, team in teams.items() if team == t}) == 1
    best = team_names[scores.index(max(scores))]
    assert all(out[a] >= -1e-9 for a, team in teams.items() if team == best)


def test_blend():
    first, second = {"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0}
    assert blend(first, second, 0.0) == first
    assert blend(first, second, 1.0) == second
    assert blend(first, second, 0.5) == {"a": 0.5, "b": 0.5}
    assert blend(first, second, 0.1) == pytest.approx({"a": 0.9, "b": 0.1})


@given(
    st.dictionaries(st.sampled_from("abcd"), st.floats(-1e6, 1e6), min_size=1).flatmap(
        lambda first: st.tuples(
            st.just(first), st.fixed_dictionaries({k: st.floats(-1e6, 1e6) for k in first})
        )
    )
)
def test_blend_endpoints_give_the_inputs(pair):
    first, second = pair
    assert blend(first, second, 0) == first
    assert blend(first, second, 1) == second


@pytest.mark.parametrize("weight", [-0.1, 1.1, math.nan, math.inf])
def test_blend_bad_weight(weight):
    with pytest.raises(ScenarioError, match="blend weight must be in"):
        blend({"a": 1.0}, {"a": 0.0}, weight)


def test_blend_agents_differ():
    with pytest.raises(ScenarioError, match="agents differ"):
        blend({"a": 1.0}, {"b": 0.0}, 0.5)


# ----- team answers ---------------------------------------------------------------------------------
def test_majority_answer_wins():
    ep = episode_with([("a", "1"), ("b", "2"), ("c", "2")])
    assert majority_answer(ep, ["a", "b", "c"]) == "2"


def test_majority_tie_goes_to_the_earliest_agent_listed():
    ep = episode_with([("b", "2"), ("a", "1")])  # b spoke first...
    assert majority_answer(ep, ["a", "b"]) == "1"  # ...but a is listed first
    assert majority_answer(ep, ["b", "a"]) == "2"
    ep3 = episode_with([("a", "1"), ("b", "2"), ("c", "3"), ("d", "2"), ("e", "1")])
    assert majority_answer(ep3, ["c", "b", "a", "d", "e"]) == "2"  # 1 and 2 tie; b is before a


def test_majority_uses_each_agents_latest_answer_and_skips_none():
    ep = episode_with([("a", "1"), ("b", "2"), ("a", "2"), ("c", None)])
    assert majority_answer(ep, ["a", "b", "c"]) == "2"
    assert majority_answer(episode_with([("a", None)]), ["a"]) is None
    assert majority_answer(episode_with([]), ["a", "b"]) is None
    assert majority_answer(ep, ["z"]) is None


def test_default_team_answer_is_the_last_rounds_majority():
    duo = make_scenario(schedule=[["alice", "bob"], ["bob"]])
    ep = episode_with([("alice", "1"), ("bob", "2")])
    assert duo.team_answer(ep) == "2"  # only bob acts in the last round
    custom = make_scenario(team_answer=lambda episode: "fixed")
    assert custom.team_answer(ep) == "fixed"


# ----- splits ------------------------------------------------------------------------------------------
def test_split_of_is_a_stable_hash_of_the_key():
    duo, other = make_scenario(), make_scenario(name="other", heldout_percent=20)
    for key in ["alpha", "beta", "gamma", "delta", "2x3", "ü-ñ"]:
        task = Task(key=key, prompt="whatever")
        expected = "eval" if zlib.crc32(key.encode()) % 100 < 20 else "train"
        assert duo.split_of(task) == other.split_of(task) == expected
        # the prompt and answer do not matter, only the key
        assert duo.split_of(Task(key=key, prompt="other", answer="1")) == expected
    assert duo.split_of(Task(key="gamma", prompt="")) == "eval"  # crc32 bucket 9
    assert duo.split_of(Task(key="alpha", prompt="")) == "train"  # crc32 bucket 90


def test_a_task_may_name_its_own_split_and_a_bad_name_is_refused():
    duo = make_scenario()
    assert duo.split_of(Task(key="alpha", prompt="", meta={"split": "eval"})) == "eval"  # alpha hashes to train
    assert duo.split_of(Task(key="gamma", prompt="", meta={"split": "train"})) == "train"
    with pytest.raises(ScenarioError, match="meta\\['split'\\] must be one of"):
        duo.split_of(Task(key="alpha", prompt="", meta={"split": "test"}))


def test_held_out_share_is_about_heldout_percent():
    duo = make_scenario(heldout_percent=30)
    share = sum(duo.split_of(Task(key=f"k{i}", prompt="")) == "eval" for i in range(5000)) / 5000
    assert 0.25 < share < 0.35


def test_sample_task_respects_the_split_and_the_seed():
    duo = make_scenario()
    train = [duo.sample_task(random.Random(1)) for _ in range(2)]
    assert train[0] == train[1]
    rng = random.Random(3)
    assert all(duo.split_of(duo.sample_task(rng, "train")) == "train" for _ in range(50))
    assert all(duo.split_of(duo.sample_task(rng, "eval")) == "eval" for _ in range(50))


def test_heldout_tasks_are_deterministic_distinct_and_held_out():
    duo = make_scenario()
    first = duo.heldout_tasks(20, seed=7)
    assert first == make_scenario().heldout_tasks(20, seed=7)
    assert len({t.key for t in first}) == 20
    assert all(duo.split_of(t) == "eval" for t in first)
    assert first != duo.heldout_tasks(20, seed=8)
    assert duo.heldout_tasks(0) == []


def test_heldout_tasks_too_few():
    few = make_scenario(make_task=lambda rng: Task(key=rng.choice(["gamma", "alpha", "beta"]), prompt="p"))
    assert [t.key for t in few.heldout_tasks(1)] == ["gamma"]
    with pytest.raises(ScenarioError, match="only 1 distinct held-out tasks, asked for 2"):
        few.heldout_tasks(2)


# ----- adapters ------------------------------------------------------------------------------------------
def test_roles_sharing_an_adapter():
    trio = make_scenario(
        roles=[Role("alice", "x", adapter="solver"), Role("bob", "y", adapter="solver"), Role("judge", "z")],
        graph=complete(["alice", "bob", "judge"]),
        schedule=[["alice", "bob"], ["judge"]],
    )
    assert trio.adapter_for("alice") == trio.adapter_for("bob") == "solver"
    assert trio.adapter_for("judge") == "judge"  # no adapter given: its own, named after the role
    assert Role("x", "p").adapter_name == "x"
    with pytest.raises(ScenarioError, match="has no role 'carol'; roles: alice, bob, judge"):
        trio.adapter_for("carol")
    env = trio.make_env(seed=0)
    env.reset(seed=0)
    env.step({"alice": "1", "bob": "2"})
    assert [(t.agent, t.adapter) for t in env.turns] == [("alice", "solver"), ("bob", "solver")]


def test_role_is_frozen():
    role = Role("alice", "x")
    with pytest.raises(AttributeError):
        role.name = "bob"  # type: ignore[misc]
