"""signalling (cooperative referential game): a speaker privately sees K candidate
objects ("red circle", "blue star", ...) and which one is the target, and sends a
short message; the listener sees the same candidates as a numbered list in its own
order, plus the message, and answers with the number of its pick. Team reward = 1
if the pick is the target, else 0.

The listener's order is an independent shuffle, so "the first one" carries no
information: only a description of the object can. `Task.meta` keeps what
communication analysis needs: the target's meaning (colour, shape), the candidates
in the speaker's order, the listener's order, and the target's number in it.

Worked example of: a two-agent chain graph, per-role token budgets
(`Role(max_new_tokens=...)` keeps messages short), and a team answer mapped from
the listener's number to the object it names.
"""

from __future__ import annotations

import random
import re

from multiagent_rl import (
    Episode,
    RewardTerm,
    Role,
    Scenario,
    ScenarioError,
    Task,
    chain,
    majority_answer,
    parse_number_answer,
    weighted,
)

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star", "heart"]
OBJECTS = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
AGENTS = ["speaker", "listener"]

SPEAKER = (
    "You are the speaker. Describe the target in a few words so the listener can pick it "
    "from the candidates. The listener's list is in a different order: do not say positions."
)
LISTENER = (
    "You are the listener. The speaker describes one of your numbered candidates. "
    "Reply with only its number."
)
PROMPT = "Referential game: the speaker describes the target; the listener picks it by number."

_PICK = re.compile(r"[0-9]{1,3}")


def make_reference_task(rng: random.Random, k: int = 3) -> Task:
    """K distinct objects, a target among them, and the listener's own order."""
    candidates = rng.sample(OBJECTS, k)
    target = rng.choice(candidates)
    listener_order = rng.sample(candidates, k)
    colour, shape = target.split(" ")
    numbered = "\n".join(f"{i}. {name}" for i, name in enumerate(listener_order, start=1))
    return Task(
        key=f"{target}|{','.join(candidates)}|{','.join(listener_order)}",
        prompt=PROMPT,
        answer=target,
        private={
            "speaker": f"Candidates: {', '.join(candidates)}. The target is: {target}.",
            "listener": f"Candidates:\n{numbered}",
        },
        meta={
            "target": {"colour": colour, "shape": shape},
            "candidates": candidates,
            "listener_order": listener_order,
            "target_number": listener_order.index(target) + 1,
        },
    )


def picked_candidate(episode: Episode) -> str | None:
    """The candidate the listener picked: by its number, else by naming it (the last
    candidate named in its reply, since small models often answer "the red star");
    None when it did neither."""
    order = episode.task.meta["listener_order"]
    number = majority_answer(episode, ["listener"])
    if number is not None and _PICK.fullmatch(number):
        index = int(number) - 1
        return order[index] if 0 <= index < len(order) else None
    replies = [t.message.text.lower() for t in episode.turns if t.agent == "listener"]
    if not replies:
        return None
    named = [(replies[-1].rfind(name), name) for name in order if name in replies[-1]]
    return max(named)[1] if named else None


def make_scenario(K: int = 3, message_tokens: int = 12) -> Scenario:
    """Build the signalling game (options settable as `--set scenario_options.K=5`)."""
    if not 2 <= K <= len(OBJECTS):
        raise ScenarioError(f"signalling: K must be in 2..{len(OBJECTS)}, got {K!r}")
    if message_tokens < 1:
        raise ScenarioError(f"signalling: message_tokens must be at least 1, got {message_tokens}")
    roles = [
        Role("speaker", SPEAKER, max_new_tokens=message_tokens),
        Role("listener", LISTENER),
    ]

    def sample(rng: random.Random) -> Task:
        return make_reference_task(rng, k=K)

    def picked_target(task: Task, episode: Episode) -> float:
        return float(episode.team_answer == task.answer)

    reward = weighted(RewardTerm("picked_target", picked_target))

    return Scenario(
        name="signalling",
        description=(
            "Referential game: a speaker describes a target object; a listener picks it "
            "from K shuffled candidates."
        ),
        roles=roles,
        graph=chain(AGENTS),
        schedule=[["speaker"], ["listener"]],
        make_task=sample,
        reward=reward,
        team_answer=picked_candidate,
        parse=parse_number_answer,
        max_new_tokens=12,
        options={"K": K, "message_tokens": message_tokens},
    )
