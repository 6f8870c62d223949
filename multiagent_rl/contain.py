"""Running code a user wrote (a reward function, a task generator) without letting it take a
run down: what it raised, where, and on which task, as one line; and a time limit for code
that hangs.

>>> with time_limit(5.0):                              # doctest: +SKIP
...     rewards = scenario.rewards(task, episode)
"""

from __future__ import annotations

import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager


class UserCodeError(RuntimeError):
    """User code failed; the message names what failed, the file and line, and the task."""


def describe_failure(exc: BaseException, what: str, task_key: str | None = None) -> str:
    """`what raised Type: message at file:line (task 'key')`, one line."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    task = f" (task {task_key!r})" if task_key is not None else ""
    message = " ".join(str(exc).split()) or "(no message)"
    return f"{what} raised {type(exc).__name__}: {message[:300]}{where}{task}"


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TimeoutError in the block after `seconds` (main thread only; elsewhere, or with
    None, no limit: signals reach only the main thread)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
