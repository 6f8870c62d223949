"""The role baseline (SPIRAL's role-conditioned advantage estimation): each role's return
against an exponential moving average of that role's past returns.

In a zero-sum game played by one policy in every seat, group advantages cancel or drift:
the seat that moves first wins more whatever the policy does, and within a group the seats'
advantages mirror each other. A running baseline per role removes the seat's own expected
return and nothing else. Registered as `role_baseline`; pick it with `grpo.advantage`,
decay `grpo.baseline_decay`. Its state (one number per role) is in every checkpoint.
"""

from __future__ import annotations

import torch

from .base import Estimate, Returns, register_estimator
from .distributed import Ranks


@register_estimator("role_baseline")
class RoleBaseline:
    """A stateful estimator: `GRPOTrainer` makes one per run (with the run's ranks, so every
    rank's baseline moves with the whole batch) and keeps `state_dict()` in checkpoints."""

    def __init__(self, ranks: Ranks | None = None):
        self.ranks = ranks or Ranks()
        self.baselines: list[float] | None = None  # per stream; None until the first batch

    def __call__(self, returns: Returns, settings) -> Estimate:
        """Advantage = the episode's return per stream minus that stream's baseline before
        this batch; then baseline <- decay * baseline + (1 - decay) * the batch's mean return
        (over every rank). Starts at 0, as SPIRAL's.

        >>> r = Returns(torch.tensor([[1., -1.], [-1., 1.]]), torch.tensor([0, 1]), torch.tensor([0, 0]))
        >>> est = RoleBaseline(); a = est(r, None); est.baselines
        [0.0, 0.0]
        """
        decay = getattr(settings, "baseline_decay", 0.95)
        episodes, point_episode = torch.unique_consecutive(returns.episodes, return_inverse=True)
        totals = torch.zeros((len(episodes), returns.rewards.shape[1]))
        totals.index_add_(0, point_episode, returns.rewards.float())  # (E, S): each episode's return
        streams = totals.shape[1]
        if self.baselines is None:
            self.baselines = [0.0] * streams
        advantages = totals - torch.tensor(self.baselines)
        sums = self.ranks.sum([*totals.sum(0).tolist(), float(len(episodes))])
        if sums[-1]:
            means = [s / sums[-1] for s in sums[:-1]]
            self.baselines = [decay * b + (1 - decay) * m for b, m in zip(self.baselines, means, strict=True)]
        counts = {"groups": float(len(torch.unique(returns.groups))), "singleton_groups": 0.0, "equal_reward_groups": 0.0}
        return Estimate(advantages[point_episode], totals[point_episode], counts)

    def state_dict(self) -> dict:
        return {"baselines": self.baselines}

    def load_state_dict(self, state: dict) -> None:
        self.baselines = state["baselines"]
