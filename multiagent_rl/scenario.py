"""Declaring a scenario in plain Python (roles, message graph, schedule, tasks, rewards) and
checking the declaration. The helpers reward functions use are in `rewards`; finding a
scenario by name or file (`load_scenario`) is in `registry`.

>>> from multiagent_rl import Scenario, Role, Task, complete, team_reward, answers_match
>>> def make_task(rng):
...     a, b = rng.randint(1, 20), rng.randint(1, 20)
...     return Task(key=f"{a}+{b}", prompt=f"What is {a} + {b}?", answer=str(a + b))
>>> def reward(task, episode):
...     return team_reward(float(answers_match(episode.team_answer, task.answer)), episode.teams)
>>> duo = Scenario(
...     name="duo",
...     roles=[Role("alice", "Solve it. End with <answer>N</answer>."),
...            Role("bob", "Check alice. End with <answer>N</answer>.")],
...     graph=complete(["alice", "bob"]),
...     schedule=[["alice", "bob"], ["alice", "bob"]],
...     make_task=make_task,
...     reward=reward,
... )
"""

from __future__ import annotations

import copy
import dataclasses
import random
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .answers import parse_answer
from .config import ConfigError, check_train_defaults
from .errors import ScenarioError
from .graph import GraphError, GraphSpec, MessageGraph, graph_for_round
from .records import Episode, RewardEntry, Task
from .rewards import WeightedReward, check_rewards, majority_answer
from .symbols import SymbolChannel
from .task_sources import TaskTable

if TYPE_CHECKING:
    from .env import TeamEnv

__all__ = ["SPLITS", "Role", "Scenario", "ScenarioError"]

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Role:
    """An agent's part in a scenario.

    `adapter` names the LoRA adapter that plays the role; roles naming the same
    adapter share it (and its gradients). `team` groups agents for team and
    zero-sum rewards. `temperature` / `max_new_tokens` override the run's sampling.
    `policy`: (EpisodeView, agent) -> text makes the role scripted: plain Python plays it
    (a fixed opponent, a game master, a tool); its turns are in the transcript, never
    generated and never trained. `channel`: a `SymbolChannel` restricts every message of
    the role to that many of those symbols (constrained decoding; its length is the budget).
    """

    name: str
    system_prompt: str
    adapter: str | None = None
    team: str = "team"
    temperature: float | None = None
    max_new_tokens: int | None = None
    policy: Callable[[Any, str], str] | None = None
    channel: SymbolChannel | None = None

    @property
    def scripted(self) -> bool:
        return self.policy is not None

    @property
    def adapter_name(self) -> str:
        return self.adapter if self.adapter is not None else self.name


RewardFn = Callable[[Task, Episode], Mapping[str, float]]
TaskFn = Callable[[random.Random], Task]


