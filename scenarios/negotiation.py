"""negotiation (competitive): red sells an item to blue and they haggle over the price in
one-word replies, each side knowing only its own value of the item (red's cost, blue's
worth); a deal needs both to agree, and no deal earns both nothing.

Rules:
- A task is an item, red's private cost C (1-4 coins), blue's private value V (6-10
  coins), so every price from C to V leaves both sides better off, and the price such an
  item usually sells for (5-10, drawn apart from C and V), which red's opening prompt
  mentions. Prices are whole coins from 0 to 10.
- Red names a price first; then the sides alternate (default 3 turns: red offers, blue
  accepts or counters, red accepts or counters). A reply is one word: ``accept`` (the
  other side's standing price) or a price (a counter-offer, which stands until the other
  side answers it).
- The deal is struck, at the standing price, when a side accepts it or names a price at
  least as good for the other side (blue bids at least red's ask, red asks at most blue's
  bid); the episode ends there. After the last turn without one there is no deal.
- Parsing is forgiving: the first accept word (accept, yes, ok, deal, agree), refusal word
  (no, not, reject, ...) or number in the reply decides. Any reply that is neither a deal
  nor a price from 0 to 10 walks away: the episode ends without a deal. A refusal is a
  move; anything else (no recognisable word, a price above 10, an accept with no price of
  the other side's to accept) is malformed and the turn is marked invalid.
- At a deal at price P red gains P - C and blue V - P. ``mode="general_sum"``: each side's
  `deal_value` is its gain over 10, weighted 1 - ``format_bonus``, plus ``format_bonus``
  x `format`, the share of its turns that were well formed (shaping: left out of every
  figure of play). ``mode="zero_sum"``: `zero_sum` over the two gains, no format term.
- The winner (`Outcome.winner`) is the side that gains more from the deal; a deal at the
  middle of C and V, or no deal, is a draw.
- ``team_size=2`` gives each side an advisor who sees the same state and speaks first in
  its side's turn; its negotiator is shown the advice.

Why so short: the embedded 135M model could not keep books-and-hats proposals
complementary in free text (an earlier version reached no deal in any of 224 training
games), but it does answer one word to a prompt that states the price it faces and what
accepting it earns. Each prompt is rebuilt from the state (`observe`), so it stays a few
dozen tokens however long the game, and replies are capped at 8 tokens.

Worked example of: competitive teams (`Role.team`), zero-sum versus general-sum rewards,
private valuations, prompts built from the state (`observe`) on a fixed schedule, a
forgiving custom parser, invalid moves and the winner decided by `act`, an episode that
ends early (`Outcome(done=True)`), and the training settings it learns with
(`train_defaults`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from multiagent_rl import (
    Episode,
    Outcome,
    RewardTerm,
    Role,
    Scenario,
    ScenarioError,
    Task,
    from_edges,
    weighted,
    zero_sum,
)

TEAMS = ("red", "blue")
MODES = ("general_sum", "zero_sum")
MAX_PRICE = 10
COSTS = range(1, 5)  # red's private cost of the item
VALUES = range(6, 11)  # blue's private value of it: every task has deals that help both
MARKET = range(5, 11)  # what such an item usually sells for: public, and no clue to either value
ITEMS = (
    "hat", "book", "lamp", "clock", "kite", "bike", "drum", "vase", "rug", "coat",
    "fan", "cup", "pen", "bag", "chair", "ball", "radio", "mirror", "bell", "bowl",
)
ACCEPT, REFUSE = "accept", "refuse"

# One short line per role, and the state in the user turn: on a CPU, prompt tokens are most
# of a step's compute, and the 135M model answers one word best when asked for exactly that.
SYSTEM = {
    "red_negotiator": "You are the seller. Answer with only 'accept' or a number.",
    "blue_negotiator": "You are the buyer. Answer with only 'accept' or a number.",
    "red_advisor": "You advise the seller. Answer with only 'accept' or a number.",
    "blue_advisor": "You advise the buyer. Answer with only 'accept' or a number.",
}

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+", re.IGNORECASE)
_ACCEPT_WORDS = {"accept", "accepted", "accepting", "accepts", "yes", "ok", "okay", "deal", "agree", "agreed"}
_REFUSE_WORDS = {
    "no", "not", "nope", "never", "cannot", "can't", "don't", "won't", "reject", "rejected", "decline", "declined",
    "refuse", "refused",
}


def parse_reply(text: str) -> str | None:
    """A reply as "accept", "refuse", a price (digits, as said), or None (nothing recognisable).

    The first accept word, refusal word or number decides, so "No deal" refuses and
    "Yes, 6 is fine" accepts.

    >>> parse_reply("Accept."), parse_reply("I'd say 7 coins"), parse_reply("no deal")
    ('accept', '7', 'refuse')
    >>> parse_reply("I'm sorry for the misunderstanding.") is None
    True
    """
    if not isinstance(text, str):
        return None
    for word in _WORD.findall(text[:2000].replace("\u2019", "'")):  # a reply is capped at a few tokens; a test's is not
        if word.isdigit():
            return str(int(word)) if len(word) <= 3 else None
        word = word.lower()
        if word in _ACCEPT_WORDS:
            return ACCEPT
        if word in _REFUSE_WORDS:
            return REFUSE
    return None


@dataclass(frozen=True)
class Bargain:
    """Where a negotiation stands after some moves: the deal's price once struck; else the
    standing price and the side that named it, and whether a side walked away; and which
    moves were well formed."""

    price: int | None = None  # the deal's price, once struck
    standing: int | None = None  # the latest price on the table, not yet answered
    offered_by: str | None = None  # the side whose price stands
    over: bool = False  # a side walked away: no deal
    valid: tuple[bool, ...] = ()  # per move: well formed


def bargain(moves: Sequence[tuple[str, str | None]]) -> Bargain:
    """Play out `moves`, each (side, parsed reply), under the module's rules.

    >>> bargain([("red", "8"), ("blue", "5"), ("red", "accept")]).price
    5
    >>> bargain([("red", "6"), ("blue", "7")]).price  # blue offers more than red asks: red's price
    6
    >>> bargain([("red", "8"), ("blue", "??")])
    Bargain(price=None, standing=8, offered_by='red', over=True, valid=(True, False))
    """
    standing, offered_by, valid = None, None, []
    for side, reply in moves:
        price = int(reply) if reply is not None and reply.isdigit() and int(reply) <= MAX_PRICE else None
        if standing is not None and offered_by != side:
            at_least_as_good = price is not None and (price >= standing if side == "blue" else price <= standing)
            if reply == ACCEPT or at_least_as_good:
                return Bargain(price=standing, valid=(*valid, True))
        if price is None:  # a refusal walks away; so does anything that is not a move (marked invalid)
            return Bargain(standing=standing, offered_by=offered_by, over=True, valid=(*valid, reply == REFUSE))
        standing, offered_by = price, side
        valid.append(True)
    return Bargain(standing=standing, offered_by=offered_by, valid=tuple(valid))


def make_trade_task(rng: random.Random) -> Task:
    """An item, red's private cost and blue's private value of it, and its usual price."""
    item, cost, value, market = rng.choice(ITEMS), rng.choice(COSTS), rng.choice(VALUES), rng.choice(MARKET)
    return Task(
        key=f"{item}|cost {cost}|value {value}|market {market}",
        prompt=f"Red sells a {item} to blue.",
        answer=None,
        meta={"item": item, "cost": cost, "value": value, "market": market},
    )


def gains(task: Task, price: int | None) -> dict[str, float]:
    """Each side's gain in coins at `price` (0 for both without a deal)."""
    if price is None:
        return dict.fromkeys(TEAMS, 0.0)
    return {"red": float(price - task.meta["cost"]), "blue": float(task.meta["value"] - price)}


