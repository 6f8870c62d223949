"""Batched multi-agent rollouts: B tasks x G samples as parallel TeamEnv episodes,
with ONE backend call per turn step for every acting model agent of every running
episode, whatever their lengths: a batch takes as many calls as its longest episode.

>>> batch = rollout(scenario, backend, tasks, group_size=8, adapters=adapter_map(scenario))  # doctest: +SKIP
>>> batch.episodes[0].rewards, batch.samples[0].completion_ids                              # doctest: +SKIP
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from .actions import Action
from .backends.base import GenerationBackend, GenerationRequest, GenerationResult
from .branching import Fork, MoveForks
from .env import TeamEnv
from .records import Episode, EpisodeLog, Task
from .scenario import Role, Scenario
from .seeds import branch_seed, episode_seed, generate_seed
from .symbols import SymbolChannel


@dataclass
class Sampling:
    """Run-wide sampling settings; a Role's own temperature / max_new_tokens win over these."""

    temperature: float | None = None  # None: the scenario's default
    top_p: float = 1.0
    max_new_tokens: int | None = None  # None: the scenario's default
    greedy: bool = False  # evaluation: temperature 0 for every role


@dataclass
class TurnSample:
    """One model turn, as every trainer needs it: filled once, by the rollout."""

    episode: int  # index into RolloutBatch.episodes
    group: int  # index of the task: episodes of one group share a task
    agent: str
    adapter: str | None  # None: the base model played it
    round: int  # the episode's turn step it was taken in (its decision point)
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]  # the sampler's own, per completion token
    finish_reason: str
    temperature: float = 1.0  # the one it was sampled at
    turn: int = 0  # its place in the episode's turns (Episode.turns[turn])
    reward: float = 0.0  # what the agent earned at this turn (Turn.reward; the rest is in the episode's ledger)
    trainable: bool = True  # False: no training sample (the base model played it, or the scenario said so)
    branch: tuple[int, ...] = ()  # its node in the task's tree (sample index, then fork alternatives): see rollout
    policy_version: int | None = None  # the update count of the adapters that sampled it (None: not a training run)
    allowed_token_ids: tuple[int, ...] | None = None  # a symbol channel's tokens: sampled, and scored, among these only

    @property
    def key(self) -> tuple[int, int]:
        """Unique within a batch: (episode, turn)."""
        return (self.episode, self.turn)


@dataclass
class Decision:
    """A decision forked once per legal move (`rollout.move_forks`): nothing was generated
    there; the branch playing move i is the tree node `node + (i,)`, so the leaves below each
    child give that move's value under the policies that played on."""

    group: int
    agent: str
    adapter: str  # the live adapter whose policy over `moves` it is
    round: int
    node: tuple[int, ...]  # its place in the task's tree (as `TurnSample.branch`)
    chat: list[dict[str, str]]  # what the agent was shown, as a chat
    moves: list[str]  # the legal moves, each as the reply that plays it
    temperature: float  # the player's sampling temperature: its policy over moves is read at it


@dataclass
class RolloutBatch:
    episodes: list[Episode] = field(default_factory=list)
    samples: list[TurnSample] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)  # move-forked decisions (rollout.move_forks)
    # (episode, round) -> the global state (TeamEnv.state()) before that turn step, when asked
    states: dict[tuple[int, int], str] = field(default_factory=dict)
    generated_tokens: int = 0
    generate_seconds: float = 0.0
    backend_calls: int = 0

    def without_failed_groups(self) -> RolloutBatch:
        """The batch a trainer learns from: every task group with a failed episode (its user
        code raised) left out whole, so no group's baseline is computed from part of it.
        Episodes are renumbered; samples and states follow them."""
        broken = {ep.group for ep in self.episodes if ep.failure is not None}
        if not broken:
            return self
        kept = [e for e, ep in enumerate(self.episodes) if ep.group not in broken]
        new_index = {old: new for new, old in enumerate(kept)}
        return RolloutBatch(
            episodes=[self.episodes[e] for e in kept],
            samples=[replace(s, episode=new_index[s.episode]) for s in self.samples if s.episode in new_index],
            decisions=[d for d in self.decisions if d.group not in broken],
            states={(new_index[e], r): text for (e, r), text in self.states.items() if e in new_index},
            generated_tokens=self.generated_tokens, generate_seconds=self.generate_seconds, backend_calls=self.backend_calls,
        )

    def reweighted(self, weights: Mapping[str, float]) -> RolloutBatch:
        """The batch with the ledger terms in `weights` scaled (`Episode.reweighted`): what a
        trainer learns from while shaping anneals; the logged episodes keep their values."""
        if not weights:
            return self
        return replace(self, episodes=[ep.reweighted(weights) for ep in self.episodes])