class Scenario:
    """A multi-agent task declared in Python (see the module docstring for an example).

    Args:
        name: registry name.
        roles: the agents, in order.
        graph: a MessageGraph, or a function round -> MessageGraph.
        schedule: one list of acting agent names per round.
        make_task: rng -> Task, or a `TaskTable` of tasks from data (`tasks_from`). Splits
            come from the data's split column, else the task key (a stable hash), so train
            and held-out tasks never overlap.
        reward: (task, episode) -> {agent: float}; `episode.team_answer` is set. Or a
            `WeightedReward` of named terms (`weighted(RewardTerm(...), ...)`), each logged.
        team_answer: episode -> str | None (default: majority of the last round).
        parse: text -> answer (default `parse_answer`: the last `<answer>X</answer>`, else `answer: X`,
            else the last number; a number is normalised, so "047" parses as "47", "3.0" as "3",
            "1,000" as "1000" and "-0" as "0"; give your own `parse` where that is wrong).
        heldout_percent: share of task keys that belong to the held-out split.
        split_key: task -> the text whose hash picks its split (default: `task.key`); e.g.
            only the numbers of a word problem, so held-out sums are never seen in training.
        turn_instruction: (round index, number of rounds) -> text appended to each agent's turn prompt.
        turn_order: EpisodeView -> the agents who act now ([] ends the episode), instead of a
            fixed `schedule`; needs `max_turns`. See `multiagent_rl.hooks`.
        init_state: (task, rng) -> the episode's own state (an engine instance, a board), made at reset.
        observe: (EpisodeView, agent) -> the text the agent is shown in its turn (then its chat is
            the system prompt and that text), instead of the task and its inbox.
        act: (EpisodeView, agent, text) -> `Outcome` | None, after each action: update the state,
            give per-turn rewards, mark the move invalid or not to train, record engine events.
        max_turns: turn steps after which an episode is truncated (PettingZoo truncation).
        train_defaults: the training settings this scenario learns with ({"lr": 5e-4, "lora.rank": 16,
            ...}); `train` applies them under the user's config file and --set.
        reference_players: scripted players by name ({"random": fn, "perfect": fn}, each
            (EpisodeView, agent) -> text), for `eval --against NAME`.
        openspiel_game: the OpenSpiel game it plays, if any: its exploitability is computable.
        fork: state -> an independent copy of an episode's state, for branched rollouts
            (`rollout.branching`) where a deep copy would not do (an engine's `clone()`).
        legal_moves: (EpisodeView, agent) -> the acting agent's legal moves now, each exactly
            as a model should reply it ("Bet", "4"). A game that lists its moves gets its
            exact policy over them (`multiagent_rl.move_policy`) and forks per move
            (`rollout.move_forks`, the `all_actions` trainer).
    """

    def __init__(
        self,
        name: str,
        roles: Sequence[Role],
        graph: GraphSpec,
        schedule: Sequence[Sequence[str]] | None,
        make_task: TaskFn,
        reward: RewardFn,
        *,
        turn_order: Callable[[Any], Sequence[str]] | None = None,
        init_state: Callable[[Task, random.Random], Any] | None = None,
        observe: Callable[[Any, str], str] | None = None,
        act: Callable[[Any, str, str], Any] | None = None,
        max_turns: int | None = None,
        description: str = "",
        team_answer: Callable[[Episode], str | None] | None = None,
        parse: Callable[[str], str | None] = parse_answer,
        heldout_percent: int = 20,
        turn_instruction: Callable[[int, int], str] | None = None,
        split_key: Callable[[Task], str] | None = None,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        train_defaults: Mapping[str, Any] | None = None,
        reference_players: Mapping[str, Callable[[Any, str], str]] | None = None,
        openspiel_game: str | None = None,
        fork: Callable[[Any], Any] | None = None,
        legal_moves: Callable[[Any, str], Sequence[str]] | None = None,
    ):
        self.name = name
        self.description = description
        self.roles = list(roles)
        self.graph = graph
        self.schedule = [r if isinstance(r, str) else list(r) for r in schedule] if schedule is not None else None
        self.turn_order = turn_order
        self.init_state = init_state
        self.observe = observe
        self.act = act
        self.max_turns = max_turns
        self.make_task = make_task
        self.reward = reward
        self._team_answer = team_answer
        self.parse = parse
        self.heldout_percent = heldout_percent
        self.turn_instruction = turn_instruction
        self.split_key = split_key
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.train_defaults = dict(train_defaults or {})
        self.reference_players = dict(reference_players or {})
        self.openspiel_game = openspiel_game
        self.fork = fork
        self.legal_moves = legal_moves
        self.validate()

    # ----- declaration checks -------------------------------------------------
    def validate(self) -> None:
        """Raise ScenarioError naming the first problem in the declaration."""
        if not self.name or not isinstance(self.name, str):
            raise ScenarioError(f"scenario name must be a non-empty string, got {self.name!r}")
        if not self.roles:
            raise ScenarioError(f"scenario {self.name!r} declares no roles")
        for role in self.roles:
            if not isinstance(role, Role):
                raise ScenarioError(f"scenario {self.name!r}: roles must be Role, got {role!r}")
        names = [r.name for r in self.roles]
        dupes = [n for n, c in Counter(names).items() if c > 1]
        if dupes:
            raise ScenarioError(f"scenario {self.name!r}: duplicate role name {dupes[0]!r}")
        for role in self.roles:
            if not role.adapter_name:
                raise ScenarioError(f"role {role.name!r} has no adapter name (use None for its own)")
        for hook in ("turn_order", "init_state", "observe", "act", "fork", "legal_moves"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise ScenarioError(f"scenario {self.name!r}: {hook} must be a function, got {getattr(self, hook)!r}")
        if self.max_turns is not None and (not isinstance(self.max_turns, int) or self.max_turns < 1):
            raise ScenarioError(f"scenario {self.name!r}: max_turns must be a positive int, got {self.max_turns!r}")
        if self.turn_order is not None:
            if self.schedule is not None:
                raise ScenarioError(f"scenario {self.name!r}: give a schedule or a turn_order, not both")
            if self.max_turns is None:
                raise ScenarioError(f"scenario {self.name!r}: a turn_order needs max_turns (episodes must end)")
        elif not self.schedule or not any(self.schedule):
            raise ScenarioError(f"scenario {self.name!r} has an empty schedule; give one list of acting agents per round")
        if all(r.scripted for r in self.roles):
            raise ScenarioError(f"scenario {self.name!r}: every role is scripted; at least one must be played by a model")
        for role in self.roles:
            if role.policy is not None and not callable(role.policy):
                raise ScenarioError(f"role {role.name!r}: policy must be a function (view, agent) -> text")
            if role.channel is not None and not isinstance(role.channel, SymbolChannel):
                raise ScenarioError(f"role {role.name!r}: channel must be a SymbolChannel, got {role.channel!r}")
            if role.channel is not None and role.scripted:
                raise ScenarioError(f"role {role.name!r}: a scripted role's messages are its own; give it no channel")
        for i, acting in enumerate(self.schedule or []):
            if isinstance(acting, str) or not isinstance(acting, list):
                raise ScenarioError(
                    f"scenario {self.name!r}: schedule round {i} must be a list of agent names, got {acting!r}"
                )
            if len(set(acting)) != len(acting):
                raise ScenarioError(f"scenario {self.name!r}: schedule round {i} names an agent twice: {acting}")
            if not acting:
                raise ScenarioError(f"scenario {self.name!r}: round {i} of the schedule has no acting agent")
            for agent in acting:
                if agent not in names:
                    raise ScenarioError(
                        f"scenario {self.name!r}: schedule round {i} names unknown agent {agent!r}; known: {', '.join(names)}"
                    )
        for i in range(len(self.schedule) if self.schedule else 1):
            try:
                graph_for_round(self.graph, i).validate(names)
            except GraphError as exc:
                raise ScenarioError(f"scenario {self.name!r}, round {i} graph: {exc}") from exc
        if not callable(self.make_task) or not callable(self.reward):
            raise ScenarioError(f"scenario {self.name!r}: make_task and reward must be callables")
        if not 0 < self.heldout_percent < 100:
            raise ScenarioError(f"heldout_percent must be in 1..99, got {self.heldout_percent}")
        try:
            check_train_defaults(self.train_defaults, f"scenario {self.name!r}")
        except ConfigError as exc:
            raise ScenarioError(str(exc)) from exc

    # ----- structure ----------------------------------------------------------
    @property
    def agents(self) -> list[str]:
        return [r.name for r in self.roles]

    def role(self, agent: str) -> Role:
        for r in self.roles:
            if r.name == agent:
                return r
        raise ScenarioError(f"scenario {self.name!r} has no role {agent!r}; roles: {', '.join(self.agents)}")

    def adapter_for(self, agent: str) -> str:
        return self.role(agent).adapter_name

    @property
    def teams(self) -> dict[str, str]:
        return {r.name: r.team for r in self.roles}

    @property
    def num_rounds(self) -> int:
        """Turn steps of a fixed schedule; with a turn_order, the most an episode may take."""
        return len(self.schedule) if self.schedule is not None else int(self.max_turns)

    @property
    def model_agents(self) -> list[str]:
        """Agents a model plays (every role but the scripted ones)."""
        return [r.name for r in self.roles if not r.scripted]

    def graph_at(self, round_index: int) -> MessageGraph:
        return graph_for_round(self.graph, round_index)

    # ----- tasks ----------------------------------------------------------------
    def split_of(self, task: Task) -> str:
        """The split a task table's data gives it, else the one the task names in
        `meta["split"]`, else 'eval' for the held-out share of task keys and 'train' for the
        rest (stable across runs)."""
        if isinstance(self.make_task, TaskTable) and (given := self.make_task.split_of(task)) is not None:
            return given
        if (named := task.meta.get("split")) is not None:  # a generated task may name its own split
            if named not in SPLITS:
                raise ScenarioError(f"task {task.key!r}: meta['split'] must be one of {SPLITS}, got {named!r}")
            return named
        key = self.split_key(task) if self.split_key is not None else task.key
        bucket = zlib.crc32(str(key).encode("utf-8")) % 100
        return "eval" if bucket < self.heldout_percent else "train"

    def sample_task(self, rng: random.Random, split: str = "train", max_draws: int = 2000) -> Task:
        """A task of `split` drawn with `rng` (deterministic for a seeded rng)."""
        if split not in SPLITS:
            raise ScenarioError(f"unknown split {split!r}; use one of {SPLITS}")
        for _ in range(max_draws):
            task = self.make_task(rng)
            if not isinstance(task, Task):
                raise ScenarioError(f"scenario {self.name!r}: make_task returned {type(task).__name__}, expected Task")
            if self.split_of(task) == split:
                return task
        raise ScenarioError(
            f"scenario {self.name!r}: no {split!r} task in {max_draws} draws; task keys must vary with the rng"
        )

    def heldout_tasks(self, n: int, seed: int = 0) -> list[Task]:
        """n distinct held-out tasks, the same for the same seed."""
        rng = random.Random(seed)
        tasks: dict[str, Task] = {}
        for _ in range(50 * n + 100):
            if len(tasks) == n:
                break
            task = self.sample_task(rng, "eval")
            tasks.setdefault(task.key, task)
        if len(tasks) < n:
            raise ScenarioError(f"scenario {self.name!r} has only {len(tasks)} distinct held-out tasks, asked for {n}")
        return list(tasks.values())

    # ----- outcomes -------------------------------------------------------------
    def team_answer(self, episode: Episode) -> str | None:
        if self._team_answer is not None:
            return self._team_answer(episode)
        return majority_answer(episode, self.schedule[-1] if self.schedule else self.model_agents)

    def rewards(self, task: Task, episode: Episode) -> dict[str, float]:
        """Call the reward function and check it gives one finite float per agent."""
        return self.scored(task, episode)[0]

    def scored(self, task: Task, episode: Episode) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """(total per agent, each named term per agent), all checked finite for every agent. A plain
        reward function is one term, `total`; a `WeightedReward` gives its own terms."""
        where = f"scenario {self.name!r} reward"
        if isinstance(self.reward, WeightedReward):
            parts = {
                name: check_rewards(values, self.agents, where=f"{where} term {name!r}")
                for name, values in self.reward.parts(task, episode).items()
            }
            return check_rewards(self.reward.total(parts), self.agents, where=where), parts
        total = check_rewards(self.reward(task, episode), self.agents, where=where)
        return total, {"total": dict(total)}

    def final_lines(self, total: Mapping[str, float], parts: Mapping[str, Mapping[str, float]]) -> list[RewardEntry]:
        """The final reward (`scored`'s) as the episode's ledger lines: per agent, a
        `WeightedReward`'s terms, each weighted (they add up to `total`, in the same order),
        or one `total` line for a plain reward."""
        if not isinstance(self.reward, WeightedReward):
            return [RewardEntry(agent=agent, value=value) for agent, value in total.items()]
        return [
            RewardEntry(agent=agent, value=term.weight * float(parts[term.name].get(agent, 0.0)), term=term.name)
            for agent in total for term in self.reward.terms
        ]

    def with_scripted(self, players: Mapping[str, Callable[[Any, str], str] | None]) -> Scenario:
        """This scenario with the agents in `players` played by those scripted policies (a
        reference opponent for an evaluation), or by a model where the policy is None; the
        rest as declared."""
        unknown = [a for a in players if a not in self.agents]
        if unknown:
            raise ScenarioError(f"scenario {self.name!r} has no agent {unknown[0]!r}; agents: {self.agents}")
        other = copy.copy(self)
        other.roles = [dataclasses.replace(r, policy=players[r.name]) if r.name in players else r for r in self.roles]
        other.validate()
        return other

    def make_env(self, seed: int | None = None, **kwargs: Any) -> TeamEnv:
        """A PettingZoo ParallelEnv playing this scenario (see `TeamEnv`)."""
        # env sits a layer above (it plays a Scenario): imported on use, the one upward
        # import of this module.
        from .env import TeamEnv

        return TeamEnv(self, seed=seed, **kwargs)

    def __repr__(self) -> str:
        return f"Scenario({self.name!r}, agents={self.agents}, rounds={self.num_rounds})"

