"""`train --processes N`: the command run again under accelerate's launcher, N local ranks, and
their errors said once.

A launched rank leaves its one-line error in a folder the launcher names (`RANK_ERRORS_ENV`)
instead of printing it; the launcher prints the first failed rank's line once, in place of its
own account of the failure. A crash that left no line keeps its output and that account.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from .serve import free_port

RANK_ERRORS_ENV = "MULTIAGENT_RL_RANK_ERRORS"  # set by --processes: where each rank leaves its one-line error


def say_error(line: str) -> int:
    """Print the one-line error; exit code 2. A rank that `--processes` launched leaves it for
    the launcher instead, which says the first failed rank's once."""
    folder = os.environ.get(RANK_ERRORS_ENV)
    if folder:
        try:
            (Path(folder) / f"rank-{int(os.environ.get('RANK', '0'))}").write_text(line)
            return 2
        except OSError:
            pass
    print(f"multiagent-rl: error: {line}", file=sys.stderr)
    return 2


def launch(processes: int, argv: list[str], mixed_precision: str) -> int:
    """Re-run this command under `accelerate launch` with N local processes: NCCL, one GPU
    each, where there are enough GPUs; else gloo on the CPU, the cores split between them.
    A rank's one-line error is said once, here (the first failed rank's), in place of the
    launcher's account of the failure; a crash keeps its output and that account (which rank,
    its exit code), and the launcher exits with the rank's code."""
    import tempfile

    import torch
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    options = ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1", "--dynamo_backend", "no",
              "--mixed_precision", mixed_precision,
              "--main_process_port", os.environ.get("MASTER_PORT") or str(free_port())]
    if torch.cuda.device_count() < processes:
        options += ["--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // processes))]
    args = launch_command_parser().parse_args([*options, "-m", "multiagent_rl.cli", *argv_without_processes(argv)])
    with tempfile.TemporaryDirectory(prefix="multiagent-rl-") as errors, \
            _held(logging.getLogger("torch.distributed.elastic")) as agent_log:  # the launcher's own account
        os.environ[RANK_ERRORS_ENV] = errors  # the ranks inherit it
        try:
            launch_command(args)
            return 0
        except ChildFailedError as exc:
            failed = exc
            rank, first = failed.get_first_failure()
            said = Path(errors) / f"rank-{rank}"
            # The first rank to fail said a one-line error (its exit code may still be a signal:
            # gloo's threads can abort an interpreter that exits with the process group open).
            if said.is_file():
                agent_log.clear()
                print(f"multiagent-rl: error: {said.read_text()}", file=sys.stderr)
                return 2
        finally:
            os.environ.pop(RANK_ERRORS_ENV, None)
    print(failed, file=sys.stderr)  # after the agent's own records
    return first.exitcode if first.exitcode > 0 else 1


@contextlib.contextmanager
def _held(logger: logging.Logger):
    """Hold `logger`'s records (its children's too) until the context ends, then hand them on;
    the list it yields can be cleared to drop them."""
    records: list[logging.LogRecord] = []
    holder = logging.Handler()
    holder.emit = records.append
    logger.addHandler(holder)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield records
    finally:
        logger.removeHandler(holder)
        logger.propagate = propagate
        for record in records:
            logger.handle(record)


def argv_without_processes(argv: list[str]) -> list[str]:
    """The command line minus `--processes N` (the launched workers must not launch again)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--processes":
            skip = True
        elif not item.startswith("--processes="):
            out.append(item)
    return out
