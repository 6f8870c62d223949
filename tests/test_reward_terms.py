"""Rewards of weighted, named terms: the total is the weighted sum, every term reaches the
episode record and the metrics (`reward/<agent>/<term>`), and plain reward functions still
work (as one term, `total`)."""

from __future__ import annotations

import math

import pytest

from multiagent_rl import (
    Episode,
    RewardTerm,
    Role,
    Scenario,
    ScenarioError,
    Task,
    complete,
    load_scenario,
    weighted,
)
from multiagent_rl.rewards import RewardTermError

AGENTS = ["a", "b"]


def scenario(reward) -> Scenario:
    return Scenario(
        name="terms", roles=[Role("a", "A."), Role("b", "B.")], graph=complete(AGENTS), schedule=[AGENTS],
        make_task=lambda rng: Task(key=str(rng.random()), prompt="p", answer="1"), reward=reward,
    )


def played(s: Scenario, texts=("1", "two")) -> Episode:
    env = s.make_env(seed=0)
    env.reset(seed=0)
    env.step(dict(zip(AGENTS, texts, strict=True)))
    return env.episode()


def test_the_total_is_the_weighted_sum_and_every_term_is_recorded():
    reward = weighted(
        RewardTerm("team", lambda task, ep: 1.0, 0.6),
        RewardTerm("length", lambda task, ep: {t.agent: len(t.message.text) for t in ep.turns}, 0.4),
    )
    episode = played(scenario(reward))
    assert episode.reward_terms == {"team": {"a": 1.0, "b": 1.0}, "length": {"a": 1.0, "b": 3.0}}
    assert episode.rewards == pytest.approx({"a": 0.6 + 0.4 * 1, "b": 0.6 + 0.4 * 3})


def test_a_plain_reward_function_is_one_term_named_total():
    episode = played(scenario(lambda task, ep: {"a": 0.5, "b": 0.25}))
    assert episode.reward_terms == {"total": {"a": 0.5, "b": 0.25}}


def test_a_term_that_misses_an_agent_or_is_not_finite_is_named():
    with pytest.raises(ScenarioError, match="term 'half' is missing agents: b"):
        played(scenario(weighted(RewardTerm("half", lambda task, ep: {"a": 1.0}))))
    with pytest.raises(ScenarioError, match="term 'bad'"):
        played(scenario(weighted(RewardTerm("bad", lambda task, ep: math.nan))))


@pytest.mark.parametrize("terms", [[], [RewardTerm("x", len), RewardTerm("x", len)], [RewardTerm("a/b", len)],
                                   [RewardTerm("w", len, math.inf)]])
def test_bad_term_declarations_are_refused(terms):
    with pytest.raises(RewardTermError):
        weighted(*terms)


def test_debate_declares_its_terms_and_they_sum_to_its_reward():
    s = load_scenario("debate", own_weight=0.5, format_bonus=0.1)
    env = s.make_env(seed=0)
    env.reset(seed=0)
    right = env.task.answer
    env.step({"solver_a": right, "solver_b": f"I think {right}."})
    env.step({"solver_a": right, "solver_b": "no idea"})
    ep = env.episode()
    assert set(ep.reward_terms) == {"correct", "own", "format"}
    assert ep.reward_terms["own"] == {"solver_a": 1.0, "solver_b": 0.0}
    for agent in s.agents:
        t = ep.reward_terms
        expected = 0.9 * (0.5 * t["correct"][agent] + 0.5 * t["own"][agent]) + 0.1 * t["format"][agent]
        assert ep.rewards[agent] == pytest.approx(expected)


def test_terms_reach_the_metrics_per_agent(single_thread, tmp_path):
    import json
    import sys
    from pathlib import Path

    from multiagent_rl.config import load_config
    from trainers.loop import Run

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from duo_run import duo

    s = duo()
    plain = s.reward
    s.reward = weighted(RewardTerm("length", plain, 0.7), RewardTerm("bonus", lambda task, ep: 1.0, 0.3))
    config = load_config(None, ["scenario=duo", "model=tiny", "log_with=[]", "progress=false", "tasks_per_step=2",
                                "group_size=3", "eval_episodes=2", "eval_every=0", "lora.rank=4", "steps=1"])
    Run(config, tmp_path, scenario=s).train()
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1])
    for agent in ("solver", "critic"):
        assert line[f"reward/{agent}/bonus"] == 1.0
        assert line[f"reward/{agent}_mean"] == pytest.approx(0.7 * line[f"reward/{agent}/length"] + 0.3)
    from multiagent_rl.analysis import reward_terms_by_step, run_analysis
    from multiagent_rl.analysis.loading import load_run

    rows = list(reward_terms_by_step(load_run(tmp_path).episodes))
    assert {r["term"] for r in rows} == {"length", "bonus"} and all(r["step"] == 1 for r in rows)
    _, report = run_analysis(tmp_path, progress=False)
    assert "reward terms by training step" in report.read_text()
