"""A self-play league of frozen policy snapshots: the pool, opponent sampling, ratings and tallies.

Pure bookkeeping (no torch, no model code): the training loop loads and unloads the adapters
this names, plays the games it samples and reports each outcome back.

>>> league = League(LeagueSettings(mode="pool", opponents="latest"), seed=0)
>>> league.add_snapshot("step-0")
[]
>>> league.sample_opponents(2)
['step-0', 'step-0']
>>> league.record("step-0", 1)
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection
from typing import Any, Literal

from openskill.models import PlackettLuce
from pydantic import BaseModel, ConfigDict, Field

from .records import Episode

LIVE = "live"
# PFSP's win estimate reads the live policy's last PFSP_WINDOW games against each snapshot. Not
# the whole tally: the live policy keeps changing, so a snapshot's early games were mostly
# against older, weaker live policies and would keep its estimate far from what the current
# one does. A window rather than an exponential average: every game in it weighs the same, so
# the estimate is a plain win rate over a known number of recent games (with the same one
# pseudo-game prior), forgetting each game once as many newer ones replace it.
PFSP_WINDOW = 32
_OUTCOMES = {1: 0, 0.5: 1, 0: 2}  # live_score -> index in a [win, draw, loss] tally


class LeagueSettings(BaseModel):
    """`league:`: self-play against the live policy's own past (imported by config.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    mode: Literal["off", "mirror", "pool", "both"] = Field(
        "off",
        description="off: no league; mirror: one adapter plays every seat and learns from all; "
        "pool: the learning side plays frozen snapshots; both: every team learns, as without a league.",
    )
    snapshot_every: int = Field(10, ge=1, description="Steps between frozen snapshots of the live policy.")
    pool_size: int = Field(
        4, ge=1, description="Most snapshots kept; the oldest non-initial one is dropped first."
    )
    opponents: Literal["latest", "uniform", "pfsp"] = Field(
        "pfsp",
        description="latest: the newest snapshot; uniform: any in the pool; pfsp: prioritised "
        "fictitious self-play (AlphaStar's PFSP), the opponents the live policy beats least come most often.",
    )
    pfsp_power: float = Field(
        2.0, ge=0, description="PFSP weight (1 - p)^power, p the live policy's win probability; 0: uniform."
    )
    keep_initial: bool = Field(True, description="The first (step-0) snapshot stays in the pool for good.")
    ratings: bool = Field(True, description="Rate the live policy and every snapshot (openskill Plackett-Luce).")
    match_games: int = Field(
        8, ge=0, description="At each snapshot, held-out games the live policy plays against every pool "
        "member (half in each seat, sampled as in training): the ratings and the win-rate matrix.",
    )


