"""What a step and a held-out evaluation report: rewards per team and agent, completion
health, accuracy; over every rank's episodes, exactly as one process would compute them."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from multiagent_rl.answers import answers_match
from multiagent_rl.records import Episode
from multiagent_rl.rollout import RolloutBatch

from .distributed import Ranks


def invalid_share(scenario, stats: dict[str, float]) -> float:
    """The share of this step's model replies that were invalid, for the shaping schedule
    (`shaping.stop_when_invalid_below`): the invalid moves a scenario's act hook marks, or
    where it has none (no moves to be invalid), the replies with no answer its parse can
    read, so a format bonus stops paying once the replies are well formed."""
    if scenario.act is not None:
        return stats["turns/invalid_fraction"]
    return 1.0 - stats["completions/answer_fraction"]


def vote_stats(episodes: list[Episode]) -> dict[str, float]:
    """Majority vote over each task's sampled episodes (self-consistency): the most common
    team answer among those with one (a tie goes to the one answered first) is the task's
    answer. `vote_accuracy` (with its standard error over tasks), `single_accuracy` (one
    sampled episode at a time), `samples` per task and the generated tokens per task, so a
    vote compares with a team at equal evaluation tokens."""
    by_task: dict[int, list[Episode]] = defaultdict(list)
    for ep in episodes:
        by_task[ep.group].append(ep)
    right, tokens = [], []
    for group in by_task.values():
        counts: dict[str, int] = {}
        for ep in group:
            if ep.team_answer is not None:
                counts[ep.team_answer] = counts.get(ep.team_answer, 0) + 1
        voted = max(counts, key=counts.get) if counts else None  # first answered wins a tie (dict order)
        right.append(float(voted is not None and answers_match(voted, group[0].task.answer)))
        tokens.append(sum(t.completion_tokens for ep in group for t in ep.turns))
    n = len(right)
    mean = statistics.fmean(right) if right else math.nan
    single = [float(ep.team_answer is not None and answers_match(ep.team_answer, ep.task.answer)) for ep in episodes]
    return {
        "vote_accuracy": mean,
        "vote_se": statistics.stdev(right) / math.sqrt(n) if n > 1 else math.nan,
        "tasks": n,
        "samples": len(episodes) / max(n, 1),
        "single_accuracy": statistics.fmean(single) if single else math.nan,
        "generated_tokens_per_task": statistics.fmean(tokens) if tokens else math.nan,
    }


def team_reward_stats(episodes: list[Episode], ranks: Ranks | None = None) -> dict[str, float]:
    """Mean and standard error of the team reward (mean over agents) across episodes, and
    the team's accuracy: the share of tasks with a reference answer that the team got right
    (unaffected by reward shaping; NaN when no task has one). Episodes whose reward failed
    are left out. With `ranks`, over every rank's episodes."""
    scored = [(ep.team_reward(), _graded(ep), _played(ep)) for ep in episodes if ep.failure is None]
    if ranks is not None:
        scored = ranks.gather(scored)
    values = [value for value, _, _ in scored]
    graded = [correct for _, correct, _ in scored if correct is not None]
    accuracy = statistics.fmean(graded) if graded else float("nan")
    if not values:
        return {"mean": float("nan"), "se": float("nan"), "n": 0, "accuracy": accuracy}
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    out = {"mean": statistics.fmean(values), "se": se, "n": len(values), "accuracy": accuracy}
    out.update(outcome_rates([played for _, _, played in scored]))
    return out


def _played(episode: Episode) -> tuple[list[str], str | None, int, int]:
    """(the model-played agents' teams, the winner, model turns, invalid model turns)."""
    model = [t for t in episode.turns if not t.scripted]
    teams = sorted(episode.model_teams())
    return teams, episode.winner, len(model), sum(not t.valid for t in model)


