"""TeamEnv: a scenario as a PettingZoo ParallelEnv with text observations and actions.

Every agent stays live for the whole episode; in each turn step only the agents the
schedule (or the scenario's `turn_order` hook) names act (their `info["acting"]` is
True) and the others' actions are ignored. Scripted roles act by themselves inside
`step`. Per-turn rewards (the `act` hook) come with each step; the final rewards come
when the episode ends: after the last scheduled round, when `turn_order` names nobody,
when an `Outcome` says done (terminations), or at `max_turns` (truncations).

>>> env = load_scenario("debate").make_env(seed=0)      # doctest: +SKIP
>>> obs, infos = env.reset(seed=0)                      # doctest: +SKIP
>>> obs, rewards, terms, truncs, infos = env.step({a: "<answer>4</answer>" for a in env.agents})  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import random
import uuid
from typing import Any

import gymnasium
from pettingzoo import ParallelEnv

from .actions import Action, checked_rewards, clean_text, generation_facts, safe_parse
from .branching import fork_state
from .contain import describe_failure, time_limit
from .errors import ScenarioError
from .graph import deliveries, inbox
from .hooks import EpisodeView, Outcome
from .records import Episode, Message, RewardEntry, Task, Turn
from .text_spaces import MAX_ACTION_CHARS, MAX_OBSERVATION_CHARS, TextSpace


class TeamEnv(ParallelEnv):
    metadata = {"name": "multiagent_rl_team", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(
        self,
        scenario: Scenario,  # noqa: F821 - scenario.py's; not imported: Scenario.make_env builds this env
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
        self.final: list[RewardEntry] = []  # the ledger's final lines (per-turn ones are on the turns)
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
        self.team_answer: str | None = None
        self.episode_id = ""
        self.view: EpisodeView | None = None
        self.winner: str | None = None
        self.result: dict[str, float] | None = None  # a game's result (Outcome.result): the final rewards
        self.truncated = False
        self.meta: dict[str, Any] = {}
        self._acting: list[str] = []
        self._shown: dict[str, str] = {}  # agent -> what `observe` showed it for this turn step

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
        self.final = []
        self.team_answer = None
        self.failure = None
        self.reward_terms = {}
        self.winner = None
        self.result = None
        self.truncated = False
        self.meta = {}
        state = None
        if self.scenario.init_state is not None:
            state = self._user("init_state", lambda: self.scenario.init_state(self.task, self._rng))
        self.view = EpisodeView(task=self.task, state=state, turns=self.turns, step=0, rng=self._rng)
        self._next_turn_step()
        return self._observations(), self._infos()

    def fork(self, seed: int) -> TeamEnv:
        """This episode as it stands, copied for a branched rollout: turns, inboxes, scenario state
        (its `fork` hook, else a deep copy) and its own random stream from `seed`."""
        spaces = (*self._observation_spaces.values(), *self._action_spaces.values())
        memo: dict[int, Any] = {id(x): x for x in (self.scenario, *spaces)}  # declarations: shared
        if self.view is not None and self.view.state is not None:
            memo[id(self.view.state)] = fork_state(self.scenario, self.view.state)
        other = copy.deepcopy(self, memo)
        other._rng.seed(seed)  # the view holds the same Random: reseeded in place
        return other

    def step(self, actions: dict[str, str | Action]):
        """Play one turn step (PettingZoo's parallel step). An action is text or an `Action`
        (text plus the generation's facts, kept on the turn). Scripted agents act by themselves."""
        live = list(self.agents)
        made = self.advance(actions)
        done = not self.agents
        rewards = dict.fromkeys(live, 0.0)
        for turn in made:  # per-turn rewards, from the turns this step made
            for entry in turn.rewards:
                rewards[entry.agent] += entry.value
        for entry in self.final if done else []:
            rewards[entry.agent] += entry.value
        self.agents = live  # the step's last observations and infos are still theirs
        observations, infos = self._observations(), self._infos()
        terminations = dict.fromkeys(self.agents, done and not self.truncated)
        truncations = dict.fromkeys(self.agents, self.truncated)
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def advance(self, actions: dict[str, str | Action]) -> list[Turn]:
        """Play one turn step and return the turns it made (the acting models' turns, then any
        scripted turns played until a model acts again); the episode may end (`agents` empty)."""
        if not self.agents:
            raise ScenarioError("step() called on a finished episode; call reset() first")
        start = len(self.turns)
        done = self._play(actions)
        # Steps where only scripted roles act are played at once: every step() asks a model.
        while not done and self._acting and all(self.scenario.role(a).scripted for a in self._acting):
            done = self._play({})
        if done:
            self._finish()
            self.agents = []
        return self.turns[start:]

    def _play(self, actions: dict[str, str | Action]) -> bool:
        """The current turn step's actions, in acting order; True when the episode is over."""
        acting = list(self._acting)
        graph = self.scenario.graph_at(self.round)
        ended = False
        for agent in acting:
            role = self.scenario.role(agent)
            action = actions.get(agent, "")
            if role.scripted:
                action = self._user(f"the policy of role {agent!r}", lambda r=role, a=agent: r.policy(self.view, a))
            text, cut = clean_text(action.text if isinstance(action, Action) else action, self.max_message_chars)
            routes = deliveries(graph, agent)  # [] when this round's graph leaves the agent out
            message = Message(
                sender=agent, receivers=[r for r, _ in routes], round=self.round, text=text,
                answer=safe_parse(self.scenario.parse, text), visibility=dict(routes),
            )
            turn = Turn(
                agent=agent, round=self.round, message=message, observation=self._shown.get(agent),
                scripted=role.scripted, trainable=not role.scripted, **generation_facts(action, cut, None if role.scripted else self.scenario.adapter_for(agent)),
            )
            self.turns.append(turn)
            if self.scenario.act is not None and self.failure is None:
                outcome = self._user("act", lambda a=agent, t=text: self.scenario.act(self.view, a, t))
                ended = self._apply(turn, outcome) or ended
            if self.failure is not None:
                return True  # user code failed: the episode ends here, marked failed
        self.round += 1
        self.view.step = self.round
        if ended:
            return True
        self._next_turn_step()
        if self.failure is not None:
            return True
        if not self._acting:
            # the schedule ran out, or turn_order named nobody; a dynamic game cut at max_turns is truncated
            self.truncated = self.scenario.turn_order is not None and self.round >= self.scenario.num_rounds
            return True
        return False

    def _apply(self, turn: Turn, outcome: Any) -> bool:
        """Fold an `act` hook's Outcome into the turn (its rewards go into the ledger there); True: done."""
        if outcome is None:
            return False
        if not isinstance(outcome, Outcome):
            self._fail(ScenarioError(f"act returned {type(outcome).__name__}, expected Outcome or None"), "act")
            return True
        try:
            given = outcome.reward if isinstance(outcome.reward, dict) else {turn.agent: outcome.reward}
            rewards = checked_rewards(given, self.possible_agents, "reward")
            if outcome.result is not None:
                self.result = checked_rewards(outcome.result, self.possible_agents, "result")
        except ScenarioError as exc:
            self._fail(exc, "act")
            return True
        turn.rewards += [RewardEntry(agent=a, value=v, term=outcome.term) for a, v in rewards.items() if v]
        turn.valid = bool(outcome.valid)
        if outcome.trainable is not None:
            turn.trainable = bool(outcome.trainable) and not turn.scripted
        if outcome.event is not None:
            self.view.events.append({"step": turn.round, "agent": turn.agent, **dict(outcome.event)})
        if outcome.winner is not None:
            self.winner = str(outcome.winner)
        return bool(outcome.done)

    def _next_turn_step(self) -> None:
        """Who acts now (fixed schedule or turn_order), and what `observe` shows each of them."""
        self._acting, self._shown = [], {}
        if self.round >= self.scenario.num_rounds:
            return
        if self.scenario.turn_order is None:
            self._acting = list(self.scenario.schedule[self.round])
        else:
            named = self._user("turn_order", lambda: list(self.scenario.turn_order(self.view) or []))
            if self.failure is not None:
                return
            unknown = [a for a in named if a not in self.possible_agents]
            if unknown or len(set(named)) != len(named):
                self._fail(ScenarioError(f"turn_order named {named}; agents are {self.possible_agents}, each once"), "turn_order")
                return
            self._acting = named
        for agent in self._acting:  # kept on each turn, so the log rebuilds every prompt exactly
            if self.scenario.role(agent).scripted:
                continue
            if self.scenario.observe is not None:
                shown = self._user("observe", lambda a=agent: str(self.scenario.observe(self.view, a)))
                self._shown[agent] = shown if isinstance(shown, str) else ""
            else:
                self._shown[agent] = self.chat(agent)[-1]["content"]

    def _user(self, what: str, call):
        """Run a scenario hook; with `contain_failures`, a failure marks the episode failed."""
        try:
            return call()
        except Exception as exc:
            if not self.contain_failures:
                raise
            self._fail(exc, what)
            return None

    def _fail(self, exc: Exception, what: str) -> None:
        if not self.contain_failures:
            raise exc
        if self.failure is None:
            self.failure = describe_failure(exc, f"the {what} of scenario {self.scenario.name!r}", self.task.key)

    def _finish(self) -> None:
        """The team answer and the rewards, with user code contained if asked. The reward sees
        the live episode record: what it writes into `episode.meta` is kept."""
        if self.failure is not None:  # a hook failed: no reward for a broken episode
            self.final, self.reward_terms = [], {}
            return
        episode = self.episode(with_rewards=False)
        episode.meta = self.meta
        try:
            with time_limit(self.reward_timeout if self.contain_failures else None):
                self.team_answer = self.scenario.team_answer(episode)
                episode.team_answer = self.team_answer
                if self.result is None:
                    total, self.reward_terms = self.scenario.scored(self.task, episode)
        except Exception as exc:
            if not self.contain_failures:
                raise
            self.failure = describe_failure(exc, f"the reward of scenario {self.scenario.name!r}", self.task.key)
            self.final, self.reward_terms = [], {}
            return
        if self.result is not None:  # a game decided: its result is the final reward, as given
            self.final = [RewardEntry(agent=a, value=v, term="result") for a, v in self.result.items()]
            return
        self.final = self.scenario.final_lines(total, self.reward_terms)

    # ----- what agents see ------------------------------------------------------
    def acting_agents(self) -> list[str]:
        """Agents that act in the current turn step ([] once the episode is over)."""
        return list(self._acting) if self.agents else []

    def model_agents(self) -> list[str]:
        """The acting agents a model plays (scripted roles act inside `step`)."""
        return [a for a in self.acting_agents() if not self.scenario.role(a).scripted]

    def legal_moves(self, agent: str) -> list[str] | None:
        """The replies that are `agent`'s legal moves now (the scenario's `legal_moves` hook),
        or None where the scenario lists none. Refuses an empty or repeated list: a decision
        with no move to choose cannot be scored."""
        if self.scenario.legal_moves is None:
            return None
        moves = self._user("legal_moves", lambda: [str(m) for m in self.scenario.legal_moves(self.view, agent)])
        if moves is None:
            return None  # the hook failed: the episode is marked failed (contained) or raised
        if not moves or len(set(moves)) != len(moves):
            raise ScenarioError(f"scenario {self.scenario.name!r}: legal_moves for {agent} gave {moves}; "
                                "list each legal move once, at least one")
        return moves

    def chat(self, agent: str) -> list[dict[str, str]]:
        """The agent's view as chat messages: system prompt, then one user message per
        round it acted in (task on the first, new inbox messages after) and its replies.
        With an `observe` hook: the system prompt and what it shows now. Each turn keeps its
        user message (`Turn.observation`), so the log rebuilds every prompt exactly."""
        role = self.scenario.role(agent)
        if self.scenario.observe is not None:  # the scenario says what the agent sees now
            shown = self._shown.get(agent)
            if shown is None:
                shown = self._user("observe", lambda: str(self.scenario.observe(self.view, agent))) or ""
            return [{"role": "system", "content": role.system_prompt}, {"role": "user", "content": shown}]
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
        if self.agents and self._acting and agent not in self._acting:
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
        if self.final:
            rewards = {e.agent: e.value for e in self.final}
            text += f"\nteam answer: {self.team_answer}  reference: {self.task.answer}  rewards: {rewards}"
        return text

    def episode(self, with_rewards: bool = True, **fields: Any) -> Episode:
        """The episode so far as a record: its turns (each with the per-turn rewards that arose
        there) and, once finished, the final rewards (`with_rewards`; a failed episode has none)."""
        return Episode(
            episode_id=self.episode_id,
            scenario=self.scenario.name,
            task=self.task,
            turns=[t.model_copy(deep=True) for t in self.turns],
            final=[e.model_copy() for e in self.final] if with_rewards else [],
            teams=self.scenario.teams,
            team_answer=self.team_answer,
            split=self.split if self.split in ("eval", "play") else "train",
            failure=self.failure,
            reward_terms=self.reward_terms if with_rewards else {},
            events=[dict(e) for e in self.view.events] if self.view is not None else [],
            truncated=self.truncated,
            winner=self.winner,
            scripted=[r.name for r in self.scenario.roles if r.scripted],
            meta=dict(self.meta),
            **fields,
        )

    def close(self) -> None:
        pass
