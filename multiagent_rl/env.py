"""TeamEnv: a scenario as a PettingZoo ParallelEnv with text observations and actions.

Every agent stays live for the whole episode; in each round only the agents the
schedule names act (their `info["acting"]` is True) and the others' actions are
ignored. Rewards arrive on the last round, when every agent terminates.

>>> env = load_scenario("debate").make_env(seed=0)      # doctest: +SKIP
>>> obs, infos = env.reset(seed=0)                      # doctest: +SKIP
>>> obs, rewards, terms, truncs, infos = env.step({a: "<answer>4</answer>" for a in env.agents})  # doctest: +SKIP
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import gymnasium
from pettingzoo import ParallelEnv

from .contain import describe_failure, time_limit
from .graph import deliveries, inbox
from .records import Episode, Message, Task, Turn
from .scenario import Scenario, ScenarioError

MAX_ACTION_CHARS = 100_000  # what the action space samples up to; longer strings are still accepted
MAX_OBSERVATION_CHARS = 10_000_000


class TextSpace(gymnasium.spaces.Text):
    """gymnasium Text that accepts any Python string up to max_length, whatever its characters."""

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length


def clean_text(value: Any, limit: int) -> tuple[str, bool]:
    """Any action as storable text: non-strings become '', lone surrogates are replaced
    (msgpack and tokenizers need valid UTF-8), and text beyond `limit` is cut."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > limit:
        return text[:limit], True
    return text, False


