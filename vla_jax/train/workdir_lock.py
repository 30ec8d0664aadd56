"""One writer per workdir: the trainer holds ``<workdir>/trainer.lock`` while it runs.

The lock file is created atomically (``O_CREAT | O_EXCL``) and holds JSON naming its holder: pid, host,
start time and command line. A second trainer on the same workdir finds the file and stops with one
line naming the holder, before it writes anything. A lock left behind by a process that died without
releasing it (SIGKILL, OOM, node loss) is judged by pid and host: on the same host a holder whose pid
no longer runs (or now belongs to a process started after the lock was taken) is stale and the lock is
taken over with a one-line notice; a lock of another host is never judged stale, the error says which
file to delete.

Multi-process runs: process 0 takes the lock; the other processes learn its outcome through a
broadcast and stop with the same line when it failed (:func:`hold`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

LOCK_NAME = "trainer.lock"
READ_TRIES = 20  # a lock file is empty for the moment between its creation and its one write
READ_WAIT_S = 0.05
ACQUIRE_TRIES = 5  # create / find stale / take over rounds before giving up
START_SLACK_S = 1.0  # /proc start times are precise to a clock tick, boot time to a second
MESSAGE_BYTES = 2048  # the outcome process 0 broadcasts to the others


class WorkdirLockError(RuntimeError):
    """The workdir is locked by another live trainer, or the lock cannot be taken; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lock: the content of the lock file."""

    pid: int
    host: str
    started: float  # time.time() when the lock was taken
    command: str

    @classmethod
    def current(cls) -> Holder:
        """This process, now."""
        return cls(pid=os.getpid(), host=socket.gethostname(), started=time.time(),
                   command=shlex.join(sys.orig_argv))

    @classmethod
    def from_json(cls, text: str) -> Holder:
        """Parses a lock file's content (ValueError / KeyError / TypeError when it is not one)."""
        d = json.loads(text)
        return cls(pid=int(d["pid"]), host=str(d["host"]), started=float(d["started"]), command=str(d["command"]))

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "started_utc": self.since}) + "\n"

    @property
    def since(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))

    def describe(self) -> str:
        """``pid 123 on host h since 2025-01-02 03:04:05 UTC``."""
        return f"pid {self.pid} on {self.host} since {self.since}"


def process_start_time(pid: int) -> float | None:
    """Wall-clock start (seconds since the epoch) of process ``pid`` from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 (state) onwards
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in clock ticks
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def is_alive(holder: Holder) -> bool | None:
    """Whether the lock's holder still runs: True / False on this host, None (cannot tell) on another host."""
    if holder.host != socket.gethostname():
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        pass
    started = process_start_time(holder.pid)
    # the pid now names a process started after the lock was taken: the holder is gone, its pid reused
    return started is None or started <= holder.started + START_SLACK_S


class WorkdirLock:
    """``<workdir>/trainer.lock``: :meth:`acquire` creates it (or raises :class:`WorkdirLockError`),
    :meth:`release` removes it if it is still this holder's."""

    def __init__(self, workdir: str, *, notice: Callable[[str], None] | None = None):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_NAME)
        self.holder: Holder | None = None
        self._notice = notice or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def acquire(self) -> None:
        """Takes the lock for this process; takes over a stale one (same host, holder gone) with a notice."""
        try:
            os.makedirs(self.workdir, exist_ok=True)
            for _ in range(ACQUIRE_TRIES):
                holder = Holder.current()
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    self._take_over_if_stale()
                    continue
                try:
                    os.write(fd, holder.to_json().encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self.holder = holder
                return
        except OSError as e:
            raise WorkdirLockError(f"cannot take the workdir lock {self.path}: {e.strerror or e}") from None
        raise WorkdirLockError(f"cannot take the workdir lock {self.path}: other processes keep taking it over")

    def _take_over_if_stale(self) -> None:
        """Removes the lock file when its holder is gone; raises WorkdirLockError when it is live or unknown.

        Two processes finding the same stale lock serialize on ``flock`` of the stale file and re-check that
        the path still names that file, so only one removes it (the other then finds the new, live lock)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:  # released meanwhile: try to create it again
            return
        try:
            holder = self._read(fd)
            alive = is_alive(holder)
            if alive:
                raise WorkdirLockError(
                    f"workdir {self.workdir} is in use by another trainer ({holder.describe()}; "
                    f"lock file {self.path}); wait for it to finish or use another --workdir")
            if alive is None:
                raise WorkdirLockError(
                    f"workdir {self.workdir} is locked by a trainer on another host ({holder.describe()}); "
                    f"if it no longer runs there, delete {self.path}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process is taking it over right now
                time.sleep(READ_WAIT_S)
                return
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                return
            if same:
                os.unlink(self.path)
                self._notice(f"warning: workdir lock {self.path} was left by {holder.describe()}, which no "
                             "longer runs; taking it over")
        finally:
            os.close(fd)

    def _read(self, fd: int) -> Holder:
        """The holder in the open lock file (retries while its creator is still writing it)."""
        for _ in range(READ_TRIES):
            text = os.pread(fd, 1 << 16, 0).decode(errors="replace")
            try:
                return Holder.from_json(text)
            except (ValueError, KeyError, TypeError):
                time.sleep(READ_WAIT_S)
        raise WorkdirLockError(f"workdir {self.workdir} has an unreadable lock file {self.path}; "
                               "if no trainer uses this workdir, delete it")

    def release(self) -> None:
        """Removes the lock file if it still names this holder (never another process's lock)."""
        if self.holder is None:
            return
        try:
            with open(self.path) as f:
                mine = Holder.from_json(f.read()) == self.holder
            if mine:
                os.unlink(self.path)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # removed or replaced by hand: nothing of ours to remove
        self.holder = None


def _exit_on_sigterm(signum: int, _frame) -> None:
    """SIGTERM while the lock is held (outside the training loop's own handler): unwind, releasing it."""
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
    """Holds the workdir lock for the block: process 0 takes it, every process stops with its one-line
    :class:`WorkdirLockError` when that failed. Released on normal exit, exceptions and SIGTERM (which
    raises SystemExit while no other handler is installed)."""
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
    message = ""
    if lock is not None:
        try:
            lock.acquire()
        except WorkdirLockError as e:
            message = str(e)
    if jax.process_count() > 1:
        buf = np.zeros(MESSAGE_BYTES, np.uint8)
        encoded = message.encode()[:MESSAGE_BYTES]
        buf[:len(encoded)] = np.frombuffer(encoded, np.uint8)
        buf = np.asarray(multihost_utils.broadcast_one_to_all(buf))
        message = bytes(buf).rstrip(b"\0").decode(errors="ignore")
    if message:
        raise WorkdirLockError(message)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if lock is not None else None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