def rollout(
    scenario: Scenario,
    backend: GenerationBackend,
    tasks: Sequence[Task],
    group_size: int = 1,
    adapters: Mapping[str, str | None] | Sequence[Mapping[str, str | None]] | None = None,
    sampling: Sampling | None = None,
    seed: int = 0,
    split: str = "train",
    step: int | None = None,
    log: EpisodeLog | None = None,
    progress: bool = False,
    first_group: int = 0,
    contain_failures: bool = False,
    reward_timeout: float | None = None,
    record_states: bool = False,
    frozen: Collection[str] = (),
    branching: Sequence[Fork] = (),
    policy_version: int | None = None,
    move_forks: MoveForks | None = None,
) -> RolloutBatch:
    """Play every task `group_size` times; episodes finish together and are appended to `log`.

    `adapters` maps agent -> adapter name (None: the base model); default: the scenario's.
    A list of maps, one per task, seats each task group its own way (a league: the learner
    in one seat, a snapshot in the other). Turns played by a `frozen` adapter are never trained.
    `first_group`: the global index of `tasks[0]` when this process plays a shard of a
    larger batch, so group ids and per-episode seeds do not depend on the sharding.
    `contain_failures`, `reward_timeout`: a failing reward marks its episode failed instead of
    raising (see `TeamEnv`). `record_states`: keep the global state before each turn step
    (`RolloutBatch.states`), for trainers that read it (a centralised critic).
    `branching`: forks (`multiagent_rl.branching`): each episode continues n times from each
    fork, all branches in the same lockstep calls; each episode's `branch` is its path in its
    task's tree, each sample's `branch` the node its turn belongs to (made once, shared below).
    `policy_version`: the update count of the adapters playing, recorded in every sample and episode.
    `move_forks`: fork trainable decisions once per legal move, the move forced
    (`RolloutBatch.decisions`); see `multiagent_rl.branching.MoveForks`.
    """
    sampling = sampling or Sampling()
    if adapters is None:
        adapters = {r.name: r.adapter_name for r in scenario.roles if not r.scripted}
    seatings = [dict(a) for a in adapters] if not isinstance(adapters, Mapping) else [dict(adapters)] * len(tasks)
    if len(seatings) != len(tasks):
        raise ValueError(f"{len(seatings)} adapter maps for {len(tasks)} tasks; give one map, or one per task")
    slots: list[Slot] = []
    resolved: dict[tuple, dict[str, Player]] = {}  # each distinct seating's players, resolved once
    for g, (task, seating) in enumerate(zip(tasks, seatings, strict=True), start=first_group):
        key = tuple(sorted(seating.items(), key=lambda item: item[0]))
        if key not in resolved:
            resolved[key] = resolve_players(scenario, seating, sampling)
        for k in range(group_size):
            env = scenario.make_env(task=task, split=split, contain_failures=contain_failures, reward_timeout=reward_timeout)
            env.reset(seed=episode_seed(seed, g, k), options={"task": task})
            slots.append(Slot(env=env, group=g, players=resolved[key], path=(k,)))
    batch = RolloutBatch()
    sample_slots: list[Slot] = []  # the slot that made each sample: its episode index is known at the end
    bar = tqdm(total=scenario.num_rounds, desc=f"rollout {scenario.name}", disable=not progress, leave=False)
    turn_step = 0
    while any(slot.env.agents for slot in slots):
        for slot in [s for s in slots if s.env.agents]:
            slots.extend(slot.branch(branching, seed))
        if move_forks is not None:
            for slot in [s for s in slots if s.env.agents]:
                slots.extend(slot.fork_moves(move_forks, seed, frozen, batch.decisions))
        requests: list[GenerationRequest] = []
        for e, slot in enumerate(slots):
            env = slot.env
            if not env.agents:
                continue
            if record_states:
                batch.states[(id(slot), env.round)] = env.state()
            for agent in env.model_agents():
                if agent in slot.held or agent in slot.forced:
                    continue  # this branch takes its sibling's reply (a counterfactual fork), or plays a forced move
                player = slot.players[agent]
                requests.append(
                    GenerationRequest(
                        messages=env.chat(agent), adapter=player.adapter, max_new_tokens=player.max_new_tokens,
                        temperature=player.temperature, top_p=player.top_p, channel=player.channel, tag=(e, agent),
                    )
                )
        start = time.perf_counter()
        results = backend.generate(requests, seed=generate_seed(seed, turn_step)) if requests else []
        batch.generate_seconds += time.perf_counter() - start
        batch.backend_calls += bool(requests)
        generated: dict[int, dict[str, GenerationResult]] = {id(slot): {} for slot in slots}
        for result in results:
            e, agent = result.tag
            generated[id(slots[e])][agent] = result
            batch.generated_tokens += len(result.completion_ids)
        for slot in slots:
            env = slot.env
            if not env.agents:
                continue
            own = generated[id(slot)]
            replies = {**{a: generated[id(slot.source_of(a))][a] for a in slot.held}, **own}
            actions = {agent: slot.players[agent].action(result) for agent, result in replies.items()}
            actions.update({agent: slot.players[agent].forced(move) for agent, move in slot.forced.items()})
            made = env.advance(actions)
            first = len(env.turns) - len(made)
            for i, turn in enumerate(made, start=first):
                result = own.get(turn.agent) if not turn.scripted else None
                if result is None:
                    continue
                player = slot.players[turn.agent]
                sample_slots.append(slot)
                batch.samples.append(
                    TurnSample(
                        episode=-1, group=slot.group, agent=turn.agent, adapter=player.adapter, round=turn.round,
                        prompt_ids=result.prompt_ids, completion_ids=result.completion_ids, logprobs=result.logprobs,
                        finish_reason=result.finish_reason, temperature=player.temperature, turn=i, reward=turn.reward,
                        trainable=player.adapter is not None and player.adapter not in frozen and turn.trainable,
                        branch=slot.node_of(turn.agent), policy_version=policy_version,
                        allowed_token_ids=result.allowed_token_ids,
                    )
                )
            slot.end_turn_step()
        turn_step += 1
        bar.update(1)
    bar.close()
    # Leaves in tree order: a task's branches side by side, each under its parent.
    slots.sort(key=lambda slot: (slot.group, slot.path))
    index = {id(slot): e for e, slot in enumerate(slots)}
    for sample, slot in zip(batch.samples, sample_slots, strict=True):
        sample.episode = index[id(slot)]
    batch.states = {(index[slot_id], r): text for (slot_id, r), text in batch.states.items()}
    for slot in slots:
        episode = slot.env.episode(step=step, group=slot.group, seed=seed, branch=list(slot.path))
        episode.policy_version = policy_version
        batch.episodes.append(episode)
    if log is not None:
        log.extend(batch.episodes)
    return batch