def outcome_rates(played: list[tuple[list[str], str | None, int, int]]) -> dict[str, float]:
    """Win, draw and loss rates of the model-played team where the scenario names a winner
    (per team, `win_rate/<team>`, when models play several teams), and the invalid-move rate."""
    out: dict[str, float] = {}
    turns, invalid = sum(p[2] for p in played), sum(p[3] for p in played)
    if invalid:
        out["invalid_rate"] = invalid / max(turns, 1)
    decided = [(teams, winner) for teams, winner, _, _ in played if winner is not None]
    if not decided:
        return out
    if "invalid_rate" not in out:
        out["invalid_rate"] = 0.0
    teams = sorted({t for ts, _ in decided for t in ts})
    for team in teams:
        suffix = "" if len(teams) == 1 else f"/{team}"
        out[f"win_rate{suffix}"] = sum(w == team for _, w in decided) / len(decided)
        out[f"draw_rate{suffix}"] = sum(w == "draw" for _, w in decided) / len(decided)
        out[f"loss_rate{suffix}"] = 1.0 - out[f"win_rate{suffix}"] - out[f"draw_rate{suffix}"]
    return out


def _graded(episode: Episode) -> bool | None:
    return answers_match(episode.team_answer, episode.task.answer) if episode.task.answer is not None else None


@dataclass
class StepRecord:
    """One training step as the loop hands it to logging: filled once, in run order
    (`Run.train_step`), then the held-out result where the step evaluates. `metrics()` is
    its metrics.jsonl line."""

    step: int
    rollout: dict[str, float]  # rollout_metrics: rewards, completion health, throughput
    update: dict[str, float]  # the trainer's: losses, advantages, clip fractions, ...
    failed_fraction: float  # episodes whose user code failed (all ranks)
    lr: float
    rollout_seconds: float  # each the slowest rank's
    update_seconds: float
    step_seconds: float
    held_out: dict[str, float] | None = None  # team_reward_stats of the held-out tasks
    damaged_checkpoints: int = 0  # said once, on the first step after a fall-back
    league: dict[str, float] = field(default_factory=dict)  # League.metrics(): ratings, results per opponent

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step, **self.rollout, **self.update}
        out["episodes/failed_fraction"] = self.failed_fraction
        out["lr"] = self.lr
        out["perf/rollout_seconds"] = self.rollout_seconds
        out["perf/update_seconds"] = self.update_seconds
        out["perf/step_seconds"] = self.step_seconds
        if self.damaged_checkpoints:
            out["resume/damaged_checkpoints"] = self.damaged_checkpoints
        out.update(self.league)
        if self.held_out is not None:
            out.update(eval_metrics(self.held_out))
        return out


@dataclass
class RunBudget:
    """When a run stops before `steps`. `time_budget_minutes`: before a step that would
    overrun it by more than half a step's time, counting this call's training time (a
    resumed run gets the budget afresh). `token_budget`: after the step at which the run's
    generated tokens reach it, counting the whole run's (carried across resumes). Both are
    fed reduced figures (the slowest rank's seconds, every rank's tokens), so every rank
    stops at the same step."""

    minutes: float | None
    tokens: int | None
    seconds: float = 0.0  # training time of this call, evaluation excluded
    steps: int = 0  # steps of this call

    def spent(self, tokens_total: int) -> str | None:
        """Why the run stops now, or None to go on."""
        if self.tokens is not None and tokens_total >= self.tokens:
            return f"token budget of {self.tokens} generated tokens reached ({tokens_total})"
        if self.minutes is not None and self.steps and self.seconds + 0.5 * self.seconds / self.steps > self.minutes * 60:
            return f"time budget of {self.minutes:g} min used"
        return None

    def spend(self, step_seconds: float, tokens_total: int) -> str | None:
        """Count one more step; then `spent`."""
        self.seconds += step_seconds
        self.steps += 1
        return self.spent(tokens_total)


EVAL_NAMES = {
    "mean": "eval/team_reward_mean",
    "se": "eval/team_reward_se",
    "n": "eval/team_reward_n",
    "accuracy": "eval/team_accuracy",
}