class League:
    """The pool, ratings, tallies and opponent sampler of one run; `state_dict` resumes it exactly."""

    def __init__(self, settings: LeagueSettings, seed: int = 0) -> None:
        self.settings = settings
        self.pool: list[str] = []
        self.initial: str | None = None
        self._model = PlackettLuce()
        self._ratings: dict[str, list[float]] = {}  # name -> [mu, sigma]
        if settings.ratings:
            self._ratings[LIVE] = [self._model.mu, self._model.sigma]
        self.tallies: dict[str, list[int]] = {}  # opponent -> cumulative [win, draw, loss]
        self.step_tallies: dict[str, list[int]] = {}  # the same, this step only
        self.recent: dict[str, list[float]] = {}  # opponent -> the live policy's last PFSP_WINDOW scores
        self._rng = random.Random(seed)

    def add_snapshot(self, name: str) -> list[str]:
        """Freeze the live policy as `name`; returns the names dropped, whose adapters the caller unloads."""
        if name == LIVE or name in self.pool:
            raise ValueError(f"league: snapshot name {name!r} is taken (the pool is {self.pool})")
        if self.initial is None:
            self.initial = name
        self.pool.append(name)
        self.tallies[name] = [0, 0, 0]
        self.recent[name] = []
        if self.settings.ratings:  # a copy of the live policy is as strong as it is, as far as we know
            self._ratings[name] = list(self._ratings[LIVE])
        dropped = []
        while len(self.pool) > self.settings.pool_size:
            keep = self.initial if self.settings.keep_initial else None
            # With keep_initial and pool_size 1 the newest is dropped at once: the pool is step-0 alone.
            oldest = next(n for n in self.pool if n != keep)
            self.pool.remove(oldest)
            self.tallies.pop(oldest)
            self.recent.pop(oldest)
            self._ratings.pop(oldest, None)  # it plays no more; its last rating is in the logs
            dropped.append(oldest)
        return dropped

    def pfsp_weights(self) -> list[float]:
        """(1 - p)^power per pool member, p = P(live wins) over the last PFSP_WINDOW games
        against it, with one pseudo-game at 0.5 (unplayed: 0.5)."""
        weights = []
        for name in self.pool:
            recent = self.recent[name]
            p = (sum(recent) + 0.5) / (len(recent) + 1)
            weights.append((1.0 - p) ** self.settings.pfsp_power)
        return weights

    def sample_opponents(self, n: int) -> list[str]:
        """One opponent for each of n task groups, by the configured rule, from the league's own rng."""
        if not self.pool:
            raise ValueError("league: cannot sample opponents from an empty pool (add_snapshot first)")
        if n < 0:
            raise ValueError(f"league: cannot sample {n} opponents")
        rule = self.settings.opponents
        if rule == "latest":
            return [self.pool[-1]] * n
        weights = self.pfsp_weights() if rule == "pfsp" else None
        return self._rng.choices(self.pool, weights=weights, k=n)

    def record(self, opponent: str, live_score: float) -> None:
        """One game of the live policy against `opponent`: 1 win, 0.5 draw, 0 loss."""
        if opponent not in self.pool:
            raise ValueError(f"league: opponent {opponent!r} is not in the pool {self.pool}")
        if isinstance(live_score, bool) or live_score not in _OUTCOMES:
            raise ValueError(f"league: live_score must be 0, 0.5 or 1, not {live_score!r}")
        index = _OUTCOMES[live_score]
        self.tallies[opponent][index] += 1
        self.step_tallies.setdefault(opponent, [0, 0, 0])[index] += 1
        self.recent[opponent] = [*self.recent[opponent], float(live_score)][-PFSP_WINDOW:]
        if not self.settings.ratings:
            return
        # Snapshots are frozen, but their ratings still move with the games they play: a rating
        # is our belief about a fixed skill, sharpened by every game (as in TrueSkill-rated
        # leagues such as SPIRAL's and UnstableBaselines').
        model = self._model
        live, opp = (model.rating(*self._ratings[name]) for name in (LIVE, opponent))
        ranks = {0: [1, 2], 1: [1, 1], 2: [2, 1]}[index]  # lower is better; a draw is a tie
        [[new_live], [new_opp]] = model.rate([[live], [opp]], ranks=ranks)
        self._ratings[LIVE] = [new_live.mu, new_live.sigma]
        self._ratings[opponent] = [new_opp.mu, new_opp.sigma]

    def reset_step(self) -> None:
        """Start a new step's counts (the cumulative tallies that PFSP reads stay)."""
        self.step_tallies = {}

    def ratings(self) -> dict[str, float]:
        """The logged rating, mu: the skill estimate itself. The conservative ordinal mu - 3 sigma
        (in `rating_details`) rises for every name as games shrink sigma, whatever they show,
        so a rising curve of it says nothing about play."""
        return {name: mu for name, (mu, sigma) in self._ratings.items()}

    def rating_details(self) -> dict[str, dict[str, float]]:
        """mu, sigma and the ordinal mu - 3 sigma of every rated name."""
        return {
            name: {"mu": mu, "sigma": sigma, "ordinal": mu - 3 * sigma}
            for name, (mu, sigma) in self._ratings.items()
        }

    def metrics(self) -> dict[str, float]:
        """Ratings, this step's win/draw/loss counts per opponent (the pool and any played) and the pool size."""
        out = {f"league/rating/{name}": value for name, value in self.ratings().items()}
        for name in [*self.pool, *(n for n in self.step_tallies if n not in self.pool)]:
            counts = self.step_tallies.get(name, [0, 0, 0])
            for key, count in zip(("win", "draw", "loss"), counts, strict=True):
                out[f"league/vs/{name}/{key}"] = float(count)
        out["league/pool_size"] = float(len(self.pool))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as JSON-able lists and dicts (the rng state included)."""
        version, internal, gauss = self._rng.getstate()
        return {
            "pool": list(self.pool),
            "initial": self.initial,
            "ratings": {name: list(r) for name, r in self._ratings.items()},
            "tallies": {name: list(t) for name, t in self.tallies.items()},
            "step_tallies": {name: list(t) for name, t in self.step_tallies.items()},
            "recent": {name: list(r) for name, r in self.recent.items()},
            "rng": [version, list(internal), gauss],
        }

    @classmethod
    def from_state(cls, settings: LeagueSettings, state: dict[str, Any]) -> League:
        """The league `state_dict` saved; a smaller pool_size takes effect at the next snapshot."""
        league = cls(settings)
        league.pool = list(state["pool"])
        league.initial = state["initial"]
        saved = {name: [float(mu), float(sigma)] for name, (mu, sigma) in state["ratings"].items()}
        league._ratings = saved if settings.ratings else {}
        if settings.ratings:  # ratings switched on at resume: names never rated start fresh
            for name in [LIVE, *league.pool]:
                league._ratings.setdefault(name, [league._model.mu, league._model.sigma])
        league.tallies = {name: list(t) for name, t in state["tallies"].items()}
        league.step_tallies = {name: list(t) for name, t in state["step_tallies"].items()}
        # A checkpoint from before the window was kept: PFSP's estimates start again from the prior.
        recent = state.get("recent", {})
        league.recent = {name: [float(x) for x in recent.get(name, [])] for name in league.pool}
        version, internal, gauss = state["rng"]
        league._rng.setstate((version, tuple(internal), gauss))
        return league


def win_rate_interval(wins: int, losses: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval on the win rate over decided games (draws excluded): honest at few
    games and near 0 or 1, where the normal approximation is not; (0.0, 1.0) with no games."""
    if wins < 0 or losses < 0:
        raise ValueError(f"league: wins and losses must be >= 0, not {wins} and {losses}")
    n = wins + losses
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def outcome_score(episode: Episode, team: str, teams: dict[str, str], shaping: Collection[str] = ()) -> float:
    """The game's outcome for `team`, from outcomes alone: 1 win, 0.5 draw, 0 loss. The
    winner where the episode names one; else the final ledger lines summed per team, leaving
    out per-turn lines and the `shaping` terms (a negotiation's format bonus): a cut-off game
    or a negotiation without a deal is equal, so a draw."""
    if episode.winner is not None:
        if episode.winner == "draw":
            return 0.5
        return 1.0 if teams.get(episode.winner, episode.winner) == team else 0.0
    totals: dict[str, float] = dict.fromkeys(set(teams.values()), 0.0)
    for line in episode.final:
        if line.term not in shaping:
            totals[teams[line.agent]] += line.value
    mine, best_other = totals[team], max(v for t, v in totals.items() if t != team)
    return 1.0 if mine > best_other else 0.5 if mine == best_other else 0.0
