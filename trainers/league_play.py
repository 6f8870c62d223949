"""A league run's part of the loop: who sits where in each task group, the frozen snapshots
the learner meets, the matches that rate it, and what a game's outcome was for the learner.

The bookkeeping (pool, opponent sampling, ratings, tallies) is `multiagent_rl.league`; this
module turns it into seatings, frozen adapters and games. Modes (`league.mode`):
- mirror: one shared adapter plays every seat and learns from all of them (SPIRAL);
- pool: in each task group the learner holds one team's seats, a sampled snapshot the rest;
  the snapshot's turns are never trained;
- both: every team learns with its own adapters, as without a league (no snapshots).
Every `snapshot_every` steps the live policy plays `match_games` held-out games against each
pool member (both seatings), which rates it, and is then frozen into the pool. Seats
alternate by task group and step, so the learner plays every seat equally often.

With `rollout.max_staleness` k >= 1 a step's plan is made k updates before its games are
recorded (`rollout_ahead.plan_step`): a snapshot may leave the pool in between.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from multiagent_rl.config import ConfigError
from multiagent_rl.league import League, outcome_score
from multiagent_rl.records import Episode, Task
from multiagent_rl.rollout import RolloutBatch, Sampling
from multiagent_rl.seeds import step_seed
from multiagent_rl.team import SEATED_LEAGUES, Team, frozen_name

from .distributed import Ranks

INITIAL = "step-0"
MATCH_SEED_OFFSET = 7919  # match games draw their own held-out tasks, apart from evaluation's


def check_league(mode: str, scenario) -> None:
    """A league needs two sides; the modes that seat one learner need every agent model-played."""
    if mode == "off":
        return
    if len(set(scenario.teams.values())) < 2:
        raise ConfigError(f"league.mode={mode} needs a scenario with two teams or more; {scenario.name!r} has one")
    if mode == "both":
        return
    scripted = [r.name for r in scenario.roles if r.scripted]
    if scripted:
        raise ConfigError(
            f"league.mode={mode}: {scenario.name!r} has scripted players ({', '.join(scripted)}); "
            "a league plays the model in every seat (e.g. scenario_options.opponent=model)"
        )


def learner_stats(episodes: Sequence[Episode], plan: Sequence[tuple[str, str]], team_of: dict[str, str],
                  ranks: Ranks | None = None, shaping: Sequence[str] = ()) -> dict[str, float]:
    """The learner's held-out figures from outcomes alone (no per-turn lines, no `shaping`
    terms): its side's mean final reward per agent (`mean`, `se`, `n`), win / draw / loss
    rates over all games, and the decided share."""
    rows = []
    for ep in episodes:
        if ep.failure is not None:
            continue
        side = plan[ep.group][0]
        mine = [line.value for line in ep.final if team_of[line.agent] == side and line.term not in shaping]
        agents = sum(1 for side_of in team_of.values() if side_of == side)
        rows.append((sum(mine) / agents, outcome_score(ep, side, team_of, shaping)))
    rows = ranks.gather(rows) if ranks is not None else rows
    if not rows:
        return {"mean": float("nan"), "se": float("nan"), "n": 0}
    values = [v for v, _ in rows]
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    wins, draws = sum(s == 1.0 for _, s in rows), sum(s == 0.5 for _, s in rows)
    return {"mean": statistics.fmean(values), "se": se, "n": len(rows), "win_rate": wins / len(rows),
            "draw_rate": draws / len(rows), "loss_rate": (len(rows) - wins - draws) / len(rows),
            "decided": (len(rows) - draws) / len(rows)}


class LeaguePlay:
    """The league of one run: seatings per step, matches and snapshots, checkpointed state."""

    def __init__(self, team: Team, ranks: Ranks, seed: int):
        self.team = team
        self.ranks = ranks
        self.settings = team.config.league
        self.league = League(self.settings, seed=seed)
        self.sides = list(dict.fromkeys(r.team for r in team.scenario.roles))
        self.team_of = {r.name: r.team for r in team.scenario.roles}
        rollout = team.config.rollout
        # Through a shared server, a rollout worker k updates behind may still play a step planned
        # with a snapshot the pool has dropped: the server keeps serving it k more updates.
        self.serve_dropped_for = rollout.max_staleness if rollout.server else 0
        self.unserve_after: list[tuple[int, str]] = []  # (update, frozen adapter): unserved once that update is done

    @property
    def on(self) -> bool:
        return self.settings.mode in SEATED_LEAGUES

    # ----- seats --------------------------------------------------------------------
    def seating(self, learner_side: str, opponent: str | None) -> dict[str, str | None]:
        """agent -> adapter: the learner's adapter on `learner_side`'s seats, `opponent`
        ("base", a snapshot name, or None: the learner itself) on the others."""
        other = {None: self.team.learner, "base": None}.get(opponent, frozen_name(opponent or ""))
        return {a: self.team.learner if side == learner_side else other for a, side in self.team_of.items()}

    def plan(self, step: int, groups: int) -> tuple[list[dict[str, str | None]] | None, list[tuple[str, str]]]:
        """This step's seating of each task group and, per group, (learner side, opponent);
        mirror: one seating, the learner everywhere (None)."""
        if self.settings.mode == "mirror":
            return None, []
        opponents = self.league.sample_opponents(groups)
        sides = [self.sides[(g + step) % len(self.sides)] for g in range(groups)]
        plan = list(zip(sides, opponents, strict=True))
        return self.seatings(plan), plan

    def seatings(self, plan: Sequence[tuple[str, str]]) -> list[dict[str, str | None]]:
        """One adapter map per game of `plan`: (learner side, opponent) each."""
        return [self.seating(side, opponent) for side, opponent in plan]

    def against(self, games: int, opponent: str) -> list[tuple[str, str]]:
        """(learner side, opponent) for `games` games against one opponent, seats alternating."""
        return [(self.sides[i % len(self.sides)], opponent) for i in range(games)]

    def record(self, batch: RolloutBatch, plan: Sequence[tuple[str, str]]) -> None:
        """Each played game's outcome for the learner, into the league (every rank's, in
        group order, so every rank's league stays the same). A game against a snapshot that
        left the pool after the plan was made (a step played ahead) rates nothing: the
        snapshot's rating and win estimate left with it."""
        shaping = self.team.config.shaping.terms
        mine = [(ep.group, outcome_score(ep, plan[ep.group][0], self.team_of, shaping))
                for ep in batch.episodes if ep.failure is None]
        for group, score in sorted(self.ranks.gather(mine), key=lambda item: item[0]):
            if plan[group][1] in self.league.pool:
                self.league.record(plan[group][1], score)

    # ----- snapshots and matches -------------------------------------------------------
    def start(self, name: str = INITIAL) -> None:
        """A fresh run's pool: the step-0 adapters (equal to the base model: LoRA starts at zero)."""
        self.snapshot(name)

    def snapshot(self, name: str, step: int = 0) -> None:
        """Freeze the live policy into the pool as `name` after update `step`, dropping what
        the pool no longer holds."""
        for dropped in self.league.add_snapshot(name):
            later = self.serve_dropped_for
            self.team.drop(frozen_name(dropped), unserve=not later)
            if later:  # the last step planned with it is step + k: its batch is taken before update step + k ends
                self.unserve_after.append((step + later, frozen_name(dropped)))
        if name in self.league.pool:
            self.team.freeze(frozen_name(name))

    def after_update(self, step: int, sampling: Sampling, log) -> int:
        """Every `snapshot_every` steps: a match against the pool, then a snapshot. Returns the
        tokens the match generated, every rank's (training compute: `token_budget` counts them).
        First, dropped snapshots that no step still to be taken can meet stop being served."""
        for name in [name for due, name in self.unserve_after if due <= step]:
            self.team.unserve(name)
        self.unserve_after = [(due, name) for due, name in self.unserve_after if due > step]
        if step % self.settings.snapshot_every:
            return 0
        tokens = self.match(step, sampling, log)
        self.snapshot(f"step-{step}", step)
        return tokens

    def match(self, step: int, sampling: Sampling, log) -> int:
        """`match_games` held-out games against each pool member, seats alternating; recorded.
        Returns the tokens generated, every rank's."""
        per = self.settings.match_games
        if not per:
            return 0
        plan = [game for opponent in self.league.pool for game in self.against(per, opponent)]
        tasks = self.team.scenario.heldout_tasks(len(plan), seed=step_seed(self.team.config.seed, step, MATCH_SEED_OFFSET))
        seatings = self.seatings(plan)
        shard: list[Task] = self.ranks.shard(tasks)
        start = self.ranks.shard_start(len(tasks))
        batch = self.team.play(shard, adapters=seatings[start:start + len(shard)], first_group=start, group_size=1,
                               sampling=sampling, seed=step_seed(self.team.config.seed, step, MATCH_SEED_OFFSET + 1),
                               split="play", step=step, log=log)  # not held-out evaluation: kept apart in the report
        self.record(batch, plan)
        (tokens,) = self.ranks.sum([batch.generated_tokens])
        return int(tokens)

    def metrics(self) -> dict[str, float]:
        """This step's league figures so far (reading them changes nothing)."""
        return self.league.metrics()

    def reset_step(self) -> None:
        """A new step: its win/draw/loss tallies start from zero (the loop's, once per step)."""
        self.league.reset_step()

    # ----- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.league.state_dict()

    @staticmethod
    def saved_pool(checkpoint: Path) -> list[str]:
        """The frozen adapters a checkpoint's league holds (created before its weights load)."""
        state = json.loads((checkpoint / "trainer_state.json").read_text()).get("league")
        return [frozen_name(name) for name in state["pool"]] if state else []

    def load(self, saved: dict[str, Any], checkpoint: Path, step: int) -> str | None:
        """Restore the league from a checkpoint's loaded state (`saved`: its trainer_state.json;
        its frozen adapters already loaded); one that holds none (trained without a league)
        starts one from the loaded adapters: say so."""
        state = saved.get("league")
        if state is None:
            self.start(f"step-{step}")
            return f"{checkpoint.name} holds no league: it starts here, its first snapshot the adapters of step {step}"
        self.league = League.from_state(self.settings, state)
        return None