def eval_metrics(result: dict[str, float]) -> dict[str, float]:
    """Held-out stats under their metrics.jsonl names (`eval/win_rate`, ... for games)."""
    return {EVAL_NAMES.get(k, f"eval/{k}"): v for k, v in result.items()}


def rollout_metrics(batch: RolloutBatch, ranks: Ranks | None = None) -> dict[str, float]:
    """Rewards per team and agent, and completion health (empty, truncated, length); with
    `ranks`, over every rank's episodes, exactly as one process would compute them."""
    ranks = ranks or Ranks()
    # Small per-episode and per-completion records, gathered so every rank computes the same.
    episodes = ranks.gather([
        (ep.failure is None, ep.team_reward(), ep.returns(),
         [(t.message.text, t.message.answer is not None) for t in ep.turns if not t.scripted])
        for ep in batch.episodes
    ])
    turn_health = ranks.sum([
        sum(len(ep.turns) for ep in batch.episodes),
        sum(not t.trainable for ep in batch.episodes for t in ep.turns),
        sum(not t.valid for ep in batch.episodes for t in ep.turns),
        sum(t.scripted for ep in batch.episodes for t in ep.turns),
        sum(ep.truncated for ep in batch.episodes),
        len(batch.episodes),
    ])
    terms = ranks.gather([ep.reward_terms for ep in batch.episodes if ep.failure is None and ep.reward_terms])
    completions = ranks.gather([(s.finish_reason, len(s.completion_ids)) for s in batch.samples])
    (tokens,) = ranks.sum([batch.generated_tokens])
    seconds, calls = ranks.max([batch.generate_seconds, batch.backend_calls])  # ranks generate side by side
    out: dict[str, float] = {}
    rewarded = [(team_value, rewards) for ok, team_value, rewards, _ in episodes if ok]  # failed ones have none
    team = [team_value for team_value, _ in rewarded]
    out["reward/team_mean"] = statistics.fmean(team) if team else float("nan")
    out["reward/team_std"] = statistics.pstdev(team) if team else float("nan")
    per_agent: dict[str, list[float]] = defaultdict(list)
    for _, rewards in rewarded:
        for agent, r in rewards.items():
            per_agent[agent].append(r)
    for agent, values in per_agent.items():
        out[f"reward/{agent}_mean"] = statistics.fmean(values)
        out[f"reward/{agent}_std"] = statistics.pstdev(values)
    by_term: dict[str, list[float]] = defaultdict(list)
    for parts in terms:
        for term, values in parts.items():
            for agent, value in values.items():
                by_term[f"reward/{agent}/{term}"].append(value)
    out.update({name: statistics.fmean(values) for name, values in sorted(by_term.items())})
    turns = [turn for *_, ep_turns in episodes for turn in ep_turns]
    out["completions/empty_fraction"] = sum(1 for text, _ in turns if not text.strip()) / max(len(turns), 1)
    out["completions/truncated_fraction"] = sum(1 for reason, _ in completions if reason == "length") / max(len(completions), 1)
    out["completions/mean_tokens"] = statistics.fmean(n for _, n in completions) if completions else 0.0
    out["completions/answer_fraction"] = sum(answered for _, answered in turns) / max(len(turns), 1)
    all_turns, untrainable, invalid, scripted, truncated, count = turn_health
    out["turns/untrainable_fraction"] = untrainable / max(all_turns, 1)
    out["turns/invalid_fraction"] = invalid / max(all_turns - scripted, 1)
    out["turns/scripted_fraction"] = scripted / max(all_turns, 1)
    out["episodes/mean_turns"] = all_turns / max(count, 1)
    out["episodes/truncated_fraction"] = truncated / max(count, 1)
    out["rollout/generated_tokens"] = int(tokens)  # every rank's, every turn's: what token_budget counts
    out["perf/tokens_per_s"] = tokens / max(seconds, 1e-9)
    out["perf/backend_calls"] = int(calls)
    return out
