"""Branched rollouts: forks of an episode continue in the same lockstep calls, each distinct
turn is one sample, counterfactual forks hold the other agents' replies fixed, a scenario
state is forked by deep copy or the scenario's hook, and bad plans fail before a model loads."""

from __future__ import annotations

import random
import threading

import pytest

from multiagent_rl import Role, Scenario, ScenarioError, Task, complete, team_reward
from multiagent_rl.backends.base import GenerationResult
from multiagent_rl.branching import Fork, check_plan, leaves_per_task
from multiagent_rl.cli import main
from multiagent_rl.config import ConfigError, load_config
from multiagent_rl.rollout import rollout

CHAIN = ["first", "middle", "last"]


class YesNoBackend:
    """Replies "yes" or "no" at random (seeded by the call's seed and the request's place),
    so alternatives from one state differ; counts its calls."""

    def __init__(self):
        self.calls = 0

    def sync(self, model, adapters, folder) -> None:
        return None

    def generate(self, requests, seed=None):
        self.calls += 1
        rng = random.Random(seed)
        results = []
        for r in requests:
            yes = rng.random() < 0.5
            results.append(GenerationResult(
                text="yes" if yes else "no", prompt_ids=[1, 2, 3], completion_ids=[5 if yes else 6],
                logprobs=[-0.7], finish_reason="stop", tag=r.tag,
            ))
        return results


def make_task(rng: random.Random) -> Task:
    n = rng.randint(0, 10**6)
    return Task(key=f"n{n}", prompt=f"Task {n}.", answer="yes")


def middle_decides(task: Task, episode) -> dict[str, float]:
    said = {t.agent: t.message.text for t in episode.turns}
    return team_reward(float(said["middle"] == "yes"), CHAIN)


def chain(**options) -> Scenario:
    """first -> middle -> last, one per turn step; only the middle's reply decides the reward."""
    return Scenario(
        name="chain", roles=[Role(a, f"You are {a}.") for a in CHAIN], graph=complete(CHAIN),
        schedule=[[a] for a in CHAIN], make_task=make_task, reward=middle_decides, max_new_tokens=2, **options,
    )


def tasks(n: int) -> list[Task]:
    rng = random.Random(0)
    return [make_task(rng) for _ in range(n)]


PLAN = [Fork(step=0, n=2), Fork(step=1, n=2), Fork(step=2, n=2)]


