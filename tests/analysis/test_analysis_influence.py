"""Causal influence by ablation, with a fake deterministic backend on hand-made episodes.

Scenario: solvers a and b each send one number to the judge c (round 0); c answers in round 1
and its answer is the team's. The fake model answers the last number in its prompt, so c
repeats b's number (b's message comes last in its inbox) unless b's message is ablated.
"""

from __future__ import annotations

import re

import pytest

from multiagent_rl import Role, Scenario, Task, answers_match, star, team_reward
from multiagent_rl.analysis import ablation_influence, influence_graph, summarise_ablation
from multiagent_rl.backends import GenerationBackend, GenerationResult


class LastNumberBackend:
    """Answers the last number in its prompt; remembers every request."""

    def __init__(self):
        self.requests = []

    def generate(self, requests, seed=None):
        self.requests.extend(requests)
        out = []
        for r in requests:
            numbers = re.findall(r"\d+", " ".join(m["content"] for m in r.messages))
            out.append(GenerationResult(text=numbers[-1] if numbers else "none", prompt_ids=[], completion_ids=[],
                                        logprobs=[], finish_reason="stop", tag=r.tag))
        return out

    def sync(self, model, adapters, folder) -> None:
        pass


def _judge_scenario() -> Scenario:
    def reward(task, episode):
        return team_reward(float(answers_match(episode.team_answer, task.answer)), ["a", "b", "c"])

    def judge_answer(episode):
        return next((t.message.answer for t in reversed(episode.turns) if t.agent == "c"), None)

    return Scenario(
        name="judged",
        roles=[Role("a", "You propose."), Role("b", "You propose."), Role("c", "You judge.", adapter="judge_lora")],
        graph=star("c", ["a", "b"], direction="in"),
        schedule=[["a", "b"], ["c"]],
        make_task=lambda rng: Task(key="t", prompt="Pick the best number.", answer="9"),
        reward=reward,
        team_answer=judge_answer,
        max_new_tokens=12,
    )


def _judged(episode, a: str, b: str, judge: str, truth: str):
    return episode(
        [("a", 0, a, a, ["c"]), ("b", 0, b, b, ["c"]), ("c", 1, judge, judge, [])],
        answer=truth, team_answer=judge, rewards=dict.fromkeys("abc", float(judge == truth)), step=3,
        prompt="Pick the best number.", scenario="judged",
    )


def test_fake_backend_satisfies_the_protocol():
    assert isinstance(LastNumberBackend(), GenerationBackend)


def test_removing_messages(episode):
    scenario, backend = _judge_scenario(), LastNumberBackend()
    ep = _judged(episode, "7", "9", "9", truth="9")
    rows = {(r["sender"], r["receiver"]): r for r in ablation_influence([ep], scenario, backend)}
    assert set(rows) == {("a", "c"), ("b", "c")}  # a and b act in round 0 and receive nothing

    without_a = rows["a", "c"]
    assert (without_a["baseline_answer"], without_a["ablated_answer"], without_a["answer_changed"]) == ("9", "9", False)
    assert without_a["team_reward_change"] == 0.0

    without_b = rows["b", "c"]  # c now sees only a's 7
    assert (without_b["baseline_answer"], without_b["ablated_answer"], without_b["answer_changed"]) == ("9", "7", True)
    assert without_b["baseline_team_reward"] == 1.0 and without_b["ablated_team_reward"] == 0.0
    assert without_b["team_reward_change"] == -1.0 and without_b["ablated_receiver_reward"] == 0.0
    assert without_b["recorded_answer"] == "9" and without_b["message_round"] == 0 and without_b["receiver_round"] == 1

    # one baseline + two ablations, each greedy, with the judge's adapter, and the prompt lost b's line
    assert len(backend.requests) == 3
    assert {(r.adapter, r.temperature, r.max_new_tokens) for r in backend.requests} == {("c_adapter", 0.0, 12)}
    baseline, _, no_b = ("\n".join(m["content"] for m in r.messages) for r in backend.requests)
    assert "Message from b" in baseline and "Message from b" not in no_b and "Message from a" in no_b

    summary = {(r["sender"], r["receiver"]): r for r in summarise_ablation(rows.values())}
    assert summary["b", "c"]["answer_change_rate"] == 1.0 and summary["a", "c"]["answer_change_rate"] == 0.0
    assert summary["b", "c"]["mean_team_reward_change"] == -1.0
    graph = influence_graph(summarise_ablation(rows.values()), weight="answer_change_rate")
    assert graph["b"]["c"]["weight"] == 1.0 and graph["a"]["c"]["weight"] == 0.0


def test_replacing_messages_with_other_episodes(episode):
    scenario = _judge_scenario()
    first = _judged(episode, "7", "9", "9", truth="9")
    second = _judged(episode, "5", "4", "4", truth="4")
    rows = ablation_influence([first, second], scenario, LastNumberBackend(), mode="replace")
    got = {(r["episode_id"], r["sender"]): (r["ablated_answer"], r["answer_changed"], r["team_reward_change"]) for r in rows}
    assert got == {
        (first.episode_id, "a"): ("9", False, 0.0),    # a's 7 -> 5: b's 9 still comes last
        (first.episode_id, "b"): ("4", True, -1.0),    # b's 9 -> 4 (from the second episode)
        (second.episode_id, "a"): ("4", False, 0.0),
        (second.episode_id, "b"): ("9", True, -1.0),   # b's 4 -> 9, and the reference is 4
    }


def test_sampling_and_bad_mode(episode):
    scenario = _judge_scenario()
    eps = [_judged(episode, "7", str(n), str(n), truth="9") for n in range(10)]
    rows = ablation_influence(eps, scenario, LastNumberBackend(), sample=3, seed=1)
    assert len({r["episode_id"] for r in rows}) == 3 and len(rows) == 6
    with pytest.raises(ValueError, match="remove, replace"):
        ablation_influence(eps, scenario, LastNumberBackend(), mode="shuffle")


def test_ablation_on_the_debate_scenario_runs_end_to_end():
    # A smoke test on a real scenario and the env's real prompts (debate's complete graph).
    import random

    from multiagent_rl import load_scenario
    from multiagent_rl.analysis.synthetic import synthetic_debate_episode

    rng = random.Random(0)
    eps = [synthetic_debate_episode(rng, step=1, skill=0.5, solvers=3, rounds=2) for _ in range(4)]
    rows = ablation_influence(eps, load_scenario("debate", solvers=3), LastNumberBackend(), sample=2)
    # 2 episodes x 3 receivers x 2 incoming round-0 messages each
    assert len(rows) == 12
    assert all(r["receiver_round"] == 1 and r["message_round"] == 0 for r in rows)


def test_run_analysis_adds_the_ablation_with_a_backend(episode, tmp_path):
    from multiagent_rl.analysis import run_analysis
    from multiagent_rl.records import EpisodeLog

    eps = [_judged(episode, "7", "9", "9", truth="9"), _judged(episode, "5", "4", "4", truth="4")]
    EpisodeLog(tmp_path / "run" / "episodes" / "step-000003.msgpack", fsync=False).extend(eps)
    text, path = run_analysis(tmp_path / "run", progress=False, backend=LastNumberBackend(), scenario=_judge_scenario())
    assert "strongest causal edge (ablation)" in text and "b→c 100%" in text
    html = path.read_text(encoding="utf-8")
    assert "Causal influence by ablation" in html
    # Five plots and the ablation graph: no debate plot, the judge alone answers in the last round.
    assert html.count("data:image/png;base64,") == 6 and "Debate dynamics" not in html
