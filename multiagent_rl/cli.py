"""The `multiagent-rl` command: scenarios, play, train, eval, analyse, serve.

Bad input gets one line saying what is wrong and exit code 2, never a traceback (with
`train --processes N`, once, by the launcher: not once per rank).
This is the one runtime module that wires trainers, scenarios and analysis together.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from pathlib import Path

from .config import ConfigError, ConfigLayers, load_config
from .console import print_before_after, print_final_transcripts, print_transcripts
from .errors import ScenarioError
from .graph import GraphError
from .launch import launch, say_error
from .models import ModelError
from .registry import list_scenarios, load_scenario
from .serve import add_serve_parser, cmd_serve
from .task_sources import TaskDataError

DEBUG_ENV = "MULTIAGENT_RL_DEBUG"
USER_ERRORS = (ScenarioError, TaskDataError, ConfigError, ModelError, GraphError, FileNotFoundError, NotADirectoryError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError  # a damaged weights file

    from trainers.run_folder import RunFolderError  # a folder in use by another process

    from .analysis import RunError  # a run folder that holds nothing to analyse
    from .contain import UserCodeError  # a reward or task function failed (file and line named)

    # OSError: read-only or full disks, a file where a folder should be; JSONDecodeError: a
    # damaged JSON record. Neither is a bug to show a traceback for (--debug shows one).
    return (*USER_ERRORS, RunError, RunFolderError, UserCodeError, SafetensorError, OSError, json.JSONDecodeError)


class UsageError(Exception):
    pass


def one_line(exc: BaseException) -> str:
    """The error as one line: OS errors name the path, nothing spans lines."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise UsageError(message)


SCENARIO_HELP = "a registered scenario (`multiagent-rl scenarios`) or path/file.py:NAME"
SET_HELP = "a config key (dotted for sections), e.g. --set lr=1e-3 --set grpo.scale_rewards=false"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="multiagent-rl", description="Train teams of LLM agents with reinforcement learning.",
        epilog=f"Errors are one line; --debug (or {DEBUG_ENV}=1) shows the whole traceback.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    sub.add_parser("scenarios", help="List the registered scenarios.")

    play = sub.add_parser("play", help="Play episodes with the model (no training) and print transcripts.")
    play.add_argument("scenario", help=SCENARIO_HELP)
    play.add_argument("--episodes", type=int, default=2, help="episodes to play (held-out tasks)")
    play.add_argument("--model", default=None, help="alias, HF id or folder (default: the embedded model)")
    play.add_argument("--out", default=None, help="folder for the episode log (default runs/play-SCENARIO)")
    play.add_argument("--seed", type=int, default=0, help="seed of the tasks and of sampling")
    play.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    play.add_argument("--show-prompts", action="store_true", help="print what each agent was given before its turn")
    play.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    play.add_argument("--run", default=None, help="play with this run's trained adapters (its newest good checkpoint)")
    play.add_argument("--checkpoint", default=None, help="with --run: a checkpoint folder name, e.g. step-20")

    train = sub.add_parser("train", help="Train the scenario's adapters; resumes an existing run folder.")
    train.add_argument("scenario", help=SCENARIO_HELP)
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--config", default=None, help="YAML config file")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    train.add_argument("--allow-changes", action="store_true", help="resume even with changed seed, model, LoRA, "
                       "group size or scenario (recorded in config-changes.jsonl)")
    train.add_argument("--processes", type=int, default=1, help="data-parallel processes on this machine "
                       "(runs `accelerate launch --num_processes N`; one per GPU)")

    ev = sub.add_parser("eval", help="Held-out team reward of the base model and the trained adapters, as JSON.")
    ev.add_argument("scenario", help=SCENARIO_HELP)
    ev.add_argument("--run", required=True, help="run folder with checkpoints")
    ev.add_argument("--episodes", type=int, default=None, help="held-out episodes (default: the run's eval_episodes)")
    ev.add_argument("--against", default=None, metavar="OPPONENT", help="the trained side against OPPONENT in every "
                    "seat: base, step-N (this run's), another run's folder, or a scripted player (random, perfect)")
    ev.add_argument("--sampled", action="store_true",
                    help="with --against: sample at the run's temperature (default greedy: two greedy players repeat)")
    ev.add_argument("--exploitability", action="store_true",
                    help="OpenSpiel games: the exploitability of the base and the trained policy (OpenSpiel's own)")
    ev.add_argument("--vote", type=int, default=None, metavar="N",
                    help="majority vote (self-consistency): N episodes per held-out task sampled at the run's "
                    "temperature, the most common team answer graded, with the generated tokens per task")

    an = sub.add_parser("analyse", help="Communication metrics and RUN/report.html.")
    an.add_argument("run", help="run folder")
    an.add_argument("--compare", action="append", default=[], help="another run folder to compare")
    an.add_argument("--out", default=None, help="report path (default RUN/report.html)")
    add_serve_parser(sub)  # serve.py: vLLM's server for runs that share one
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError("missing command; use one of: scenarios, play, train, eval, analyse, serve (see --help)")
        return COMMANDS[args.command](args)
    except UsageError as exc:
        return say_error(str(exc))
    except _user_errors() as exc:
        if debug:  # --debug (or MULTIAGENT_RL_DEBUG=1): the whole traceback
            raise
        return say_error(one_line(exc))
    except KeyboardInterrupt:
        print("multiagent-rl: interrupted", file=sys.stderr)
        return 130


