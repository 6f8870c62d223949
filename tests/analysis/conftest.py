"""Hand-made episodes for the analysis tests: every expected value is worked out by hand."""

from __future__ import annotations

import itertools

import pytest

from multiagent_rl.records import Episode, Message, Task, Turn

_ids = itertools.count()


def make_episode(
    turns: list[tuple],
    *,
    step: int | None = None,
    split: str = "train",
    answer: str | None = None,
    team_answer: str | None = None,
    rewards: dict[str, float] | None = None,
    meta: dict | None = None,
    prompt: str = "Pick the best number.",
    scenario: str = "handmade",
    agents: list[str] | None = None,
) -> Episode:
    """turns: (agent, round, text[, answer[, receivers[, completion_tokens]]]). Default answer:
    the text itself; default receivers: every other agent named in `turns`."""
    names = agents or list(dict.fromkeys(t[0] for t in turns))
    built = []
    for t in turns:
        agent, rnd, text = t[0], t[1], t[2]
        ans = t[3] if len(t) > 3 else text
        receivers = t[4] if len(t) > 4 else [a for a in names if a != agent]
        tokens = t[5] if len(t) > 5 else 0
        message = Message(sender=agent, receivers=receivers, round=rnd, text=text, answer=ans,
                          visibility=dict.fromkeys(receivers, "full"))
        built.append(Turn(agent=agent, round=rnd, adapter=f"{agent}_adapter", message=message,
                          completion_tokens=tokens))
    return Episode(
        episode_id=f"ep{next(_ids)}", scenario=scenario,
        task=Task(key=f"k{next(_ids)}", prompt=prompt, answer=answer, meta=meta or {}),
        turns=built, rewards=rewards if rewards is not None else dict.fromkeys(names, 0.0),
        teams=dict.fromkeys(names, "team"), team_answer=team_answer, split=split, step=step,
    )


@pytest.fixture
def episode():
    return make_episode