@dataclass(eq=False)
class Slot:
    """One running episode of a rollout and where it sits in its task's tree: `path` is its
    sample index in the group, then its alternative at each fork it passed."""

    env: TeamEnv
    group: int
    players: dict[str, Player]
    path: tuple[int, ...]
    forks_passed: frozenset[int] = frozenset()
    # This turn step only: agent -> the sibling whose reply it takes (held fixed by a
    # counterfactual fork), and agent -> the depth of the tree node its own turn belongs to.
    held: dict[str, Slot] = field(default_factory=dict)
    node_depth: dict[str, int] = field(default_factory=dict)
    forced: dict[str, str] = field(default_factory=dict)  # agent -> the move this branch plays (a move fork)
    move_forks: int = 0  # move forks passed on this slot's path

    def branch(self, plan: Sequence[Fork], seed: int) -> list[Slot]:
        """Apply every fork of `plan` due now: this slot goes on as alternative 0 and the new
        slots (alternatives 1..n-1, each a fork of the episode) are returned."""
        new: list[Slot] = []
        acting = self.env.acting_agents()
        for f, fork in enumerate(plan):
            due = fork.step == self.env.round if fork.step is not None else fork.agent in acting
            if f in self.forks_passed or not due:
                continue
            family = [self, *new]  # slots already made by an earlier fork this step fork too
            kept = [a for a in self.env.model_agents() if fork.resample is not None and a not in fork.resample]
            for slot in family:
                slot.forks_passed |= {f}
                depth = len(slot.path)
                for agent in kept:  # held fixed: one reply for every alternative, its node the parent
                    slot.node_depth[agent] = min(slot.node_depth.get(agent, depth), depth)
                for alternative in range(1, fork.n):
                    path = (*slot.path, alternative)
                    other = Slot(
                        env=slot.env.fork(branch_seed(seed, slot.group, path)), group=slot.group, players=slot.players,
                        path=path, forks_passed=slot.forks_passed, held={**slot.held, **dict.fromkeys(kept, slot)},
                        node_depth=dict(slot.node_depth),
                    )
                    new.append(other)
                slot.path = (*slot.path, 0)
        return new

    def fork_moves(self, forks: MoveForks, seed: int, frozen: Collection[str], decisions: list[Decision]) -> list[Slot]:
        """Fork this slot once per legal move of its one acting model agent, when that agent
        plays a live adapter, the scenario lists more than one move and `forks` says so here:
        this slot plays move 0 and the new slots (one per other move) are returned; the
        decision is appended to `decisions`."""
        acting = self.env.model_agents()
        if len(acting) != 1 or (forks.max_forks is not None and self.move_forks >= forks.max_forks):
            return []
        (agent,) = acting
        player = self.players[agent]
        if player.adapter is None or player.adapter in frozen or agent in self.held:
            return []
        draw = random.Random(branch_seed(seed, self.group, self.path) * 31 + self.env.round).random()
        if forks.probability < 1 and draw >= forks.probability:
            return []
        moves = self.env.legal_moves(agent)
        if moves is None or len(moves) < 2:
            return []
        decisions.append(Decision(group=self.group, agent=agent, adapter=player.adapter, round=self.env.round,
                                  node=self.path, chat=self.env.chat(agent), moves=moves,
                                  temperature=player.temperature))
        new = [
            Slot(env=self.env.fork(branch_seed(seed, self.group, (*self.path, i))), group=self.group,
                 players=self.players, path=(*self.path, i), forks_passed=self.forks_passed,
                 forced={agent: move}, move_forks=self.move_forks + 1)
            for i, move in enumerate(moves[1:], start=1)
        ]
        self.path, self.forced, self.move_forks = (*self.path, 0), {agent: moves[0]}, self.move_forks + 1
        return new

    def source_of(self, agent: str) -> Slot:
        """The slot whose generated reply `agent` plays this turn step."""
        slot = self
        while agent in slot.held:
            slot = slot.held[agent]
        return slot

    def node_of(self, agent: str) -> tuple[int, ...]:
        """The tree node of `agent`'s turn made now: this slot's path, or a shorter prefix
        where a fork held the reply fixed for every alternative below it."""
        return self.path[: self.node_depth.get(agent, len(self.path))]

    def end_turn_step(self) -> None:
        self.held, self.node_depth, self.forced = {}, {}, {}


