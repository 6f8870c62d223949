"""Per-agent GRPO: group-relative advantages, then the clipped policy update of each
agent's LoRA adapter (`trainers/policy.py`).

A group is the G episodes of one task. Each agent's return in those episodes (from the
episode's reward ledger) is compared with the group: A = (r - mean) / (std + eps) (or
without the std, Dr. GRPO). Groups with one sample or with all-equal rewards carry no
signal; they get zero advantages and are counted in the metrics, never hidden. Every turn
of an agent gets its episode's advantage (or a discounted share, `credit: discounted`).
The estimator is registered (`group`) and picked by `grpo.advantage`; a per-turn one
(`tree`, trainers/tree.py) gives each turn its own node's advantage instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from multiagent_rl.adapters import LoraSettings
from multiagent_rl.config import ConfigError
from multiagent_rl.rollout import RolloutBatch

from .base import (
    Estimate,
    Returns,
    Trainer,
    TrainerContext,
    advantage_estimator,
    register_estimator,
    register_trainer,
)
from .magnet import Magnets
from .policy import Sample, policy_update
from .tree import tree_metrics

# ----- advantages -------------------------------------------------------------------


@dataclass
class GroupStats:
    groups: int = 0
    singleton_groups: int = 0  # size 1: no baseline to compare with
    equal_reward_groups: int = 0  # every sample scored the same: zero signal


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, scale_by_std: bool = True, eps: float = 1e-4
) -> tuple[torch.Tensor, GroupStats]:
    """Advantages of one agent's samples relative to their task group.

    rewards: (N,) float; group_ids: (N,) long. Returns (N,) advantages and counts.
    >>> adv, stats = group_advantages(torch.tensor([1., 0., 1., 1.]), torch.tensor([0, 0, 1, 1]))
    >>> [round(a, 3) for a in adv.tolist()], stats.equal_reward_groups
    ([1.0, -1.0, 0.0, 0.0], 1)
    """
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    stats = GroupStats()
    for g in torch.unique(group_ids):
        idx = (group_ids == g).nonzero(as_tuple=True)[0]  # (G,)
        stats.groups += 1
        if idx.numel() == 1:
            stats.singleton_groups += 1
            continue
        r = rewards[idx].float()
        # Compare the rewards themselves: a float mean of equal values can be off by an ulp.
        if torch.all(r == r[0]):
            stats.equal_reward_groups += 1
            continue
        centred = r - r.mean()
        advantages[idx] = centred / (r.std(unbiased=False) + eps) if scale_by_std else centred
    return advantages, stats


def discounted_credit(outcome: float, round_index: int, last_round: int, gamma: float) -> float:
    """Credit of a turn taken in `round_index` for an outcome at `last_round`: gamma^(distance)."""
    return outcome * gamma ** max(0, last_round - round_index)


@register_estimator("group")
def group_estimate(returns: Returns, settings) -> Estimate:
    """Outcome advantages: each episode's return (its points' rewards summed, per stream)
    against its task group's (`group_advantages`, scaled by the group std unless
    `settings.scale_rewards` is False); every point of an episode gets its episode's.

    returns.rewards: (P, S) -> advantages and returns (P, S).
    >>> r = Returns(torch.tensor([[1.], [0.], [0.5]]), torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0]))
    >>> [round(a, 3) for a in group_estimate(r, None).advantages.squeeze(1).tolist()]
    [1.0, 1.0, -1.0]
    """
    episodes, point_episode = torch.unique_consecutive(returns.episodes, return_inverse=True)  # (E,), (P,)
    totals = torch.zeros((len(episodes), returns.rewards.shape[1]), device="cpu")  # (E, S)
    totals.index_add_(0, point_episode, returns.rewards.float())
    first_point = torch.zeros(len(episodes), dtype=torch.long, device="cpu").scatter_reduce_(
        0, point_episode, torch.arange(len(point_episode), device="cpu"), "amin", include_self=False
    )
    groups = returns.groups[first_point]  # (E,)
    advantages = torch.zeros_like(totals)
    counts = GroupStats()
    for stream in range(totals.shape[1]):
        advantages[:, stream], stats = group_advantages(
            totals[:, stream], groups, scale_by_std=getattr(settings, "scale_rewards", True)
        )
        counts.groups += stats.groups
        counts.singleton_groups += stats.singleton_groups
        counts.equal_reward_groups += stats.equal_reward_groups
    return Estimate(advantages[point_episode], totals[point_episode], vars(counts))


def episode_returns(batch: RolloutBatch, streams: list[str], reward_source: str = "agent") -> Returns:
    """One point per episode (GRPO judges the whole episode): each agent's return from the
    ledger (`streams` are agents), or the team's (`reward_source="team"`: one stream). An
    agent's stream of an episode is the learner's where a trainable turn of it is that agent's
    (not a frozen snapshot's, a scripted or the base model's)."""
    if reward_source == "team":
        rewards = [[ep.team_reward()] for ep in batch.episodes]
    else:
        rewards = [[ep.returns().get(agent, 0.0) for agent in streams] for ep in batch.episodes]
    # Host-side bookkeeping: advantages reach the model as floats in each Sample.
    stream_of = {agent: 0 if reward_source == "team" else k for k, agent in enumerate(streams)}
    width = 1 if reward_source == "team" else len(streams)
    learner = torch.zeros((len(rewards), width), dtype=torch.bool, device="cpu")  # (E, S)
    for s in batch.samples:
        if s.trainable:
            learner[s.episode, stream_of[s.agent]] = True
    return Returns(
        rewards=torch.tensor(rewards, dtype=torch.float32, device="cpu").reshape(len(batch.episodes), -1),
        episodes=torch.arange(len(batch.episodes), device="cpu"),
        groups=torch.tensor([ep.group for ep in batch.episodes], dtype=torch.long, device="cpu"),
        branches=[tuple(ep.branch) or (0,) for ep in batch.episodes],
        learner=learner,
    )


ESTIMATOR_STATE = "estimator_state.json"
MAGNET_STATE = "grpo_magnet_state.json"


@register_trainer("grpo")
class GRPOTrainer(Trainer):
    """Per-agent GRPO (settings: the `grpo:` section and the shared policy-update keys)."""

    def __init__(self, ctx: TrainerContext):
        super().__init__(ctx)
        estimator = advantage_estimator(ctx.config.grpo.advantage)
        if estimator.needs_values:
            raise ConfigError(f"grpo.advantage={ctx.config.grpo.advantage} needs a value model; use trainer=critic")
        self.estimator = estimator(ctx.ranks) if isinstance(estimator, type) else estimator  # a class: ranks, state
        grpo = ctx.config.grpo
        if grpo.reference == "magnet" and not ctx.config.beta > 0:
            raise ConfigError("grpo.reference=magnet needs beta > 0: beta weighs the KL to the magnet")
        self.magnets = (Magnets(ctx.model, ctx.policy_adapters, LoraSettings.from_config(ctx.config.lora), grpo.magnet_every)
                        if grpo.reference == "magnet" else None)
        self.updates = 0

    def save(self, folder: Path) -> None:
        """A stateful estimator's state (JSON) and the magnets, beside the optimizer the loop saves."""
        if hasattr(self.estimator, "state_dict"):
            (folder / ESTIMATOR_STATE).write_text(json.dumps(self.estimator.state_dict()))
        if self.magnets is not None:
            (folder / MAGNET_STATE).write_text(json.dumps({"updates": self.updates}))
            self.magnets.save(folder)

    def load(self, folder: Path) -> str | None:
        if self.magnets is not None:
            said = self.magnets.load(folder)
            if (folder / MAGNET_STATE).is_file():
                self.updates = json.loads((folder / MAGNET_STATE).read_text())["updates"]
            if said:
                return said
        if not hasattr(self.estimator, "state_dict"):
            return None
        if not (folder / ESTIMATOR_STATE).is_file():
            return f"{folder.name} holds no {self.ctx.config.grpo.advantage} state: its baseline starts afresh"
        self.estimator.load_state_dict(json.loads((folder / ESTIMATOR_STATE).read_text()))
        return None

    def make_samples(self, batch: RolloutBatch) -> tuple[list[Sample], dict[str, float]]:
        """One Sample per trainable turn, each with its episode's advantage for its agent."""
        ctx, grpo = self.ctx, self.ctx.config.grpo
        agents = ctx.scenario.agents
        estimate = self.estimator(episode_returns(batch, agents, grpo.reward_source), grpo)
        stream_of = {a: 0 if grpo.reward_source == "team" else k for k, a in enumerate(agents)}
        last_round: dict[int, int] = {}  # each episode's own last round
        for s in batch.samples:
            last_round[s.episode] = max(last_round.get(s.episode, 0), s.round)
        samples = []
        for s in batch.samples:
            if not s.trainable:
                continue
            if estimate.nodes is not None:  # a per-turn estimator: the advantage of the turn's own node
                a = float(estimate.nodes[(s.group, s.branch)][stream_of[s.agent]])
            else:
                a = float(estimate.advantages[s.episode, stream_of[s.agent]])
            if grpo.credit == "discounted":
                a = discounted_credit(a, s.round, last_round[s.episode], grpo.gamma)
            samples.append(
                Sample(adapter=s.adapter, prompt_ids=s.prompt_ids, completion_ids=s.completion_ids, advantage=a,
                       temperature=s.temperature, logprobs=s.logprobs, allowed_token_ids=s.allowed_token_ids)
            )
        counts = estimate.counts
        equal, singleton, total, abs_sum, count = ctx.ranks.sum(
            [counts["equal_reward_groups"], counts["singleton_groups"], counts["groups"], sum(abs(x.advantage) for x in samples), len(samples)]
        )
        metrics = {
            "groups/equal_reward_fraction": equal / max(total, 1),
            "groups/singleton_fraction": singleton / max(total, 1),
            "advantage/abs_mean": abs_sum / count if count else 0.0,
        }
        if estimate.nodes is not None:
            schedule = ctx.scenario.schedule
            metrics.update(tree_metrics(batch, [x.advantage for x in samples], agents,
                                        len(schedule) if schedule is not None else None, ctx.ranks))
        return samples, metrics
    def update(self, batch: RolloutBatch) -> dict[str, float]:
        ctx = self.ctx
        samples, metrics = self.make_samples(batch)
        metrics.update(policy_update(
            ctx.model, self.optimizer, samples, self.update_settings(), ctx.tokenizer.pad_token_id,
            backward=ctx.accelerator.backward, scheduler=self.scheduler, ranks=ctx.ranks,
            reference_adapters=self.magnets.names if self.magnets is not None else None,
        ))
        if self.magnets is not None and not metrics["update/skipped"]:
            self.updates += 1
            self.magnets.after_update(self.updates)
        return metrics
