"""Batched rollouts with the tiny model: B tasks x G episodes, ONE backend call per round,
one sample per acting agent turn, the episode log, per-role sampling and adapter maps."""

from __future__ import annotations

import random

import pytest

from multiagent_rl import (
    EpisodeLog,
    Role,
    Scenario,
    Task,
    complete,
    individual_rewards,
    read_episodes,
)
from multiagent_rl.adapters import LoraSettings, adapter_map, adapter_names, attach_adapters
from multiagent_rl.backends.base import GenerationRequest, GenerationResult
from multiagent_rl.backends.hf import HFBackend
from multiagent_rl.models import load_model
from multiagent_rl.rollout import Sampling, rollout

AGENTS = ["writer", "editor", "reader"]


def make_task(rng: random.Random) -> Task:
    n = rng.randint(0, 10**6)
    return Task(key=f"n{n}", prompt=f"Describe the number {n}.", answer=str(n))


def reward(task: Task, episode) -> dict[str, float]:
    # text-dependent, so random completions give different rewards
    lengths = {a: 0 for a in AGENTS}
    for turn in episode.turns:
        lengths[turn.agent] += len(turn.message.text)
    return individual_rewards({a: n / 100 for a, n in lengths.items()})


def trio(temperature: float = 1.0) -> Scenario:
    """writer and reader share the adapter 'author'; editor has its own and its own sampling."""
    return Scenario(
        name="trio",
        roles=[
            Role("writer", "Write one line.", adapter="author", temperature=0.7),
            Role("editor", "Fix the line.", max_new_tokens=2),
            Role("reader", "Judge the line.", adapter="author"),
        ],
        graph=complete(AGENTS),
        schedule=[["writer", "editor"], ["reader"]],
        make_task=make_task,
        reward=reward,
        max_new_tokens=5,
        temperature=temperature,
    )


