"""A trained team against one opponent, in every seating: what `eval --against` measures.

The opponent is a snapshot step of the same run (`step-20`: that checkpoint's adapters),
`base` (the untrained model), another run's folder (its newest checkpoint), or a scripted
player the scenario ships by name (`random`, `perfect`). Every held-out task is played once
with the trained side in each seat, so a first-mover advantage cancels. Results come from
outcomes alone (the winner, else the final ledger lines): shaping pays for form, not play.

>>> opponent = resolve_opponent(team, "step-20", Path("runs/ttt"))   # doctest: +SKIP
>>> play_against(team, opponent, tasks, sampling=Sampling(greedy=True), log_dir=Path("runs/ttt/evals"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiagent_rl.adapters import adapter_map, load_adapter_as
from multiagent_rl.config import ConfigError
from multiagent_rl.league import outcome_score, win_rate_interval
from multiagent_rl.records import EpisodeLog, Task
from multiagent_rl.rollout import Sampling
from multiagent_rl.team import SEATED_LEAGUES, Team

from .checkpoint import resumable_checkpoint, verify_checkpoint

OPPONENT_PREFIX = "opponent-"  # the frozen adapters an opponent's checkpoint loads into


@dataclass
class Opponent:
    """Who sits across: per agent an adapter (None: the base model), or scripted policies."""

    label: str
    adapters: dict[str, str | None] = field(default_factory=dict)
    scripted: dict[str, Callable[[Any, str], str]] = field(default_factory=dict)


def locate_opponent(spec: str, scenario, run_dir: Path) -> tuple[str, Path | None]:
    """What `spec` names, checked before any model loads: ("base" | "scripted" | "snapshot" |
    "run", the checkpoint folder where there is one). One that does not exist is a
    ConfigError naming what does."""
    if spec == "base":
        return "base", None
    if spec in scenario.reference_players:
        return "scripted", None
    if spec.startswith("step-"):
        checkpoint = run_dir / "checkpoints" / spec
        problem = verify_checkpoint(checkpoint) if checkpoint.is_dir() else "no such checkpoint"
        if problem:
            saved = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))
            raise ConfigError(f"--against {spec}: {checkpoint}: {problem}; checkpoints: {', '.join(saved) or 'none'}")
        return "snapshot", checkpoint
    if (Path(spec) / "config.yaml").is_file():
        found, _ = resumable_checkpoint(Path(spec))
        if found is None:
            raise ConfigError(f"--against {spec}: that run has no complete checkpoint")
        return "run", found[1]
    names = ", ".join(["base", "step-N (a checkpoint of this run)", "a run folder", *scenario.reference_players])
    raise ConfigError(f"--against {spec!r}: no such opponent; use one of {names}")


def check_eval_options(scenario, *, against: str | None, exploitability: bool, run_dir: Path) -> None:
    """`eval`'s options against the scenario, before any model loads: one line each."""
    if exploitability and scenario.openspiel_game is None:
        raise ConfigError(f"--exploitability: {scenario.name!r} is no OpenSpiel game")
    if against:
        locate_opponent(against, scenario, run_dir)


def resolve_opponent(team: Team, spec: str, run_dir: Path) -> Opponent:
    """The opponent `spec` names (`locate_opponent`), its adapters loaded into `team` as
    frozen ones."""
    kind, checkpoint = locate_opponent(spec, team.scenario, run_dir)
    agents = [r.name for r in team.scenario.roles]
    if kind == "base":
        return Opponent("base", adapters=dict.fromkeys(agents))
    if kind == "scripted":
        return Opponent(spec, scripted=dict.fromkeys(agents, team.scenario.reference_players[spec]))
    if kind == "snapshot":
        return _checkpoint_opponent(team, spec, checkpoint, team.config.league.mode, team.config.adapters)
    import yaml

    config = yaml.safe_load((Path(spec) / "config.yaml").read_text()) or {}
    mode = (config.get("league") or {}).get("mode", "off")
    return _checkpoint_opponent(team, f"{Path(spec).name}/{checkpoint.name}", checkpoint, mode,
                                config.get("adapters", "per_role"))