def test_forks_make_a_tree_of_leaves_in_lockstep_calls_and_each_turn_once():
    backend = YesNoBackend()
    batch = rollout(chain(), backend, tasks(3), group_size=1, seed=1, branching=PLAN)
    assert len(batch.episodes) == 3 * leaves_per_task(PLAN, 1) == 24
    assert backend.calls == batch.backend_calls == 3  # one call per turn step, every branch in it
    assert [ep.branch for ep in batch.episodes[:8]] == [[0, a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    per_agent = {a: [s for s in batch.samples if s.agent == a] for a in CHAIN}
    assert [len(per_agent[a]) for a in CHAIN] == [3 * 2, 3 * 4, 3 * 8]  # each distinct turn one sample
    assert len({(s.group, s.branch, s.agent) for s in batch.samples}) == len(batch.samples)
    for sample in batch.samples:  # the sample's episode is a leaf below its node, holding that very turn
        episode = batch.episodes[sample.episode]
        assert tuple(episode.branch[:len(sample.branch)]) == sample.branch and episode.group == sample.group
        assert episode.turns[sample.turn].agent == sample.agent
    for ep in batch.episodes:  # a leaf's turns are its ancestors' turns
        first = next(s for s in per_agent["first"] if s.group == ep.group and s.branch == tuple(ep.branch[:2]))
        assert ep.turns[0].message.text == ("yes" if first.completion_ids == [5] else "no")


def test_without_a_plan_the_rollout_is_unchanged():
    one = rollout(chain(), YesNoBackend(), tasks(2), group_size=3, seed=2)
    assert [ep.branch for ep in one.episodes] == [[k] for _ in range(2) for k in range(3)]
    assert [s.branch for s in one.samples[:3]] == [(0,), (1,), (2,)]


def pair() -> Scenario:
    agents = ["a", "b"]
    return Scenario(name="pair", roles=[Role(x, "Say yes or no.") for x in agents], graph=complete(agents),
                    schedule=[agents], make_task=make_task, reward=lambda task, ep: team_reward(0.0, agents),
                    max_new_tokens=2)


def test_a_counterfactual_fork_holds_the_other_agents_reply_fixed():
    batch = rollout(pair(), YesNoBackend(), tasks(4), group_size=1, seed=3,
                    branching=[Fork(step=0, n=3, resample=["a"])])
    assert len(batch.episodes) == 12
    for g in range(4):
        leaves = [ep for ep in batch.episodes if ep.group == g]
        b_said = {[t for t in ep.turns if t.agent == "b"][0].message.text for ep in leaves}
        assert len(b_said) == 1  # one reply of b's for every alternative
        b_samples = [s for s in batch.samples if s.group == g and s.agent == "b"]
        a_samples = [s for s in batch.samples if s.group == g and s.agent == "a"]
        assert [s.branch for s in b_samples] == [(0,)]  # its node: the fork's parent
        assert sorted(s.branch for s in a_samples) == [(0, 0), (0, 1), (0, 2)]


class Board:
    """A scenario state that refuses to be deep-copied (it holds a lock), as some engines do."""

    def __init__(self):
        self.lock = threading.Lock()
        self.moves: list[str] = []


def board_scenario(fork=None) -> Scenario:
    def act(view, agent, text):
        view.state.moves.append(text)

    return chain(init_state=lambda task, rng: Board(), act=act, fork=fork)


def test_a_state_that_cannot_be_copied_names_the_scenario_and_the_hook():
    with pytest.raises(ScenarioError, match=r"scenario 'chain'.*Board.*cannot be deep-copied.*Scenario\(fork=\.\.\.\)"):
        check_plan(PLAN, board_scenario())


def test_the_scenarios_fork_hook_copies_its_state():
    def fork(board: Board) -> Board:
        copy = Board()
        copy.moves = list(board.moves)
        return copy

    scenario = board_scenario(fork)
    check_plan(PLAN, scenario)
    env = scenario.make_env(seed=0)
    env.reset(seed=0)
    env.step({"first": "yes"})
    other = env.fork(seed=5)
    other.step({"middle": "no"})
    env.step({"middle": "yes"})
    assert env.view.state.moves == ["yes", "yes"] and other.view.state.moves == ["yes", "no"]
    assert [t.message.text for t in other.turns] == ["yes", "no"] and other.scenario is env.scenario


@pytest.mark.parametrize("plan, message", [
    ([Fork(agent="nobody")], "unknown agent 'nobody'"),
    ([Fork(step=3)], r"has 3 turn steps \(0-2\)"),
    ([Fork(step=1), Fork(step=1, n=3)], r"rollout.branching\[0\] forks at the same step"),
    ([Fork(step=1, resample=["first"])], "'first' does not act at step 1"),
])
def test_bad_plans_are_refused_naming_the_fork(plan, message):
    with pytest.raises(ScenarioError, match=message):
        check_plan(plan, chain())


def test_a_fork_of_a_scripted_role_is_refused():
    scripted = chain().with_scripted({"last": lambda view, agent: "yes"})
    with pytest.raises(ScenarioError, match="scripted role 'last'"):
        check_plan([Fork(agent="last")], scripted)
    with pytest.raises(ScenarioError, match="only scripted roles act then"):
        check_plan([Fork(step=2)], scripted)


def test_branching_settings():
    cfg = load_config(None, ["rollout.branching=[{step: 0, n: 3}, {agent: x, n: 2}]", "grpo.advantage=tree", "group_size=1"])
    assert leaves_per_task(cfg.rollout.branching, cfg.group_size) == 6
    with pytest.raises(ConfigError, match="needs trainer=grpo with grpo.advantage=tree"):
        load_config(None, ["rollout.branching=[{step: 0}]"])
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(None, ["rollout.branching=[{step: 0, agent: x}]", "grpo.advantage=tree"])
    with pytest.raises(ConfigError, match="group of one"):  # no fork, one sample: nothing to compare
        load_config(None, ["grpo.advantage=tree", "group_size=1"])


TINY = ["--set", "model=tiny", "--set", "steps=1", "--set", "tasks_per_step=1", "--set", "group_size=1",
        "--set", "eval_episodes=1", "--set", "log_with=[]", "--set", "progress=false", "--set", "grpo.advantage=tree"]


@pytest.mark.parametrize("plan, expected", [
    ("[{agent: nobody}]", "unknown agent 'nobody'"),
    ("[{step: 0, n: 100000}, {step: 1, n: 100000}]", "the forks' n"),
])
def test_bad_plan_at_the_command_line_is_one_line_before_the_model_loads(capsys, tmp_path, plan, expected):
    code = main(["train", "division_of_labour", "--out", str(tmp_path / "run"), *TINY,
                 "--set", f"rollout.branching={plan}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()
