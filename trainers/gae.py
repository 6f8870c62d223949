"""The centralised critic's pure maths, functions of tensors: GAE over an episode's
decision points (registered as the `gae` estimator), PPO's clipped value loss, explained
variance (and whether it calls for whitened advantages), and running statistics for
normalised value targets.

>>> adv, ret = gae(torch.tensor([[0.], [1.]]), torch.tensor([[0.5], [0.5]]), gamma=1.0, lam=1.0)
>>> adv.squeeze(1).tolist(), ret.squeeze(1).tolist()
([0.5, 0.5], [1.0, 1.0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import Estimate, Returns, register_estimator


def gae(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95,
    last_value: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates over one episode's turns.

    rewards, values: (T, S) for T turns and S value streams; `last_value` (S,) bootstraps a
    truncated episode (None: it ended, the value after the last turn is 0).
    Returns (advantages, returns), both (T, S), with returns = advantages + values.
    >>> adv, ret = gae(torch.tensor([[0.], [1.]]), torch.tensor([[0.5], [0.5]]), gamma=1.0, lam=1.0)
    >>> adv.squeeze(1).tolist(), ret.squeeze(1).tolist()
    ([0.5, 0.5], [1.0, 1.0])
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    following = torch.zeros_like(rewards[0], dtype=torch.float32) if last_value is None else last_value.float()
    running = torch.zeros_like(following)
    for t in reversed(range(steps)):
        delta = rewards[t].float() + gamma * following - values[t].float()
        running = delta + gamma * lam * running
        advantages[t] = running
        following = values[t].float()
    return advantages, advantages + values.float()


@register_estimator("gae", needs_values=True)
def gae_estimate(returns: Returns, settings) -> Estimate:
    """GAE over each episode's decision points (`gae`, with `settings.gamma`, `settings.lam`):
    a point bootstraps from the value at the next point of its episode, whoever acts there;
    an episode's last point from 0.

    returns.rewards, returns.values: (P, S) -> advantages and returns (P, S).
    """
    advantages = torch.zeros_like(returns.rewards, dtype=torch.float32)
    targets = torch.zeros_like(advantages)
    _, lengths = torch.unique_consecutive(returns.episodes, return_counts=True)
    start = 0
    for length in lengths.tolist():
        end = start + length
        advantages[start:end], targets[start:end] = gae(
            returns.rewards[start:end], returns.values[start:end], settings.gamma, settings.lam
        )
        start = end
    return Estimate(advantages, targets, {})


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's value loss per element: 0.5 * max((v - R)^2, (v_clipped - R)^2), where
    v_clipped stays within `clip` of the value before the update (None: plain squared error).
    Returns (loss, whether the clipped term was the larger one), each shaped like `values`.
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped)
    moved = old_values + torch.clamp(values - old_values, -clip, clip)
    clipped = (moved - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def explained_variance(predicted: torch.Tensor, targets: torch.Tensor) -> float:
    """1 - Var(targets - predicted) / Var(targets): 1 is perfect, 0 no better than the mean
    (NaN when the targets do not vary)."""
    var = float(targets.float().var(unbiased=False))
    if var == 0.0:
        return float("nan")
    return 1.0 - float((targets.float() - predicted.float()).var(unbiased=False)) / var


def whitens(explained: float, normalize: bool, below: float | None) -> bool:
    """Whether to whiten a batch's advantages: with `normalize`, always (`below` None) or only
    while the values explain less than `below` of the targets' variance (NaN: not known yet).
    Once they explain that much, advantages are left as raw residuals, not noise scaled up.

    >>> whitens(0.2, True, 0.5), whitens(0.7, True, 0.5), whitens(float("nan"), True, 0.5), whitens(0.2, False, 0.5)
    (True, False, True, False)
    """
    return normalize and (below is None or math.isnan(explained) or explained < below)


class RunningNorm:
    """Running mean and variance of value targets (per stream), for normalised targets."""

    def __init__(self, streams: int):
        self.count = 0.0
        self.mean = [0.0] * streams
        self.var = [1.0] * streams

    def update(self, count: float, total: Sequence[float], squares: Sequence[float]) -> None:
        """Fold in a batch given as its size, per-stream sums and sums of squares."""
        if count <= 0:
            return
        for s in range(len(self.mean)):
            mean = total[s] / count
            var = max(squares[s] / count - mean * mean, 0.0)
            delta = mean - self.mean[s]
            both = self.count + count
            self.var[s] = (self.var[s] * self.count + var * count + delta * delta * self.count * count / both) / both
            self.mean[s] += delta * count / both
        self.count += count

    def std(self) -> torch.Tensor:
        return torch.tensor(self.var, device="cpu").clamp_min(1e-8).sqrt()

    def state(self) -> dict:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def load(self, state: dict) -> None:
        self.count, self.mean, self.var = state["count"], list(state["mean"]), list(state["var"])
