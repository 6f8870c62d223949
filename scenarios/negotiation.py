"""negotiation (competitive): teams red and blue split a pot of books and hats that
each side values privately. Negotiators take turns proposing what their own side
keeps; the final two proposals decide whether there is a deal.

Rules:
- A proposal is ``<answer>B,H</answer>``: the books and hats the proposer keeps
  (the other side gets the rest). Parsing is lenient: the last two numbers in the
  tagged answer, or in the whole message when it has no tag. ``<answer>accept</answer>``
  (the word, no numbers) accepts the other side's latest proposal.
- Red proposes first and the sides alternate (default 4 proposals: red, blue, red, blue).
- An ``accept`` of the other side's latest proposal, when that proposal is a valid split,
  is a deal and ends the negotiation at once. Otherwise the last two proposals (one per
  side) decide: complementary (adding up to the pot) is a deal; a split keeping more
  than the pot holds, or unparseable text, breaks it.
- Each side's score is the value of its share under its own private per-item
  values, divided by its value of the whole pot (so in [0, 1]); 0 without a deal.
  ``mode="general_sum"``: every member gets its side's score.
  ``mode="zero_sum"``: `zero_sum` over the two scores (rewards sum to zero).
- ``team_size=2`` gives each side an advisor who talks only to its own negotiator
  (it hears its negotiator in full and the other side's proposals as bare answers);
  each proposal round is then preceded by an advice round of the proposing side.

Worked example of: competitive teams (`Role.team`), zero-sum versus general-sum
rewards, private valuations, answer-only edges, a custom parser, and an episode that
ends early (`act` returning `Outcome(done=True)`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from multiagent_rl import (
    Episode,
    Outcome,
    RewardTerm,
    Role,
    Scenario,
    ScenarioError,
    Task,
    answered,
    from_edges,
    weighted,
    zero_sum,
)

TEAMS = ("red", "blue")
KINDS = ("books", "hats")
MODES = ("general_sum", "zero_sum")
MAX_VALUE = 5  # per-item values are 0..MAX_VALUE, never both zero for one side
VALUE_PAIRS = [(b, h) for b in range(MAX_VALUE + 1) for h in range(MAX_VALUE + 1) if b or h]

# Concrete and short: the embedded model refuses vaguer negotiation prompts outright.
NEGOTIATOR = (
    "You are the {team} player in a trading game. Say how many books and hats you keep, "
    "as two numbers like 2,1. Or say accept."
)
ADVISOR = (
    "You advise the {team} negotiator. In one short line, say what your team should keep, "
    "as <answer>B,H</answer>."
)

_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_INT = re.compile(r"[0-9]+")
_ACCEPT = re.compile(r"\baccept", re.IGNORECASE)


def parse_proposal(text: str) -> str | None:
    """A proposal as "B,H" (what the proposer keeps), "accept", or None.

    >>> parse_proposal("I keep most. <answer>3, 1</answer>")
    '3,1'
    >>> parse_proposal("I keep 2 books and 0 hats")
    '2,0'
    >>> parse_proposal("<answer>Accept</answer>"), parse_proposal("no idea")
    ('accept', None)
    """
    if not isinstance(text, str) or not text:
        return None
    tagged = [t for t in _TAG.findall(text) if t.strip()]
    scope = tagged[-1] if tagged else text
    numbers = _INT.findall(scope)
    if len(numbers) >= 2:
        books, hats = numbers[-2:]
        if len(books) > 6 or len(hats) > 6:  # no pot is that big; also keeps int() cheap
            return None
        return f"{int(books)},{int(hats)}"
    if not numbers and _ACCEPT.search(scope):
        return "accept"
    return None


DEFAULT_TEAMS = {"red_negotiator": "red", "blue_negotiator": "blue"}


def make_pot_task(
    rng: random.Random, max_items: int = 4, teams: Mapping[str, str] = DEFAULT_TEAMS
) -> Task:
    """A pot of 1..max_items books and hats and private per-item values for each side;
    every agent in `teams` (agent -> "red" | "blue") privately sees its side's values."""
    pot = {kind: rng.randint(1, max_items) for kind in KINDS}
    values = {team: dict(zip(KINDS, rng.choice(VALUE_PAIRS), strict=True)) for team in TEAMS}
    pot_text = " and ".join(f"{pot[k]} {k if pot[k] != 1 else k[:-1]}" for k in KINDS)
    private = {
        agent: (
            f"Your values: a book is worth {values[team]['books']}, a hat is worth "
            f"{values[team]['hats']}. The whole pot is worth {pot_value(values[team], pot)} to you."
        )
        for agent, team in teams.items()
    }
    key = (
        f"{pot['books']}b{pot['hats']}h|red {values['red']['books']},{values['red']['hats']}"
        f"|blue {values['blue']['books']},{values['blue']['hats']}"
    )
    return Task(
        key=key,
        prompt=f"Red and blue split a pot of {pot_text}. Each side values the items privately.",
        answer=None,
        private=private,
        meta={"pot": pot, "values": values},
    )