def coins(n: int) -> str:
    return f"{n} coin" if n == 1 else f"{n} coins"


def situation(task: Task, team: str, state: Bargain, last: bool) -> str:
    """What a side is shown in its turn: its private value, the price it faces and what
    accepting that price earns it. Worded as the 135M model answers best: a closing
    "Answer ..." line it copies from, and no "no deal" (it echoes that as a refusal). It
    also copies the first number it reads, so red's opening starts with the item's usual
    price: were it red's cost (a seller's worst price), the untrained seller would ask
    nothing else, leaving RL no higher ask to learn from."""
    item = task.meta["item"]
    if state.standing is None:  # the opening: only red's, since any other reply ends the game
        return (f"A {item} sells for about {task.meta['market']} coins. Yours cost you {coins(task.meta['cost'])}."
                f"{' Last turn.' if last else ''}\nAnswer with a price from 0 to {MAX_PRICE}:")
    if team == "red":
        mine, other, verb = f"Your {item} cost you {coins(task.meta['cost'])}.", "buyer", "offers"
    else:
        mine, other, verb = f"The {item} is worth {coins(task.meta['value'])} to you.", "seller", "asks"
    gain = gains(task, state.standing)[team]
    earn = f"earn {gain:g}" if gain >= 0 else f"lose {-gain:g}"
    last_turn = "\nLast turn. " if last else "\n"
    return f"{mine} The {other} {verb} {state.standing}. Accept and you {earn}.{last_turn}Answer accept or a price:"


