"""One process per embedded-Redis data directory: an exclusive lock file naming the holder's pid."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "batchgate.lock"


class DataDirInUse(RuntimeError):
    """Another live process holds the data directory (the message names the directory and its pid)."""


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[Path]:
    """Hold `data_dir`/batchgate.lock for as long as the context lasts; yields the lock file's path.

    The lock is an flock, so it ends with the process however the process ends (a stale file left by a killed
    process does not block). Raises DataDirInUse when another process holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise DataDirInUse(
                f"the data directory {data_dir.resolve()} is in use by another batchgate process (pid {holder}); "
                "stop it first, or give this one its own BATCHGATE_DATA_DIR (or a shared Redis: BATCHGATE_REDIS_URL)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock
