"""Every seed of a run, derived from the run's seed in this one module.

Everything random in training step N comes from (seed, N): the step's task draw, each
rank's sampling stream, each episode's own rng and each backend call's seed. So a run
resumed from step K replays steps K+1.. exactly as an uninterrupted run would, and the
constants below must never change (they would change every recorded run's streams).

>>> task_rng(0, 3).random() == task_rng(0, 3).random()
True
"""

from __future__ import annotations

import random


def task_rng(seed: int, step: int) -> random.Random:
    """The stream that draws training step `step`'s tasks (the same on every rank)."""
    return random.Random(seed * 1_000_003 + step)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The sampling seed of training step `step` on rank `rank`. Each rank samples its own
    stream: the same seed on every rank would correlate the shards."""
    return seed * 1_000_003 + step + 7_919 * rank


def episode_seed(rollout_seed: int, group: int, sample: int) -> int:
    """The seed of an episode's own rng: sample `sample` of task group `group` (global group
    indices, so a process's shard plays what it would play unsharded)."""
    return rollout_seed * 100_003 + group * 1_009 + sample


def generate_seed(rollout_seed: int, turn_step: int) -> int:
    """The seed of a rollout's backend call at turn step `turn_step`."""
    return rollout_seed * 1_000 + turn_step


def branch_seed(rollout_seed: int, group: int, path: tuple[int, ...]) -> int:
    """The seed of a branch's own rng in a branched rollout: the branch at `path` (sample
    index, then one index per fork) of task group `group`."""
    seed = episode_seed(rollout_seed, group, path[0])
    for index in path[1:]:
        seed = seed * 10_007 + index + 1
    return seed % 2**63