def pot_value(values: dict[str, int], share: dict[str, int]) -> int:
    return sum(values[kind] * share[kind] for kind in KINDS)


def normalised_value(values: dict[str, int], share: dict[str, int], pot: dict[str, int]) -> float:
    """A side's value of `share` over its value of the whole pot, in [0, 1]."""
    return pot_value(values, share) / pot_value(values, pot)


def _split(answer: str | None, pot: dict[str, int]) -> dict[str, int] | None:
    """A parsed proposal as {"books": B, "hats": H} if it fits in the pot, else None."""
    if answer is None or answer == "accept":
        return None
    try:
        books, hats = (int(x) for x in answer.split(","))
    except ValueError:
        return None
    if not (0 <= books <= pot["books"] and 0 <= hats <= pot["hats"]):
        return None
    return {"books": books, "hats": hats}


def find_deal(episode: Episode, negotiators: dict[str, str]) -> dict[str, dict[str, int]] | None:
    """The agreed shares {team: {"books": B, "hats": H}}, or None (see the module rules).

    `negotiators` maps each negotiator agent to its team.
    """
    pot = episode.task.meta["pot"]
    proposals = [
        (negotiators[t.agent], t.message.answer) for t in episode.turns if t.agent in negotiators
    ]
    if len(proposals) < 2:
        return None
    (first_team, first), (last_team, last) = proposals[-2], proposals[-1]
    if first_team == last_team:
        return None
    first_share = _split(first, pot)
    if first_share is None:
        return None
    complement = {kind: pot[kind] - first_share[kind] for kind in KINDS}
    if last != "accept" and _split(last, pot) != complement:
        return None
    return {first_team: first_share, last_team: complement}