def cmd_scenarios(args) -> int:
    for name in list_scenarios():
        try:
            description = load_scenario(name).description
        except Exception as exc:  # a broken third-party scenario must not hide the others
            description = f"(failed to load: {exc})"
        print(f"{name:20s} {description}")
    return 0


def _positive(value: int | None, name: str) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{name} must be at least 1, got {value}")


def cmd_play(args) -> int:
    import random

    from trainers.metrics import team_reward_stats

    from .models import EMBEDDED_ALIAS
    from .records import EpisodeLog
    from .rollout import Sampling
    from .team import BASE

    _positive(args.episodes, "--episodes")
    if args.checkpoint and not args.run:
        raise UsageError("--checkpoint goes with --run RUN")
    if args.run:  # the trained team: the run's model, adapters and scenario options
        team, adapters = _trained_team(args.scenario, Path(args.run), args.checkpoint)[0], None
    else:  # the untrained base model in every seat, at full precision
        options = dict(_scenario_overrides(args.overrides))
        config = load_config(None, [f"model={args.model or EMBEDDED_ALIAS}", "mixed_precision=no", "log_with=[]"])
        team, adapters = _team(config, load_scenario(args.scenario, **options)), BASE
    scenario = team.scenario
    out = Path(args.out or f"runs/play-{scenario.name}")
    log = EpisodeLog(out / "episodes" / "play.msgpack")
    rng = random.Random(args.seed)
    tasks = [scenario.sample_task(rng, "train") for _ in range(args.episodes)]
    batch = team.play(
        tasks, adapters=adapters, sampling=Sampling(greedy=args.greedy), seed=args.seed, split="play", log=log,
        progress=True, contain_failures=False,
    )
    print_transcripts(batch.episodes, prompts=args.show_prompts)
    mean = sum(ep.team_reward() for ep in batch.episodes) / len(batch.episodes)
    rates = {k: v for k, v in team_reward_stats(batch.episodes).items() if "rate" in k}
    shown = "".join(f", {k} {v:.3f}" for k, v in sorted(rates.items()))  # games: win, draw, loss, invalid moves
    print(f"mean team reward over {len(batch.episodes)} episodes: {mean:.3f}{shown}; log: {log.path}")
    return 0