class CountingBackend:
    """Wraps a backend and records every generate call's requests."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests, seed=None) -> list[GenerationResult]:
        self.calls.append(list(requests))
        return self.inner.generate(requests, seed=seed)

    def sync(self, model, adapters, folder) -> None:
        return None


@pytest.fixture(scope="module")
def hf(single_thread) -> HFBackend:
    model, tokenizer = load_model("tiny")
    names = adapter_names(adapter_map(trio(), "per_role")) + ["shared"]
    return HFBackend(attach_adapters(model, names, LoraSettings(rank=2, target_modules=["q_proj"])), tokenizer)


def tasks(n: int, seed: int = 0) -> list[Task]:
    rng = random.Random(seed)
    return [trio().sample_task(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def played(hf, tmp_path_factory):
    """2 tasks x 3 samples of the trio, logged."""
    scenario = trio()
    backend = CountingBackend(hf)
    log = EpisodeLog(tmp_path_factory.mktemp("rollout") / "episodes" / "step-000001.msgpack")
    batch = rollout(scenario, backend, tasks(2), group_size=3, seed=4, step=1, log=log)
    return scenario, backend, batch, log


def test_b_tasks_times_g_episodes_in_groups(played):
    _, _, batch, _ = played
    assert len(batch.episodes) == 6
    assert [ep.group for ep in batch.episodes] == [0, 0, 0, 1, 1, 1]
    keys = [ep.task.key for ep in batch.episodes]
    assert keys[0] == keys[1] == keys[2] != keys[3] == keys[4] == keys[5]
    assert len({ep.episode_id for ep in batch.episodes}) == 6
    assert all(ep.step == 1 for ep in batch.episodes)
    assert all(set(ep.rewards) == set(AGENTS) for ep in batch.episodes)


def test_each_round_is_one_backend_call_for_every_acting_agent(played):
    _, backend, batch, _ = played
    assert batch.backend_calls == len(backend.calls) == 2
    # round 0: writer + editor in 6 episodes; round 1: reader in 6
    assert [len(c) for c in backend.calls] == [12, 6]
    assert sorted(r.tag for r in backend.calls[0]) == sorted((e, a) for e in range(6) for a in ("writer", "editor"))
    assert sorted(r.tag for r in backend.calls[1]) == [(e, "reader") for e in range(6)]


def test_one_sample_per_acting_agent_turn(played):
    _, _, batch, _ = played
    assert len(batch.samples) == 18
    turns = {(ep_index, t.agent, t.round) for ep_index, ep in enumerate(batch.episodes) for t in ep.turns}
    assert {(s.episode, s.agent, s.round) for s in batch.samples} == turns
    for s in batch.samples:
        assert s.group == batch.episodes[s.episode].group
        assert s.completion_ids and len(s.logprobs) == len(s.completion_ids)
        turn = next(t for t in batch.episodes[s.episode].turns if t.agent == s.agent and t.round == s.round)
        assert turn.completion_tokens == len(s.completion_ids)
        assert turn.prompt_tokens == len(s.prompt_ids)
    assert batch.generated_tokens == sum(len(s.completion_ids) for s in batch.samples)


def test_the_round_two_prompt_holds_round_one_messages(played):
    _, backend, batch, _ = played
    reader_request = next(r for r in backend.calls[1] if r.tag == (0, "reader"))
    prompt = "\n".join(m["content"] for m in reader_request.messages)
    writer_text = next(t.message.text for t in batch.episodes[0].turns if t.agent == "writer")
    assert f"Message from writer (round 1): {writer_text}" in prompt


def test_episodes_are_appended_to_the_log_and_readable(played):
    _, _, batch, log = played
    result = read_episodes(log.path)
    assert result.complete
    assert [ep.episode_id for ep in result.episodes] == [ep.episode_id for ep in batch.episodes]
    assert result.episodes[4].turns[0].message.text == batch.episodes[4].turns[0].message.text
    assert result.episodes[4].rewards == batch.episodes[4].rewards


def test_role_overrides_reach_the_requests(played):
    _, backend, _, _ = played
    by_agent = {r.tag[1]: r for call in backend.calls for r in call}
    assert (by_agent["writer"].temperature, by_agent["writer"].max_new_tokens) == (0.7, 5)
    assert (by_agent["editor"].temperature, by_agent["editor"].max_new_tokens) == (1.0, 2)
    assert (by_agent["reader"].temperature, by_agent["reader"].max_new_tokens) == (1.0, 5)


def test_run_sampling_and_greedy_evaluation(hf):
    backend = CountingBackend(hf)
    rollout(trio(), backend, tasks(1), sampling=Sampling(temperature=0.3, max_new_tokens=3, top_p=0.9))
    by_agent = {r.tag[1]: r for call in backend.calls for r in call}
    # the run's settings fill in what a role leaves open; a role's own values win
    assert (by_agent["writer"].temperature, by_agent["writer"].max_new_tokens) == (0.7, 3)
    assert (by_agent["editor"].temperature, by_agent["editor"].max_new_tokens) == (0.3, 2)
    assert (by_agent["reader"].temperature, by_agent["reader"].max_new_tokens) == (0.3, 3)
    assert {r.top_p for r in by_agent.values()} == {0.9}
    backend.calls.clear()
    rollout(trio(), backend, tasks(1), sampling=Sampling(greedy=True, top_p=0.5))
    assert {(r.temperature, r.top_p) for call in backend.calls for r in call} == {(0.0, 1.0)}


def test_scenario_default_temperature_is_used(hf):
    backend = CountingBackend(hf)
    rollout(trio(temperature=0.4), backend, tasks(1))
    reader = next(r for call in backend.calls for r in call if r.tag[1] == "reader")
    assert reader.temperature == 0.4


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("per_role", {"writer": "author", "editor": "editor", "reader": "author"}),
        ("shared", {"writer": "shared", "editor": "shared", "reader": "shared"}),
    ],
)
def test_adapter_maps_reach_requests_and_samples(hf, mode, expected):
    scenario = trio()
    mapping = adapter_map(scenario, mode)
    assert mapping == expected
    backend = CountingBackend(hf)
    batch = rollout(scenario, backend, tasks(1), group_size=2, adapters=mapping)
    assert {r.tag[1]: r.adapter for call in backend.calls for r in call} == expected
    assert {s.agent: s.adapter for s in batch.samples} == expected


@pytest.mark.parametrize("mode", ["shared", "base"])
def test_logged_turns_name_the_adapter_that_generated_them(hf, mode):
    mapping = adapter_map(trio(), "shared") if mode == "shared" else dict.fromkeys(AGENTS)
    batch = rollout(trio(), CountingBackend(hf), tasks(1), adapters=mapping)
    assert {t.agent: t.adapter for t in batch.episodes[0].turns} == mapping


def test_default_adapters_are_the_scenarios_and_none_means_base(hf):
    backend = CountingBackend(hf)
    rollout(trio(), backend, tasks(1))
    assert {r.tag[1]: r.adapter for call in backend.calls for r in call} == {"writer": "author", "editor": "editor", "reader": "author"}
    backend.calls.clear()
    batch = rollout(trio(), backend, tasks(1), adapters=dict.fromkeys(AGENTS))
    assert {r.adapter for call in backend.calls for r in call} == {None}
    assert {s.adapter for s in batch.samples} == {None}


def test_rollouts_are_reproducible_for_a_seed(hf):
    first = rollout(trio(), hf, tasks(1), group_size=2, seed=7)
    again = rollout(trio(), hf, tasks(1), group_size=2, seed=7)
    assert [s.completion_ids for s in first.samples] == [s.completion_ids for s in again.samples]
    assert [ep.rewards for ep in first.episodes] == [ep.rewards for ep in again.episodes]
