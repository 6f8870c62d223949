"""Batched multi-agent rollouts: B tasks x G samples as parallel TeamEnv episodes,
with ONE backend call per turn step for every acting model agent of every running
episode, whatever their lengths: a batch takes as many calls as its longest episode.

>>> batch = rollout(scenario, backend, tasks, group_size=8, adapters=adapter_map(scenario))  # doctest: +SKIP
>>> batch.episodes[0].rewards, batch.samples[0].completion_ids                              # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from .backends.base import GenerationBackend, GenerationRequest, GenerationResult
from .env import TeamEnv
from .records import Episode, EpisodeLog, Task
from .scenario import Scenario


@dataclass
class Sampling:
    """Run-wide sampling settings; a Role's own temperature / max_new_tokens win over these."""

    temperature: float | None = None  # None: the scenario's default
    top_p: float = 1.0
    max_new_tokens: int | None = None  # None: the scenario's default
    greedy: bool = False  # evaluation: temperature 0 for every role


@dataclass
class TurnSample:
    """One agent turn, as every trainer needs it: filled once, by the rollout."""

    episode: int  # index into RolloutBatch.episodes
    group: int  # index of the task: episodes of one group share a task
    agent: str
    adapter: str | None  # None: the base model played it
    round: int
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]  # the rollout's own, per completion token
    finish_reason: str
    temperature: float = 1.0  # the one it was sampled at
    turn: int = 0  # its place in the episode's turns (Episode.turns[turn])
    state: str = ""  # the global state when it was taken (TeamEnv.state(): task, private views, messages)
    reward: float = 0.0  # the reward given at this turn (the episode's final reward is on Episode.rewards)
    trainable: bool = True  # False: no training sample (the base model played it, or the scenario said so)

    @property
    def key(self) -> tuple[int, int]:
        """Unique within a batch: (episode, turn)."""
        return (self.episode, self.turn)


@dataclass
class RolloutBatch:
    episodes: list[Episode] = field(default_factory=list)
    samples: list[TurnSample] = field(default_factory=list)
    generated_tokens: int = 0
    generate_seconds: float = 0.0
    backend_calls: int = 0


def rollout(
    scenario: Scenario,
    backend: GenerationBackend,
    tasks: Sequence[Task],
    group_size: int = 1,
    adapters: Mapping[str, str | None] | None = None,
    sampling: Sampling | None = None,
    seed: int = 0,
    split: str = "train",
    step: int | None = None,
    log: EpisodeLog | None = None,
    progress: bool = False,
    first_group: int = 0,
    contain_failures: bool = False,
    reward_timeout: float | None = None,
) -> RolloutBatch:
    """Play every task `group_size` times; episodes finish together and are appended to `log`.

    `adapters` maps agent -> adapter name (None: the base model); default: the scenario's.
    `first_group`: the global index of `tasks[0]` when this process plays a shard of a
    larger batch, so group ids and per-episode seeds do not depend on the sharding.
    `contain_failures`, `reward_timeout`: a failing reward marks its episode failed instead of
    raising (see `TeamEnv`).
    """
    sampling = sampling or Sampling()
    adapters = dict(adapters) if adapters is not None else {r.name: r.adapter_name for r in scenario.roles if not r.scripted}
    envs: list[TeamEnv] = []
    groups: list[int] = []
    for g, task in enumerate(tasks, start=first_group):
        for k in range(group_size):
            env = scenario.make_env(task=task, split=split, contain_failures=contain_failures, reward_timeout=reward_timeout)
            env.reset(seed=seed * 100_003 + g * 1_009 + k, options={"task": task})
            envs.append(env)
            groups.append(g)
    players = resolve_players(scenario, adapters, sampling)
    batch = RolloutBatch()
    bar = tqdm(total=scenario.num_rounds, desc=f"rollout {scenario.name}", disable=not progress, leave=False)
    round_index = 0
    while any(env.agents for env in envs):
        requests: list[GenerationRequest] = []
        states: dict[int, tuple[str, int]] = {}  # env -> (global state before this step, turns so far)
        for e, env in enumerate(envs):
            acting = env.model_agents() if env.agents else []
            if env.agents:
                states[e] = (env.state(), len(env.turns))
            for agent in acting:
                player = players[agent]
                requests.append(
                    GenerationRequest(
                        messages=env.chat(agent), adapter=player.adapter, max_new_tokens=player.max_new_tokens,
                        temperature=player.temperature, top_p=player.top_p, tag=(e, agent),
                    )
                )
        start = time.perf_counter()
        results = backend.generate(requests, seed=seed * 1_000 + round_index) if requests else []
        batch.generate_seconds += time.perf_counter() - start
        batch.backend_calls += bool(requests)
        actions: list[dict[str, Played]] = [{} for _ in envs]
        for result in results:
            e, agent = result.tag
            actions[e][agent] = Played(result, players[agent].adapter)
        for e, env in enumerate(envs):
            if env.agents:
                env.step(actions[e])  # the env keeps each generation's facts on its turn
        for result in results:
            e, agent = result.tag
            state, turns_before = states[e]
            turns = envs[e].turns
            turn = next(i for i in range(turns_before, len(turns)) if turns[i].agent == agent and not turns[i].scripted)
            batch.generated_tokens += len(result.completion_ids)
            batch.samples.append(
                TurnSample(
                    episode=e,
                    group=groups[e],
                    agent=agent,
                    adapter=players[agent].adapter,
                    round=turns[turn].round,
                    prompt_ids=result.prompt_ids,
                    completion_ids=result.completion_ids,
                    logprobs=result.logprobs,
                    finish_reason=result.finish_reason,
                    temperature=players[agent].temperature,
                    turn=turn,
                    state=state,
                    reward=turns[turn].reward,
                    trainable=players[agent].adapter is not None and turns[turn].trainable,
                )
            )
        round_index += 1
        bar.update(1)
    bar.close()
    for e, env in enumerate(envs):
        batch.episodes.append(env.episode(step=step, group=groups[e], seed=seed))
    if log is not None:
        log.extend(batch.episodes)
    return batch


@dataclass
class Played:
    """A generation as the env's action: the result's text and facts, and the adapter that played it."""

    result: GenerationResult
    adapter: str | None

    @property
    def text(self) -> str:
        return self.result.text

    def __getattr__(self, name: str):
        return getattr(self.result, name)


@dataclass(frozen=True)
class Player:
    """Who plays an agent and how: resolved once per rollout, used for its requests, its
    turns in the env (through `Played`) and its training samples."""

    adapter: str | None  # None: the base model
    temperature: float
    top_p: float
    max_new_tokens: int


def resolve_players(scenario: Scenario, adapters: Mapping[str, str | None], sampling: Sampling) -> dict[str, Player]:
    """The player of every model-played agent. Sampling: greedy for evaluation; else the
    role's own temperature and budget, else the run's, else the scenario's."""
    players = {}
    missing = [r.name for r in scenario.roles if not r.scripted and r.name not in adapters]
    if missing:
        raise ValueError(f"no adapter given for {', '.join(missing)} (None plays the base model)")
    for role in scenario.roles:
        if role.scripted:
            continue
        if sampling.greedy:
            temperature = 0.0
        elif role.temperature is not None:
            temperature = role.temperature
        else:
            temperature = sampling.temperature if sampling.temperature is not None else scenario.temperature
        players[role.name] = Player(
            adapter=adapters[role.name],
            temperature=temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            max_new_tokens=role.max_new_tokens or sampling.max_new_tokens or scenario.max_new_tokens,
        )
    return players