def _team(config, scenario, run_dir: Path | None = None, checkpoint: Path | None = None, frozen=()):
    """A Team (no trainer) for `config`, on the device and at the precision a run would use."""
    from accelerate import PartialState

    from trainers.runtime import resolve_dtype

    from .team import Team

    device = PartialState(cpu=not _cuda()).device
    live = run_dir / "live_adapters" if run_dir is not None else None
    return Team.build(config, scenario, device=device, dtype=resolve_dtype(config.dtype, device),
                      mixed_precision=config.mixed_precision, live_dir=live, checkpoint=checkpoint, frozen=frozen)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _trained_team(scenario: str, run_dir: Path, checkpoint: str | None, before_load=None):
    """(Team of `run_dir` with the adapters of its newest good checkpoint or of `checkpoint`,
    that checkpoint's folder, its step). Damaged newer checkpoints are named and skipped.
    `before_load(scenario)`: checks of the command's own, before any model loads."""
    import yaml

    from trainers.checkpoint import resumable_checkpoint, verify_checkpoint

    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise UsageError(f"{run_dir} is not a run folder (no config.yaml)")
    config = load_config(None, [f"scenario={scenario}", "log_with=[]"], base=yaml.safe_load(saved.read_text()))
    if checkpoint:
        path = run_dir / "checkpoints" / checkpoint
        problem = verify_checkpoint(path) if path.is_dir() else "no such checkpoint"
        if problem:
            raise UsageError(f"{path}: {problem}")
    else:
        found, damaged = resumable_checkpoint(run_dir)
        for bad, why in damaged:
            print(f"multiagent-rl: checkpoint {bad.name} is damaged ({why}); skipped", file=sys.stderr)
        if found is None:
            raise UsageError(f"{run_dir} has no complete checkpoint yet")
        path = found[1]
    from trainers.league_play import LeaguePlay

    step = int(json.loads((path / "trainer_state.json").read_text())["step"])
    loaded = load_scenario(config.scenario, **config.scenario_options)
    if before_load is not None:
        before_load(loaded)
    team = _team(config, loaded, run_dir, path, frozen=LeaguePlay.saved_pool(path))
    print(f"adapters of {path}", file=sys.stderr)
    return team, path, step


def _scenario_overrides(overrides: list[str]):
    from .config import parse_override

    for item in overrides:
        key, value = parse_override(item)
        if not key.startswith("scenario_options."):
            raise UsageError(f"play accepts only --set scenario_options.NAME=VALUE, got {key!r}")
        yield key.split(".", 1)[1], value


def cmd_train(args) -> int:
    _positive(args.processes, "--processes")
    check_run_folder(args.out)
    config, sources = _train_config(args)
    if args.processes > 1 and "WORLD_SIZE" not in os.environ:
        if config.rollout.server:  # an unreachable or wrong server is said once, before any rank starts
            from .backends.server import check_server
            from .models import resolve_model_path

            check_server(config.rollout.server, resolve_model_path(config.model))
        return launch(args.processes, sys.argv[1:], config.mixed_precision)
    from trainers.loop import Run

    # Loaded again by name in Run: a rollout worker process (rollout.max_staleness) builds it the same way.
    run = Run(config, Path(args.out), allow_changes=args.allow_changes, config_sources=sources)
    summary = run.train()
    if run.ranks.is_main:
        print_final_transcripts(run)
        print_before_after(summary, run)
    from trainers.distributed import close_process_group

    close_process_group()
    return 0


def _train_config(args):
    """(The run's resolved config, where each setting came from): the command line over the
    run's own config.yaml when resuming, over the scenario's recommended settings."""
    import yaml

    run_dir = Path(args.out)
    base = {}
    saved = run_dir / "config.yaml"
    if saved.is_file():  # resuming: start from the run's own resolved config
        base = yaml.safe_load(saved.read_text()) or {}
    layers = ConfigLayers.read(args.config, [f"scenario={args.scenario}", *args.overrides], base=base)
    name, options = layers.scenario()
    if base and base.get("scenario") != name:
        raise UsageError(f"{run_dir} is a run of {base.get('scenario')!r}, not {name!r}")
    scenario = load_scenario(name, **options)
    sources: dict[str, str] = {}
    # The scenario's recommended settings sit under everything the user gave (and, on resume,
    # under the run's own config.yaml, which already holds every setting).
    config = layers.resolve(scenario.train_defaults, sources)
    sources["scenario"] = "the command line"
    return config, sources


