"""signalling (cooperative referential game): a speaker privately sees K objects
("red circle", "yellow circle", ...) and which one is the target, and sends a message
of at most `message_tokens` tokens (3 by default); the listener sees the same objects
in its own order, plus the message, and names the object it picks.

The K objects share one attribute and differ in the other (all circles of different
colours, or all red objects of different shapes), so one word, the target's value of
the attribute that varies, is enough. The listener's order is an independent shuffle,
so "the first one" carries no information: only a description of the object can.

What there is to learn: the untrained speaker spends its few tokens on "The target
is", so the listener can only guess; the team has to put the distinguishing word into
the message and read it back out. The listener answers by naming the object, not by
a number: the embedded 135M model cannot map even a perfect one-word description to
a position in a list (a quarter right, below chance), but copies a word well.

Reward (weighted, named terms, each logged): `team_weight` (0.7) x `picked_target`
(team: the listener's pick is the target) for both agents, plus (1 - team_weight) x a
dense term of each agent's own: the speaker's message names the target's
distinguishing value and no distractor's (`distinguishing_word`), the listener's
reply names exactly one object (`picked_one`). The speaker's term is what makes the
game learn reliably: on the team's outcome alone (team_weight=1), early on the
listener mostly guesses, so the outcome says little about the message, and in one of
three short runs the speaker settled on "The target object" while the team stayed at
chance.

`Task.meta` keeps what communication analysis needs: the target's meaning (colour,
shape), the attribute that varies (`contrast`), the objects in the speaker's order,
the listener's order, and the target's position in it.

Worked example of: a two-agent chain graph, per-role token budgets
(`Role(max_new_tokens=...)` keeps messages short), per-round instructions, a team
answer mapped from the listener's words to the object they name, per-agent reward
terms, and the training settings the scenario learns with (`train_defaults`).
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
    weighted,
)

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star", "heart"]
AGENTS = ["speaker", "listener"]
MAX_K = min(len(COLOURS), len(SHAPES))  # the K objects differ in one attribute

# Short prompts on purpose: on a CPU, prompt tokens are most of the compute.
SPEAKER = "You are the speaker. Describe the target object to the listener in a few words."
LISTENER = "You are the listener. Repeat the name of the object the speaker means, nothing else."
INSTRUCTIONS = ["What makes the target different from the other objects?", ""]

_WORD = re.compile(r"[a-z]+")


def make_reference_task(rng: random.Random, k: int = 3) -> Task:
    """K distinct objects that differ in one attribute, a target among them, and the
    listener's own order."""
    contrast = rng.choice(["colour", "shape"])
    if contrast == "colour":
        shape = rng.choice(SHAPES)
        candidates = [f"{colour} {shape}" for colour in rng.sample(COLOURS, k)]
    else:
        colour = rng.choice(COLOURS)
        candidates = [f"{colour} {shape}" for shape in rng.sample(SHAPES, k)]
    target = rng.choice(candidates)
    listener_order = rng.sample(candidates, k)
    colour, shape = target.split(" ")
    return Task(
        key=f"{target}|{','.join(candidates)}|{','.join(listener_order)}",
        prompt="",  # each agent's private view says it all
        answer=target,
        private={
            "speaker": f"Objects: {', '.join(candidates)}. The target is the {target}.",
            "listener": f"Objects: {', '.join(listener_order)}.",
        },
        meta={
            "target": {"colour": colour, "shape": shape},
            "contrast": contrast,
            "candidates": candidates,
            "listener_order": listener_order,
            "target_number": listener_order.index(target) + 1,
        },
    )


def mentioned(text: str) -> str | None:
    """The colour and shape words a message mentions, in order ("red circle", "red"), or
    None: a message's answer, for the analysis of who adopts whose words."""
    found = [w for w in _WORD.findall(text.lower()) if w in COLOURS or w in SHAPES]
    return " ".join(dict.fromkeys(found)) or None


