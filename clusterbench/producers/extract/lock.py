"""The work directory's lock: one extraction at a time per work directory (and so per store).

`WorkLock.acquire(file)` takes an exclusive `fcntl.flock` on `<work_dir>/lock` and writes the
holder (host, pid, start time) into it; a second extraction finds the lock taken and fails at
once in one line naming that holder. The kernel releases a flock when its process dies, so a
run killed with `kill -9` leaves only the file: the next run takes it over and says whose it
was. Where the file system has no flock, the file's content decides: a holder on this host
whose process is gone is taken over; any other holder is refused (delete the file by hand if
no extraction runs there). Released by unlinking the file while still holding it, then closing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from clusterbench.core.errors import ExtractionError

_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def holder_info() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def describe(holder: dict | None) -> str:
    if not holder:
        return "holder not yet recorded"
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"


def alive_here(holder: dict) -> bool | None:
    """Whether the holder's process still runs: None when it ran on another host."""
    if holder.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True  # someone else's process, or a record we cannot read: assume it runs
    return True


def _read(fd: int) -> dict | None:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode()) if data.strip() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


class WorkLock:
    """An exclusive lock on one file; `previous` is the holder recorded in it before, if any
    (a run that ended without releasing it)."""

    def __init__(self, file: Path, fd: int, previous: dict | None) -> None:
        self.file, self.fd, self.previous = file, fd, previous

    @classmethod
    def acquire(cls, file: Path, what: str) -> WorkLock:
        """Take the lock or raise ExtractionError naming its holder; `what` names the
        directory in the message (e.g. `work_dir=/data/store.partial`)."""
        file = Path(file)
        for _ in range(10):
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise ExtractionError(
                    f"{what} is in use by another extraction ({describe(holder)}; lock file "
                    f"{file}); wait for it to finish, or extract into another store"
                ) from None
            except OSError as exc:
                if exc.errno not in _NO_FLOCK:
                    os.close(fd)
                    raise
                cls._check_without_flock(fd, file, what)
            try:
                same = os.stat(file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released (unlinked) between our open and our flock: open it again
                os.close(fd)
                continue
            previous = _read(fd)
            record = json.dumps({**holder_info(), "argv": sys.argv[1:]}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
            os.fsync(fd)
            return cls(file, fd, previous)
        raise ExtractionError(f"{what}: could not take the lock {file}; try again")

    @staticmethod
    def _check_without_flock(fd: int, file: Path, what: str) -> None:
        holder = _read(fd)
        if holder is None or alive_here(holder) is False:
            return
        os.close(fd)
        raise ExtractionError(
            f"{what} is in use by another extraction ({describe(holder)}; lock file {file}, "
            "this file system has no flock); wait for it to finish, or delete the lock file if "
            "no extraction runs there"
        )

    def release(self) -> None:
        """Unlink the file while still holding it, then let it go (idempotent)."""
        if self.fd < 0:
            return
        try:
            if os.stat(self.file).st_ino == os.fstat(self.fd).st_ino:
                self.file.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = -1