def check_run_folder(out: str) -> None:
    """`--out` must be a folder this process can write, checked before any model loads."""
    if not out.strip():
        raise UsageError("--out is empty; give a run folder, e.g. --out runs/debate-1")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-check-{os.getpid()}"  # per process: ranks check side by side
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out!r} is not writable: {exc.strerror or exc}") from exc


def cmd_eval(args) -> int:
    from trainers.head_to_head import check_eval_options
    from trainers.metrics import team_reward_stats
    from trainers.run_folder import RunLock

    from .records import EpisodeLog
    from .team import BASE

    _positive(args.episodes, "--episodes")
    _positive(args.vote, "--vote")
    if args.sampled and not args.against:
        raise UsageError("--sampled goes with --against")
    if args.vote is not None and (args.against or args.exploitability):
        raise UsageError("--vote grades the run's own team; it does not combine with --against or --exploitability")
    run_dir = Path(args.run)
    check = functools.partial(check_eval_options, against=args.against, exploitability=args.exploitability, run_dir=run_dir)
    team, path, step = _trained_team(args.scenario, run_dir, None, before_load=check)
    out = run_dir / "evals" / path.name  # never into the run's training records
    tasks = team.scenario.heldout_tasks(args.episodes or team.config.eval_episodes, seed=team.config.seed)
    head = {"scenario": team.scenario.name, "checkpoint": path.name}
    if args.exploitability:
        from .games.exploitability import base_and_trained

        head["exploitability"] = base_and_trained(team)
    if args.against:
        from trainers.head_to_head import against_report

        report = against_report(team, args.against, run_dir, tasks, sampled=args.sampled, log_dir=out, step=step)
        print(json.dumps({**head, **report, "log": str(out)}, indent=2))
        return 0
    if args.vote is not None:
        from trainers.metrics import vote_stats

        from .rollout import Sampling

        sampling = Sampling(temperature=team.config.temperature, max_new_tokens=team.config.max_new_tokens)
        votes = {}
        with RunLock(run_dir, "eval"):
            for tag, adapters in (("base", BASE), ("trained", None)):
                log = EpisodeLog(out / f"vote-{args.vote}-{tag}-step-{step:06d}.msgpack")
                batch = team.play(tasks, adapters=adapters, sampling=sampling, group_size=args.vote,
                                  seed=team.config.seed, split="eval", step=step, log=log)
                votes[tag] = vote_stats(batch.episodes)
        print(json.dumps({**head, "vote": args.vote, "log": str(out), **votes}, indent=2))
        return 0
    stats = {}
    with RunLock(run_dir, "eval"):
        for tag, adapters in (("base", BASE), ("trained", None)):
            log = EpisodeLog(out / f"{tag}-step-{step:06d}.msgpack")
            stats[tag] = team_reward_stats(team.evaluate(tasks, adapters=adapters, step=step, log=log, progress=True).episodes)
    base, trained = stats["base"], stats["trained"]
    print(json.dumps({
        **head, "episodes": base["n"], "log": str(out),
        "base": base, "trained": trained, "change": trained["mean"] - base["mean"],
    }, indent=2))
    return 0


def cmd_analyse(args) -> int:
    from trainers.run_folder import RunLock

    from .analysis import run_analysis

    run = Path(args.run)
    if not (run / "episodes").is_dir():
        raise UsageError(f"{run} has no episodes/ folder; give a run folder written by train or play")
    for other in args.compare:
        if not (Path(other) / "episodes").is_dir():
            raise UsageError(f"{other} has no episodes/ folder")
    out = Path(args.out) if args.out else None
    # Writing into the run folder waits for no one: a trainer or evaluator holding it refuses the report.
    inside = out is None or out.resolve().parent == run.resolve()
    with RunLock(run, "analyse") if inside else contextlib.nullcontext():
        text, report = run_analysis(run, compare=args.compare or None, out=out)
    print(text)
    print(f"report: {report}")
    return 0


COMMANDS = {"scenarios": cmd_scenarios, "play": cmd_play, "train": cmd_train, "eval": cmd_eval, "analyse": cmd_analyse,
            "serve": cmd_serve}

if __name__ == "__main__":
    sys.exit(main())
