"""Writes that survive a power cut, not only a crash: data and folder entries fsynced before
the rename that commits them."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` by `text` whole or not at all, across a power cut: written to
    `path.tmp`, fsynced, renamed, the folder fsynced (and its parent, when the folder is new).

    >>> write_atomic(run_dir / "strategy" / "step-000004.json", "{}")    # doctest: +SKIP
    """
    folder = path.parent
    new = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write_synced(tmp, text)
    os.replace(tmp, path)
    fsync_dir(folder)
    if new:
        fsync_dir(folder.parent)
