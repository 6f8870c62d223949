"""Per-agent GRPO: group-relative advantages, then the clipped policy update of each
agent's LoRA adapter (`trainers/policy.py`).

A group is the G episodes of one task. Each agent's reward in those episodes is
compared with the group: A = (r - mean) / (std + eps) (or without the std,
Dr. GRPO). Groups with one sample or with all-equal rewards carry no signal;
they get zero advantages and are counted in the metrics, never hidden. Every turn of
an agent gets its episode's advantage (or a discounted share, `credit: discounted`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from multiagent_rl.rollout import RolloutBatch

from .base import Trainer, register_estimator, register_trainer
from .policy import Sample, policy_update

# ----- advantages -------------------------------------------------------------------


@dataclass
class GroupStats:
    groups: int = 0
    singleton_groups: int = 0  # size 1: no baseline to compare with
    equal_reward_groups: int = 0  # every sample scored the same: zero signal


@register_estimator("group")
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


def episode_advantages(
    batch: RolloutBatch, agents: list[str], reward_source: str = "agent", scale_by_std: bool = True
) -> tuple[dict[str, torch.Tensor], GroupStats]:
    """Per agent, each episode's group-relative advantage ((episodes,) tensors) of the agent's
    whole return (final reward plus per-turn rewards). A group with a failed episode (its
    reward raised) is dropped: its episodes get zero."""
    broken = {ep.group for ep in batch.episodes if ep.failure is not None}
    # Advantages are host-side bookkeeping (they reach the model as floats in each Sample).
    groups = torch.tensor([ep.group for ep in batch.episodes], dtype=torch.long, device="cpu")
    kept = torch.tensor([ep.group not in broken for ep in batch.episodes], dtype=torch.bool, device="cpu")
    advantages: dict[str, torch.Tensor] = {}
    total = GroupStats()
    for agent in agents:
        if reward_source == "team":
            rewards = torch.tensor([ep.team_reward() for ep in batch.episodes], device="cpu")
        else:
            rewards = torch.tensor([ep.returns().get(agent, 0.0) for ep in batch.episodes], device="cpu")
        adv, stats = group_advantages(rewards[kept], groups[kept], scale_by_std=scale_by_std)
        advantages[agent] = torch.zeros(len(batch.episodes), device="cpu").masked_scatter(kept, adv)
        total.groups += stats.groups
        total.singleton_groups += stats.singleton_groups
        total.equal_reward_groups += stats.equal_reward_groups
    return advantages, total


@register_trainer("grpo")
class GRPOTrainer(Trainer):
    """Per-agent GRPO (settings: the `grpo:` section and the shared policy-update keys)."""

    def make_samples(self, batch: RolloutBatch) -> tuple[list[Sample], dict[str, float]]:
        """One Sample per trainable turn, each with its episode's advantage for its agent."""
        ctx, grpo = self.ctx, self.ctx.config.grpo
        advantages, stats = episode_advantages(batch, ctx.scenario.agents, grpo.reward_source, grpo.scale_rewards)
        last_round: dict[int, int] = {}  # each episode's own last round
        for s in batch.samples:
            last_round[s.episode] = max(last_round.get(s.episode, 0), s.round)
        samples = []
        for s in batch.samples:
            if not s.trainable:
                continue
            a = float(advantages[s.agent][s.episode])
            if grpo.credit == "discounted":
                a = discounted_credit(a, s.round, last_round[s.episode], grpo.gamma)
            samples.append(
                Sample(adapter=s.adapter, prompt_ids=s.prompt_ids, completion_ids=s.completion_ids, advantage=a, temperature=s.temperature)
            )
        equal, singleton, total, abs_sum, count = ctx.ranks.sum(
            [stats.equal_reward_groups, stats.singleton_groups, stats.groups, sum(abs(x.advantage) for x in samples), len(samples)]
        )
        metrics = {
            "groups/equal_reward_fraction": equal / max(total, 1),
            "groups/singleton_fraction": singleton / max(total, 1),
            "advantage/abs_mean": abs_sum / count if count else 0.0,
        }
        return samples, metrics

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        ctx = self.ctx
        samples, metrics = self.make_samples(batch)
        metrics.update(policy_update(
            ctx.model, self.optimizer, samples, self.update_settings(), ctx.tokenizer.pad_token_id,
            backward=ctx.accelerator.backward, scheduler=self.scheduler, ranks=ctx.ranks,
        ))
        return metrics