def make_scenario(
    proposals: int = 4,
    team_size: int = 1,
    mode: str = "general_sum",
    max_items: int = 4,
    format_bonus: float = 0.1,
) -> Scenario:
    """Build the negotiation scenario (options settable as `--set scenario_options.mode=zero_sum`)."""
    if mode not in MODES:
        raise ScenarioError(f"negotiation: mode {mode!r}; expected one of {', '.join(MODES)}")
    if team_size not in (1, 2):
        raise ScenarioError(f"negotiation: team_size must be 1 or 2, got {team_size!r}")
    if proposals < 2:
        raise ScenarioError(
            f"negotiation: proposals must be at least 2 for a deal, got {proposals}"
        )
    if not 0.0 <= format_bonus <= 1.0:
        raise ScenarioError(f"negotiation: format_bonus must be in [0, 1], got {format_bonus}")
    if not (isinstance(max_items, int) and max_items >= 1):
        raise ScenarioError(f"negotiation: max_items must be an int >= 1, got {max_items!r}")

    negotiator = {team: f"{team}_negotiator" for team in TEAMS}
    advisor = {team: f"{team}_advisor" for team in TEAMS} if team_size == 2 else {}
    roles = [Role(negotiator[t], NEGOTIATOR.format(team=t), team=t) for t in TEAMS]
    roles += [Role(advisor[t], ADVISOR.format(team=t), team=t) for t in advisor]
    agents = [r.name for r in roles]
    teams = {r.name: r.team for r in roles}
    negotiators = {negotiator[t]: t for t in TEAMS}

    edges: list[tuple[Any, ...]] = [
        (negotiator["red"], negotiator["blue"]),
        (negotiator["blue"], negotiator["red"]),
    ]
    for team, other in (("red", "blue"), ("blue", "red")):
        if team in advisor:
            edges += [
                (advisor[team], negotiator[team]),
                (negotiator[team], advisor[team]),
                (negotiator[other], advisor[team], {"visibility": "answer"}),
            ]
    graph = from_edges(edges, agents=agents)

    schedule: list[Sequence[str]] = []
    for k in range(proposals):
        team = TEAMS[k % 2]
        if team in advisor:
            schedule.append([advisor[team]])
        schedule.append([negotiator[team]])

    def sample(rng: random.Random) -> Task:
        return make_pot_task(rng, max_items=max_items, teams=teams)

    def team_answer(episode: Episode) -> str | None:
        deal = find_deal(episode, negotiators)
        if deal is None:
            return None
        return "; ".join(f"{t} keeps {deal[t]['books']},{deal[t]['hats']}" for t in TEAMS)

    def team_scores(task: Task, episode: Episode) -> dict[str, float]:
        deal = find_deal(episode, negotiators)
        if deal is None:
            return dict.fromkeys(TEAMS, 0.0)
        values, pot = task.meta["values"], task.meta["pot"]
        return {t: normalised_value(values[t], deal[t], pot) for t in TEAMS}

    def deal_value(task: Task, episode: Episode) -> dict[str, float]:
        scores = team_scores(task, episode)
        if mode == "zero_sum":
            return zero_sum(scores, teams)
        return {a: scores[teams[a]] for a in agents}

    def proposal_format(task: Task, episode: Episode) -> dict[str, float]:
        # So an untrained model that never reaches a deal still gets a signal to learn the format from.
        return answered(episode, agents)

    if mode == "zero_sum":  # no format bonus: it would break the zero sum
        reward = weighted(RewardTerm("deal_value", deal_value))
    else:
        reward = weighted(
            RewardTerm("deal_value", deal_value, 1 - format_bonus), RewardTerm("format", proposal_format, format_bonus)
        )

    def accepted(view, agent: str, text: str):
        """An accept of a valid standing offer closes the deal: the episode ends here."""
        if agent not in negotiators or parse_proposal(text) != "accept":
            return None
        offers = [t for t in view.turns[:-1] if t.agent in negotiators]
        if offers and negotiators[offers[-1].agent] != negotiators[agent] and _split(offers[-1].message.answer, view.task.meta["pot"]):
            return Outcome(done=True, event={"accepted_by": agent})
        return None

    def instruction(round_index: int, total: int) -> str:
        if round_index >= total:  # the env also asks for the view after the last round
            return ""
        k = round_index // team_size + 1
        if k == proposals:
            return (
                f"Proposal {k} of {proposals}, the last: accept or give the exact complement "
                "of the other side's offer to make a deal; no deal scores 0."
            )
        return f"Proposal {k} of {proposals}. Books, hats you keep:"

    return Scenario(
        name="negotiation",
        description=(
            "Red and blue split books and hats under private values by alternating proposals; "
            "zero- or general-sum."
        ),
        roles=roles,
        graph=graph,
        schedule=schedule,
        make_task=sample,
        reward=reward,
        team_answer=team_answer,
        parse=parse_proposal,
        turn_instruction=instruction,
        act=accepted,
        max_new_tokens=32,
    )
