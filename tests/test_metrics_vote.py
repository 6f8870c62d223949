"""Majority vote over a task's sampled episodes: the most common team answer, a tie to the
one answered first, no answer left out; tokens counted per task."""

from __future__ import annotations

import math

import pytest

from multiagent_rl import Episode, Message, Task, Turn
from trainers.metrics import vote_stats


def episode(group: int, answer: str | None, reference: str, tokens: int = 2) -> Episode:
    turn = Turn(agent="a", round=0, message=Message(sender="a", round=0, text=answer or "?"), completion_tokens=tokens)
    return Episode(episode_id=f"{group}-{answer}", scenario="s", task=Task(key=f"t{group}", prompt="", answer=reference),
                   turns=[turn], team_answer=answer, group=group)


def test_the_majority_answer_is_graded_and_a_tie_goes_to_the_first_answered():
    episodes = [
        episode(0, "7", "7"), episode(0, "5", "7"), episode(0, "7", "7"),  # 7 twice: right
        episode(1, None, "4"), episode(1, "3", "4"), episode(1, "4", "4"),  # 3 and 4 tie: 3 first, wrong
        episode(2, None, "1"), episode(2, None, "1"), episode(2, None, "1", tokens=5),  # no answer: wrong
    ]
    stats = vote_stats(episodes)
    assert stats["vote_accuracy"] == pytest.approx(1 / 3) and stats["tasks"] == 3 and stats["samples"] == 3
    assert stats["single_accuracy"] == pytest.approx(3 / 9)
    assert stats["vote_se"] == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))  # stdev of (1, 0, 0) over sqrt(3)
    assert stats["generated_tokens_per_task"] == pytest.approx((6 + 6 + 9) / 3)
