"""The one reward formula a team and its one-agent twin share, so that a team-against-one
comparison compares play, not reward scales: division_of_labour, long_list and lookup each
build their team and their `solo=True` twin from it."""

from __future__ import annotations

from multiagent_rl import RewardTerm, ScenarioError, WeightedReward, weighted

# Every twin's train_defaults: the settings division_of_labour's published learning rows
# measured (examples/division_learning.yaml), the centre of the comparison's sweep.
TRAIN_DEFAULTS = {
    "adapters": "per_role", "steps": 200, "time_budget_minutes": 15, "tasks_per_step": 4, "group_size": 6,
    "lr": 5e-4, "temperature": 0.7, "lora.rank": 16, "lora.alpha": 32, "eval_every": 0, "eval_episodes": 50,
    "save_every": 5,
}


def blended_reward(scenario: str, correct, own, format_only, own_weight: float, format_bonus: float) -> WeightedReward:
    """(1 - format_bonus) x [(1 - own_weight) x team correctness + own_weight x own job] + format_bonus x format.

    A lone agent's own job is the team's correctness, so its reward is correctness plus
    the format term whatever own_weight is. The term is named `format` so that a run's
    `shaping:` schedule can anneal it away once invalid replies are rare."""
    if not (0 <= own_weight <= 1 and 0 <= format_bonus <= 1):
        raise ScenarioError(f"{scenario}: own_weight and format_bonus must be in [0, 1], got {own_weight}, {format_bonus}")
    return weighted(
        RewardTerm("correct", correct, (1 - format_bonus) * (1 - own_weight)),
        RewardTerm("own_job", own, (1 - format_bonus) * own_weight),
        RewardTerm("format", format_only, format_bonus),
    )