class TeamEnv(ParallelEnv):
    metadata = {"name": "multiagent_rl_team", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(
        self,
        scenario: Scenario,
        seed: int | None = None,
        split: str = "train",
        task: Task | None = None,
        render_mode: str | None = None,
        max_message_chars: int = 2000,
        contain_failures: bool = False,
        reward_timeout: float | None = None,
    ):
        """`contain_failures`: a reward that raises, hangs past `reward_timeout` seconds or is
        not finite marks the episode failed (`Episode.failure`) instead of raising (the trainer
        drops such episodes' groups); off by default, so user code fails loudly when you call
        the env yourself."""
        if render_mode not in (None, "ansi"):
            raise ScenarioError(f"render_mode {render_mode!r} is not supported; use 'ansi' or None")
        self.scenario = scenario
        self.split = split
        self.render_mode = render_mode
        self.max_message_chars = max_message_chars
        self.contain_failures = contain_failures
        self.reward_timeout = reward_timeout
        self.failure: str | None = None
        self.reward_terms: dict[str, dict[str, float]] = {}
        self.possible_agents = list(scenario.agents)
        # PettingZoo wants the same space object on every call (it seeds them).
        self._observation_spaces = {a: TextSpace(max_length=MAX_OBSERVATION_CHARS) for a in self.possible_agents}
        self._action_spaces = {a: TextSpace(max_length=MAX_ACTION_CHARS) for a in self.possible_agents}
        self.agents: list[str] = []
        self._fixed_task = task
        self._seed = seed
        self._rng = random.Random(seed)
        self.task: Task | None = None
        self.round = 0
        self.turns: list[Turn] = []
        self.final_rewards: dict[str, float] = {}
        self.team_answer: str | None = None
        self.episode_id = ""

    def observation_space(self, agent: str) -> gymnasium.spaces.Space:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.spaces.Space:
        return self._action_spaces[agent]

    # ----- episode lifecycle --------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = random.Random(seed)
        options = options or {}
        task = options.get("task") or self._fixed_task
        # "play" episodes draw from the training split; only "eval" uses held-out tasks.
        split = "eval" if self.split == "eval" else "train"
        self.task = task if task is not None else self.scenario.sample_task(self._rng, split)
        self.episode_id = options.get("episode_id") or uuid.UUID(int=self._rng.getrandbits(128)).hex
        self.agents = list(self.possible_agents)
        self.round = 0
        self.turns = []
        self.final_rewards = {}
        self.team_answer = None
        self.failure = None
        self.reward_terms = {}
        return self._observations(), self._infos()

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise ScenarioError("step() called on a finished episode; call reset() first")
        acting = self.scenario.schedule[self.round]
        graph = self.scenario.graph_at(self.round)
        for agent in acting:
            text, cut = clean_text(actions.get(agent, ""), self.max_message_chars)
            routes = deliveries(graph, agent)  # [] when this round's graph leaves the agent out
            receivers = [r for r, _ in routes]
            message = Message(
                sender=agent,
                receivers=receivers,
                round=self.round,
                text=text,
                answer=_safe_parse(self.scenario, text),
                visibility=dict(routes),
            )
            self.turns.append(
                Turn(
                    agent=agent,
                    round=self.round,
                    adapter=self.scenario.adapter_for(agent),
                    message=message,
                    finish_reason="cut" if cut else None,
                )
            )
        self.round += 1
        done = self.round >= self.scenario.num_rounds
        rewards = dict.fromkeys(self.agents, 0.0)
        if done:
            self._finish()
            rewards = {a: self.final_rewards.get(a, 0.0) for a in self.agents}
        observations, infos = self._observations(), self._infos()
        terminations = dict.fromkeys(self.agents, done)
        truncations = dict.fromkeys(self.agents, False)
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def _finish(self) -> None:
        """The team answer and the rewards, with user code contained if asked."""
        episode = self.episode(with_rewards=False)
        try:
            with time_limit(self.reward_timeout if self.contain_failures else None):
                self.team_answer = self.scenario.team_answer(episode)
                episode.team_answer = self.team_answer
                self.final_rewards, self.reward_terms = self.scenario.scored(self.task, episode)
        except Exception as exc:
            if not self.contain_failures:
                raise
            self.failure = describe_failure(exc, f"the reward of scenario {self.scenario.name!r}", self.task.key)
            self.final_rewards, self.reward_terms = {}, {}

    def record_generation(
        self,
        agent: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: str | None,
        adapter: str | None | object = ...,
    ) -> None:
        """Attach generation facts to `agent`'s latest turn (called by the rollout after step);
        `adapter` is what really played the turn (None: the base model)."""
        for turn in reversed(self.turns):
            if turn.agent == agent:
                if adapter is not ...:
                    turn.adapter = adapter
                turn.prompt_tokens = prompt_tokens
                turn.completion_tokens = completion_tokens
                turn.finish_reason = turn.finish_reason or finish_reason
                return
        raise ScenarioError(f"agent {agent!r} has no turn to annotate")

    # ----- what agents see ------------------------------------------------------
    def acting_agents(self) -> list[str]:
        """Agents that act in the current round ([] once the episode is over)."""
        if not self.agents or self.round >= self.scenario.num_rounds:
            return []
        return list(self.scenario.schedule[self.round])

    def chat(self, agent: str) -> list[dict[str, str]]:
        """The agent's view as chat messages: system prompt, then one user message per
        round it acted in (task on the first, new inbox messages after) and its replies."""
        role = self.scenario.role(agent)
        received = inbox(self.turns_messages(), agent, before_round=self.round)
        own_rounds = [t.round for t in self.turns if t.agent == agent]
        if self.round < self.scenario.num_rounds:
            own_rounds.append(self.round)  # the turn about to be taken
        chat = [{"role": "system", "content": role.system_prompt}]
        previous = -1
        own_turns = {t.round: t for t in self.turns if t.agent == agent}
        for i, r in enumerate(own_rounds):
            parts = []
            if i == 0:
                if self.task.prompt:  # an empty shared prompt: the private views say it all
                    parts.append(f"Task: {self.task.prompt}")
                private = self.task.private.get(agent)
                if private:
                    parts.append(f"Only you can see this: {private}")
            news = [m for m in received if previous <= m.round < r]
            for item in news:
                parts.append(f"Message from {item.sender} (round {item.round + 1}): {item.content}")
            if self.scenario.turn_instruction is not None:
                instruction = self.scenario.turn_instruction(r, self.scenario.num_rounds)
                if instruction:
                    parts.append(instruction)
            chat.append({"role": "user", "content": "\n".join(parts)})
            if r in own_turns:
                chat.append({"role": "assistant", "content": own_turns[r].message.text})
            previous = r
        return chat

    def turns_messages(self) -> list[Message]:
        return [t.message for t in self.turns]

    def observe(self, agent: str) -> str:
        text = "\n".join(f"[{m['role']}] {m['content']}" for m in self.chat(agent))
        if self.agents and self.round < self.scenario.num_rounds and agent not in self.acting_agents():
            text += f"\n(you do not act in round {self.round + 1})"
        return text

    def _observations(self) -> dict[str, str]:
        return {a: self.observe(a) for a in self.agents}

    def _infos(self) -> dict[str, dict]:
        acting = set(self.acting_agents())
        return {a: {"acting": a in acting, "round": self.round} for a in self.agents}

    def state(self) -> str:
        """The global transcript (every message so far), for centralised critics."""
        lines = [f"Task: {self.task.prompt}" if self.task else "Task: (none)"]
        if self.task:
            lines += [f"Private to {agent}: {view}" for agent, view in self.task.private.items()]
        for t in self.turns:
            lines.append(f"[round {t.round + 1}] {t.agent} -> {', '.join(t.message.receivers) or '(nobody)'}: {t.message.text}")
        return "\n".join(lines)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        text = self.state()
        if self.final_rewards:
            text += f"\nteam answer: {self.team_answer}  reference: {self.task.answer}  rewards: {self.final_rewards}"
        return text

    def episode(self, with_rewards: bool = True, **fields: Any) -> Episode:
        """The episode so far as a record (rewards once finished)."""
        return Episode(
            episode_id=self.episode_id,
            scenario=self.scenario.name,
            task=self.task,
            turns=[t.model_copy(deep=True) for t in self.turns],
            rewards=dict(self.final_rewards) if with_rewards else {},
            teams=self.scenario.teams,
            team_answer=self.team_answer,
            split=self.split if self.split in ("eval", "play") else "train",
            failure=self.failure,
            reward_terms=self.reward_terms if with_rewards else {},
            **fields,
        )

    def close(self) -> None:
        pass


def _safe_parse(scenario: Scenario, text: str) -> str | None:
    # A scenario's parser must not be able to crash the env on hostile text.
    try:
        answer = scenario.parse(text)
    except Exception:
        return None
    return answer if answer is None else str(answer)[:500]
