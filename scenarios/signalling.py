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

**The symbol channel (`channel="symbols"`).** The speaker may say only `message_length`
of `symbols` made-up syllables ("ka po"; constrained decoding, `SymbolChannel`), so the
mapping from objects to messages has to be invented by the speaker and learned by the
listener: an emergent code, not English. Both attributes vary (objects of `values` colours
and `values` shapes, all distinct), so a code may name colour and shape separately (a
compositional code) or give each object its own message (a holistic one). One combination
per colour (a diagonal of the colour x shape table, `meta["novel"]`) never appears in
training, as target or distractor: held-out tasks with such a target test whether the code
generalises to combinations never seen together (`meta["split"] = "eval"`); the other
held-out tasks are new arrangements of seen objects. Reward: the team's outcome for both,
plus the listener's format term; there is no per-message term, since any such term would
dictate the code.

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
    SymbolChannel,
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
# Made-up syllables, each one token of the embedded model's vocabulary (" ka", " po", ...).
SYLLABLES = ["ka", "po", "mu", "ti", "ze", "lo", "bi", "fu", "ne", "wa", "su", "ki"]
CODE_SPEAKER = "You are the speaker. Send the listener a message in your secret code that tells it which object is the target."
CODE_LISTENER = "You are the listener. Name the object the speaker's coded message means."
CODE_INSTRUCTIONS = ["Send the code for the target.", "Which object is it? Reply with its colour and shape only."]

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


def novel_combinations(values: int) -> set[str]:
    """The objects kept out of training in the symbol game: colour i with shape i + 1 (one per
    colour and per shape, so every value is still seen in training with the others)."""
    return {f"{COLOURS[i]} {SHAPES[(i + 1) % values]}" for i in range(values)}


def make_code_task(rng: random.Random, k: int, values: int) -> Task:
    """K distinct objects of `values` colours x `values` shapes, both attributes varying. One
    draw in six is a held-out task whose target is a novel combination (`meta["novel"]`,
    split "eval"); the others hold only the combinations seen in training."""
    novel = novel_combinations(values)
    everything = [f"{c} {s}" for c in COLOURS[:values] for s in SHAPES[:values]]
    seen = [o for o in everything if o not in novel]
    if rng.random() < 1 / 6:
        target = rng.choice(sorted(novel))
        candidates = [target, *rng.sample([o for o in everything if o != target], k - 1)]
        rng.shuffle(candidates)
    else:
        candidates = rng.sample(seen, k)
        target = rng.choice(candidates)
    listener_order = rng.sample(candidates, k)
    colour, shape = target.split(" ")
    meta = {
        "target": {"colour": colour, "shape": shape},
        "contrast": "both",
        "candidates": candidates,
        "listener_order": listener_order,
        "target_number": listener_order.index(target) + 1,
        "novel": target in novel,
    }
    if target in novel:
        meta["split"] = "eval"
    return Task(
        key=f"{target}|{','.join(candidates)}|{','.join(listener_order)}",
        prompt="",
        answer=target,
        private={
            "speaker": f"Objects: {', '.join(candidates)}. The target is the {target}.",
            "listener": f"Objects: {', '.join(listener_order)}.",
        },
        meta=meta,
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


def picked_target(task: Task, episode: Episode) -> float:
    """The team's outcome: the listener's pick is the target."""
    return float(episode.team_answer == task.answer)


def picked_one(task: Task, episode: Episode) -> dict[str, float]:
    """The listener's format: its reply names exactly one of its objects."""
    return {"speaker": 0.0, "listener": float(episode.team_answer is not None)}


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
    channel: str = "words",
    symbols: int = 8,
    message_length: int = 2,
    values: int = 4,
    code_reply_tokens: int = 12,
) -> Scenario:
    """Build the signalling game (options settable as `--set scenario_options.K=5`).

    message_tokens: the speaker's budget; reply_tokens: the listener's. team_weight: the
    weight of the team's outcome in each agent's reward, the rest going to the agent's
    own dense term (team_weight=1: the bare referential game).
    channel="symbols": the speaker says `message_length` of the first `symbols` made-up
    syllables, about objects of `values` colours x `values` shapes (see the module docstring);
    the listener then has `code_reply_tokens` (its untrained replies name an object only
    after a preamble: "The object is yellow square.").
    """
    if channel not in ("words", "symbols"):
        raise ScenarioError(f"signalling: channel must be 'words' or 'symbols', got {channel!r}")
    if channel == "symbols":
        return _code_scenario(K, symbols, message_length, values, code_reply_tokens, team_weight)
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

    def distinguishing_word(task: Task, episode: Episode) -> dict[str, float]:
        # The speaker's own job, paid whatever the listener makes of it: the message names
        # the target's distinguishing value and no distractor's.
        message = next((t.message.text for t in episode.turns if t.agent == "speaker"), "")
        said = set(_WORD.findall(message.lower()))
        target, others = distinguishing(task)
        return {"speaker": float(target in said and not said & set(others)), "listener": 0.0}

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


def _code_scenario(K: int, symbols: int, message_length: int, values: int, reply_tokens: int,
                   team_weight: float) -> Scenario:
    """The signalling game on a symbol-only channel (`make_scenario(channel="symbols")`)."""
    if not (isinstance(values, int) and 2 <= values <= MAX_K):
        raise ScenarioError(f"signalling: values must be an int in 2..{MAX_K}, got {values!r}")
    if not (isinstance(K, int) and 2 <= K <= values * values - values):
        raise ScenarioError(f"signalling: K must be an int in 2..{values * values - values} "
                            f"(the combinations seen in training) for values={values}, got {K!r}")
    if not (isinstance(symbols, int) and 2 <= symbols <= len(SYLLABLES)):
        raise ScenarioError(f"signalling: symbols must be an int in 2..{len(SYLLABLES)}, got {symbols!r}")
    if not 0 <= team_weight <= 1:
        raise ScenarioError(f"signalling: team_weight must be in [0, 1], got {team_weight}")
    code = SymbolChannel(tuple(SYLLABLES[:symbols]), length=message_length)
    roles = [
        Role("speaker", CODE_SPEAKER, channel=code),
        # The listener samples cooler than the speaker explores: at 1.0 the untrained listener
        # names exactly one object in about a tenth of its replies, and the speaker hears nothing.
        Role("listener", CODE_LISTENER, max_new_tokens=reply_tokens, temperature=0.7),
    ]

    def parse(text: str) -> str | None:
        said = code.parse(text)
        return " ".join(said) if said is not None else mentioned(text)

    return Scenario(
        name="signalling",
        description=(
            "Referential game on a symbol-only channel: the speaker sends a few made-up syllables; "
            "the listener names the target among K objects of several colours and shapes."
        ),
        roles=roles,
        graph=chain(AGENTS),
        schedule=[["speaker"], ["listener"]],
        make_task=lambda rng: make_code_task(rng, K, values),
        reward=weighted(
            RewardTerm("picked_target", picked_target, team_weight),
            RewardTerm("picked_one", picked_one, 1 - team_weight),
        ),
        team_answer=picked_candidate,
        parse=parse,
        turn_instruction=lambda round_index, total: CODE_INSTRUCTIONS[round_index],
        max_new_tokens=reply_tokens,
        temperature=1.0,
        train_defaults={
            "adapters": "per_role", "steps": 400, "time_budget_minutes": 15, "tasks_per_step": 4, "group_size": 8,
            "lr": 1e-3, "temperature": 1.0, "lora.rank": 16, "lora.alpha": 32, "eval_every": 0, "eval_episodes": 60,
            "save_every": 10, "symbol_entropy": 0.01,
        },
    )