def make_scenario(
    turns: int = 3,
    team_size: int = 1,
    mode: str = "general_sum",
    format_bonus: float = 0.1,
) -> Scenario:
    """Build the negotiation scenario (options settable as `--set scenario_options.mode=zero_sum`).

    turns: replies in all, red first (2: an offer and its answer); team_size: 2 adds an
    advisor per side; mode: general_sum or zero_sum; format_bonus: the weight of the
    `format` term (general_sum only).
    """
    if mode not in MODES:
        raise ScenarioError(f"negotiation: mode {mode!r}; expected one of {', '.join(MODES)}")
    if team_size not in (1, 2):
        raise ScenarioError(f"negotiation: team_size must be 1 or 2, got {team_size!r}")
    if not (isinstance(turns, int) and turns >= 2):
        raise ScenarioError(f"negotiation: turns must be an int >= 2 (an offer and its answer), got {turns!r}")
    if not 0.0 <= format_bonus <= 1.0:
        raise ScenarioError(f"negotiation: format_bonus must be in [0, 1], got {format_bonus}")

    negotiator = {team: f"{team}_negotiator" for team in TEAMS}
    advisor = {team: f"{team}_advisor" for team in TEAMS} if team_size == 2 else {}
    roles = [Role(negotiator[t], SYSTEM[negotiator[t]], team=t) for t in TEAMS]
    roles += [Role(advisor[t], SYSTEM[advisor[t]], team=t) for t in advisor]
    agents = [r.name for r in roles]
    teams = {r.name: r.team for r in roles}
    negotiators = {negotiator[t]: t for t in TEAMS}

    edges: list[tuple[Any, ...]] = [
        (negotiator["red"], negotiator["blue"]),
        (negotiator["blue"], negotiator["red"]),
    ]
    edges += [(advisor[t], negotiator[t]) for t in advisor]
    graph = from_edges(edges, agents=agents)

    schedule: list[Sequence[str]] = []
    for k in range(turns):
        team = TEAMS[k % 2]
        if team in advisor:
            schedule.append([advisor[team]])
        schedule.append([negotiator[team]])

    def moves(turns_so_far) -> list[tuple[str, str | None]]:
        return [(negotiators[t.agent], t.message.answer) for t in turns_so_far if t.agent in negotiators]

    def deal_price(episode: Episode) -> int | None:
        return bargain(moves(episode.turns)).price

    def team_answer(episode: Episode) -> str | None:
        price = deal_price(episode)
        return None if price is None else f"deal at {price}"

    def deal_value(task: Task, episode: Episode) -> dict[str, float]:
        scores = {t: g / MAX_PRICE for t, g in gains(task, deal_price(episode)).items()}
        if mode == "zero_sum":
            return zero_sum(scores, teams)
        return {a: scores[teams[a]] for a in agents}

    def well_formed(task: Task, episode: Episode) -> dict[str, float]:
        # So an untrained model gets a signal toward one-word replies before it strikes deals.
        counts = {a: [0, 0] for a in agents}
        for turn in episode.turns:
            counts[turn.agent][0] += turn.valid
            counts[turn.agent][1] += 1
        return {a: good / total if total else 0.0 for a, (good, total) in counts.items()}

    if mode == "zero_sum":  # no format term: it would break the zero sum
        reward = weighted(RewardTerm("deal_value", deal_value))
    else:
        reward = weighted(
            RewardTerm("deal_value", deal_value, 1 - format_bonus),
            RewardTerm("format", well_formed, format_bonus),
        )

    def observe(view, agent: str) -> str:
        team = teams[agent]
        state = bargain(moves(view.turns))
        last = sum(t.agent in negotiators for t in view.turns) + 1 == turns
        shown = situation(view.task, team, state, last)
        advice = [t for t in view.turns if t.agent == advisor.get(team)]
        if agent in negotiators and advice and advice[-1] is view.turns[-1]:
            shown += f"\nYour advisor says: {advice[-1].message.text.strip()[:80]}"
        return shown

    def act(view, agent: str, text: str) -> Outcome:
        """A deal, or a side walking away, ends the episode at once; a malformed reply is marked
        invalid. The winner is decided here, from the deal alone, so that no reward term
        (shaping included) can decide a game."""
        reply = view.turns[-1].message.answer
        if agent not in negotiators:  # advice: well formed if it is a reply a negotiator could give
            return Outcome(valid=reply in (ACCEPT, REFUSE) or (reply is not None and int(reply) <= MAX_PRICE))
        done = moves(view.turns)
        state = bargain(done)
        if state.price is not None:
            gain = gains(view.task, state.price)
            winner = "draw" if gain["red"] == gain["blue"] else max(gain, key=gain.get)
            return Outcome(done=True, winner=winner, event={"deal": state.price, "by": negotiators[agent]})
        if state.over:
            return Outcome(valid=state.valid[-1], done=True, winner="draw", event={"walked_away": negotiators[agent]})
        return Outcome(valid=True, winner="draw" if len(done) == turns else None)

    return Scenario(
        name="negotiation",
        description=(
            "Red sells an item to blue; each knows only its own value of it, and they haggle "
            "over the price in one-word replies; zero- or general-sum."
        ),
        roles=roles,
        graph=graph,
        schedule=schedule,
        make_task=make_trade_task,
        reward=reward,
        team_answer=team_answer,
        parse=parse_reply,
        observe=observe,
        act=act,
        max_new_tokens=8,
        temperature=0.7,
        train_defaults={
            "adapters": "per_role", "steps": 400, "time_budget_minutes": 15, "tasks_per_step": 4, "group_size": 4,
            "lr": 5e-4, "lora.rank": 16, "lora.alpha": 32, "eval_every": 0, "eval_episodes": 50, "save_every": 5,
        },
    )
