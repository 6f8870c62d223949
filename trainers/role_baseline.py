"""The role baseline (SPIRAL's role-conditioned advantage estimation): each role's return
against an exponential moving average of that role's past returns.

In a zero-sum game played by one policy in every seat, group advantages cancel or drift:
the seat that moves first wins more whatever the policy does, and within a group the seats'
advantages mirror each other. A running baseline per role removes the seat's own expected
return and nothing else. In a league a role's baseline follows only the games in which the
learner sat in that seat, never a frozen snapshot's. Registered as `role_baseline`; pick it
with `grpo.advantage`, decay `grpo.baseline_decay`. Its state (one number per role) is in
every checkpoint.
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
        this batch; then baseline <- decay * baseline + (1 - decay) * the mean return (over
        every rank) of the episodes in which the learner played that stream
        (`Returns.learner`; None: all of them). In a league a frozen snapshot's seat is not the
        learner's: its returns would pull the baseline toward the snapshot's. A stream the
        learner never played in the batch keeps its baseline. Starts at 0, as SPIRAL's.

        >>> r = Returns(torch.tensor([[1., -1.], [-1., 1.]]), torch.tensor([0, 1]), torch.tensor([0, 0]))
        >>> est = RoleBaseline(); a = est(r, None); est.baselines
        [0.0, 0.0]
        """
        decay = getattr(settings, "baseline_decay", 0.95)
        episodes, point_episode = torch.unique_consecutive(returns.episodes, return_inverse=True)  # (E,), (P,)
        totals = torch.zeros((len(episodes), returns.rewards.shape[1]))
        totals.index_add_(0, point_episode, returns.rewards.float())  # (E, S): each episode's return
        streams = totals.shape[1]
        played = torch.ones_like(totals, dtype=torch.bool)  # (E, S): the learner played that stream of that episode
        if returns.learner is not None:
            played = torch.zeros_like(totals).index_add_(0, point_episode, returns.learner.float()) > 0
        if self.baselines is None:
            self.baselines = [0.0] * streams
        advantages = totals - torch.tensor(self.baselines)
        sums = self.ranks.sum([*(totals * played).sum(0).tolist(), *played.sum(0).tolist()])
        for k, (total, count) in enumerate(zip(sums[:streams], sums[streams:], strict=True)):
            if count:
                self.baselines[k] = decay * self.baselines[k] + (1 - decay) * total / count
        groups = torch.zeros(len(episodes), dtype=torch.long).scatter_(0, point_episode, returns.groups)  # (E,): points share it
        counts = tie_counts(totals, groups, played)
        return Estimate(advantages[point_episode], totals[point_episode], counts)

    def state_dict(self) -> dict:
        return {"baselines": self.baselines}

    def load_state_dict(self, state: dict) -> None:
        self.baselines = state["baselines"]


def tie_counts(totals: torch.Tensor, groups: torch.Tensor, played: torch.Tensor) -> dict[str, float]:
    """Counts for the tie metrics, per (task group, stream) the learner played in, as the
    group estimator's: groups whose episodes' returns all tie. A running baseline still
    gives a tied group's turns a signal; the share says how often outcomes do not vary.
    A group of one episode is not singleton here: the baseline is its comparison.
    totals, played: (E, S); groups: (E,) long.

    >>> tie_counts(torch.tensor([[1., -1.], [1., -1.], [1., -1.], [0., 0.]]), torch.tensor([0, 0, 1, 1]),
    ...            torch.ones(4, 2, dtype=torch.bool))
    {'groups': 4.0, 'singleton_groups': 0.0, 'equal_reward_groups': 2.0}
    """
    counts = {"groups": 0.0, "singleton_groups": 0.0, "equal_reward_groups": 0.0}
    for g in torch.unique(groups):
        idx = (groups == g).nonzero(as_tuple=True)[0]  # (n,)
        r = totals[idx]  # (n, S)
        seen = played[idx].any(0)  # (S,)
        counts["groups"] += float(seen.sum())
        if len(idx) > 1:  # compare the returns themselves, as group_advantages does
            counts["equal_reward_groups"] += float((torch.all(r == r[:1], dim=0) & seen).sum())
    return counts