def pick_from(reply: str, objects: list[str]) -> str | None:
    """The object a reply names: the one sharing the most words with it, when exactly one
    does ("The object is the red circle" -> "red circle"; "red" -> the red one when only
    one is red); None when it names none or several equally ("red circle or blue circle")."""
    said = set(_WORD.findall(reply.lower()))
    overlap = [len(said & set(name.split(" "))) for name in objects]
    best = max(overlap, default=0)
    if best == 0 or overlap.count(best) > 1:
        return None
    return objects[overlap.index(best)]


def picked_candidate(episode: Episode) -> str | None:
    """The object the listener picked with its last reply (None when it named none, or
    several equally)."""
    replies = [t.message.text for t in episode.turns if t.agent == "listener"]
    return pick_from(replies[-1], episode.task.meta["listener_order"]) if replies else None


def distinguishing(task: Task) -> tuple[str, list[str]]:
    """(the target's value of the attribute that varies, the distractors' values)."""
    index = 0 if task.meta["contrast"] == "colour" else 1
    target = task.answer.split(" ")[index]
    return target, [c.split(" ")[index] for c in task.meta["candidates"] if c != task.answer]


def make_scenario(
    K: int = 3,
    message_tokens: int = 3,
    reply_tokens: int = 8,
    team_weight: float = 0.7,
) -> Scenario:
    """Build the signalling game (options settable as `--set scenario_options.K=5`).

    message_tokens: the speaker's budget; reply_tokens: the listener's. team_weight: the
    weight of the team's outcome in each agent's reward, the rest going to the agent's
    own dense term (team_weight=1: the bare referential game).
    """
    if not (isinstance(K, int) and 2 <= K <= MAX_K):
        raise ScenarioError(f"signalling: K must be an int in 2..{MAX_K}, got {K!r}")
    if not all(isinstance(n, int) and n >= 1 for n in (message_tokens, reply_tokens)):
        raise ScenarioError(
            f"signalling: message_tokens and reply_tokens must be ints >= 1, got {message_tokens!r}, {reply_tokens!r}"
        )
    if not 0 <= team_weight <= 1:
        raise ScenarioError(f"signalling: team_weight must be in [0, 1], got {team_weight}")
    roles = [
        Role("speaker", SPEAKER, max_new_tokens=message_tokens),
        Role("listener", LISTENER, max_new_tokens=reply_tokens),
    ]

    def sample(rng: random.Random) -> Task:
        return make_reference_task(rng, k=K)

    def picked_target(task: Task, episode: Episode) -> float:
        return float(episode.team_answer == task.answer)

    def distinguishing_word(task: Task, episode: Episode) -> dict[str, float]:
        # The speaker's own job, paid whatever the listener makes of it: the message names
        # the target's distinguishing value and no distractor's.
        message = next((t.message.text for t in episode.turns if t.agent == "speaker"), "")
        said = set(_WORD.findall(message.lower()))
        target, others = distinguishing(task)
        return {"speaker": float(target in said and not said & set(others)), "listener": 0.0}

    def picked_one(task: Task, episode: Episode) -> dict[str, float]:
        # The listener's format: its reply names exactly one of its objects.
        return {"speaker": 0.0, "listener": float(episode.team_answer is not None)}

    reward = weighted(
        RewardTerm("picked_target", picked_target, team_weight),
        RewardTerm("distinguishing_word", distinguishing_word, 1 - team_weight),
        RewardTerm("picked_one", picked_one, 1 - team_weight),
    )

    def instruction(round_index: int, total: int) -> str:
        return INSTRUCTIONS[round_index]

    return Scenario(
        name="signalling",
        description=(
            "Referential game: a speaker describes a target object in a few tokens; a listener "
            "names it among K objects that differ in one attribute, in its own order."
        ),
        roles=roles,
        graph=chain(AGENTS),
        schedule=[["speaker"], ["listener"]],
        make_task=sample,
        reward=reward,
        team_answer=picked_candidate,
        parse=mentioned,
        turn_instruction=instruction,
        max_new_tokens=reply_tokens,
        temperature=0.7,
        train_defaults={
            "adapters": "per_role", "steps": 200, "time_budget_minutes": 15, "tasks_per_step": 4, "group_size": 8,
            "lr": 1e-3, "temperature": 0.7, "lora.rank": 16, "lora.alpha": 32, "eval_every": 0, "eval_episodes": 50,
            "save_every": 5,
        },
    )