@dataclass(frozen=True)
class Player:
    """Who plays an agent and how: resolved once per rollout, used for its requests, its
    turns in the env (its `Action`s) and its training samples."""

    adapter: str | None  # None: the base model
    temperature: float
    top_p: float
    max_new_tokens: int
    channel: SymbolChannel | None = None  # its messages are symbols only

    def forced(self, move: str) -> Action:
        """A move this player plays in a move-forked branch: nothing generated, nothing to train."""
        return Action(text=move, adapter=self.adapter, finish_reason="forced", temperature=self.temperature)

    def action(self, result: GenerationResult) -> Action:
        """A generation of this player's as the env's typed action."""
        return Action(
            text=result.text, adapter=self.adapter, prompt_ids=result.prompt_ids, completion_ids=result.completion_ids,
            logprobs=result.logprobs, finish_reason=result.finish_reason, temperature=self.temperature,
        )


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
            max_new_tokens=completion_budget(scenario, role, sampling.max_new_tokens),
            channel=role.channel,
        )
    return players


def completion_budget(scenario: Scenario, role: Role, run_max_new_tokens: int | None) -> int:
    """The most tokens one turn of `role` may generate: the role's own budget, else the run's
    (`max_new_tokens`), else the scenario's; a symbol channel's length, whatever those say.
    The one rule, for requests and memory checks."""
    if role.channel is not None:
        return role.channel.length
    return role.max_new_tokens or run_max_new_tokens or scenario.max_new_tokens