def _checkpoint_opponent(team: Team, label: str, checkpoint: Path, league_mode: str, adapters_mode: str) -> Opponent:
    """A checkpoint's adapters as frozen `opponent-<name>` adapters of `team`, seated as that
    run seated them (one shared adapter in a seated league, else its adapters mode)."""
    seating = adapter_map(team.scenario, "shared" if league_mode in SEATED_LEAGUES else adapters_mode)
    loaded = {}
    for name in dict.fromkeys(seating.values()):
        weights = checkpoint / "adapters" / name / "adapter_model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"--against {label}: {checkpoint} has no adapter {name!r}")
        frozen = f"{OPPONENT_PREFIX}{label.replace('/', '-')}-{name}"
        if frozen not in team.frozen:
            team.add_frozen([frozen])
            load_adapter_as(team.model, weights.parent, frozen)
            team.serve_frozen([frozen])
        loaded[name] = frozen
    return Opponent(label, adapters={agent: loaded[name] for agent, name in seating.items()})


def play_against(team: Team, opponent: Opponent, tasks: Sequence[Task], *, sampling: Sampling,
                 log_dir: Path | None = None, step: int | None = None, untrained: bool = False) -> dict[str, Any]:
    """Every task played once with the trained side in each seat; wins, draws, losses, the
    win rate over decided games with its 95% (Wilson) interval, and the trained side's mean
    final reward per agent (a game's result: chips, +-1; shaping terms left out) with its 95%
    interval, in all and per seat. `untrained`: the base model plays the team's seats (the
    figures before training)."""
    teams = team.scenario.teams
    shaping = team.config.shaping.terms
    # The seats the team was trained to play: a run against a scripted player has no
    # adapter for that player's seat.
    sides = [side for side in dict.fromkeys(teams.values())
             if all(a in team.agent_adapters for a, s in teams.items() if s == side)]
    rows: list[tuple[str, float, float]] = []  # (trained side, outcome score, mean final reward per agent)
    for side in sides:
        mine = [a for a, s in teams.items() if s == side]
        theirs = [a for a in teams if a not in mine]
        scenario = team.scenario.with_scripted({**dict.fromkeys(mine), **{a: opponent.scripted.get(a) for a in theirs}})
        seating = {a: None if untrained else team.agent_adapters[a] for a in mine}
        if not opponent.scripted:
            seating.update({a: opponent.adapters[a] for a in theirs})
        tag = f"{'base' if untrained else 'trained'}-against-{opponent.label.replace('/', '-')}-{side}"
        log = EpisodeLog(log_dir / f"{tag}.msgpack") if log_dir else None
        batch = team.play(tasks, adapters=seating, scenario=scenario, sampling=sampling, seed=team.config.seed,
                          split="eval", step=step, log=log, progress=True)
        for ep in batch.episodes:
            if ep.failure is None:
                final = sum(line.value for line in ep.final if line.agent in mine and line.term not in shaping) / len(mine)
                rows.append((side, outcome_score(ep, side, teams, shaping), final))
    summary = _summary(rows)
    summary["by_seat"] = {side: _summary([r for r in rows if r[0] == side]) for side in sides}
    return summary


def against_report(team: Team, spec: str, run_dir: Path, tasks: Sequence[Task], *, sampled: bool,
                   log_dir: Path, step: int) -> dict[str, Any]:
    """`eval --against SPEC`: the opponent resolved, every seat played by the base model and
    by the trained adapters (before and after; greedy, or sampled at the run's temperature),
    the run folder locked for the evaluation's writes."""
    from .run_folder import RunLock

    cfg = team.config
    opponent = resolve_opponent(team, spec, run_dir)
    if sampled:
        sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    else:
        sampling = Sampling(greedy=True, max_new_tokens=cfg.max_new_tokens)
    with RunLock(run_dir, "eval"):
        figures = {tag: play_against(team, opponent, tasks, sampling=sampling, log_dir=log_dir, step=step,
                                     untrained=tag == "base") for tag in ("base", "trained")}
    return {"against": opponent.label, "sampling": "sampled" if sampled else "greedy", **figures}


def _summary(rows: Sequence[tuple[str, float, float]]) -> dict[str, Any]:
    wins = sum(score == 1.0 for _, score, _ in rows)
    draws = sum(score == 0.5 for _, score, _ in rows)
    losses = len(rows) - wins - draws
    returns = [value for _, _, value in rows]
    mean = statistics.fmean(returns) if returns else float("nan")
    half = 1.96 * statistics.stdev(returns) / math.sqrt(len(returns)) if len(returns) > 1 else float("nan")
    decided = wins + losses
    return {
        "games": len(rows), "wins": wins, "draws": draws, "losses": losses,
        "win_rate_decided": wins / decided if decided else float("nan"),
        "win_rate_decided_ci95": list(win_rate_interval(wins, losses)),
        "mean_return": mean, "mean_return_ci95": [mean - half, mean + half],
    }
