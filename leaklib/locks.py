"""One process at a time per run folder and per analysis cache.

A :class:`Lock` is an operating-system file lock (``filelock.FileLock``: ``flock``, released by
the kernel when its process dies, so a killed holder never blocks anyone) plus an *owner record*
beside it, a small JSON file naming the holder: host, pid, job id, since when, and a heartbeat
refreshed every :data:`HEARTBEAT_S` seconds while the lock is held. The record is what the second
process reports ("... is being trained by node12 pid 4711 (job 88123_4) since ..."), what
``leaklib status`` reads to say where a run is running, and a guard for shared filesystems on
which ``flock`` does not reach across hosts:

* lock taken, no record: the normal case.
* lock taken, record of a process on this host that is gone (or of an earlier incarnation of
  this same batch job, requeued): a stale lock; one log line, then taken over.
* lock taken, record of another host whose heartbeat is fresh: the filesystem's locks may not be
  shared between hosts, so it counts as held: report and skip (or wait). A record of another host
  silent for :data:`STALE_AFTER_S` seconds is stale (the node died or the job was killed).
* lock not taken: held; the record says by whom.

On filesystems without ``flock`` filelock falls back to its own lock files (filelock >= 4).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["Lock", "LockHeld", "Holder", "read_holder", "job_id", "HEARTBEAT_S", "STALE_AFTER_S"]

#: Seconds between two refreshes of a held lock's heartbeat.
HEARTBEAT_S = 30.0
#: A record of another host whose heartbeat is older than this is a dead holder's.
STALE_AFTER_S = 600.0


def job_id() -> str | None:
    """The batch job this process belongs to (Slurm array task or job, or a submitit local job), if any."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) holds nothing
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock, from its owner record."""

    host: str
    pid: int
    since: str
    heartbeat: float
    job: str | None = None
    what: str = ""

    @classmethod
    def here(cls, what: str) -> "Holder":
        now = time.time()
        since = _dt.datetime.fromtimestamp(now).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        return cls(socket.gethostname(), os.getpid(), since, now, job_id(), what)

    def describe(self) -> str:
        job = f", job {self.job}" if self.job else ""
        return f"{self.host} pid {self.pid}{job}, since {self.since}"

    @property
    def local(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self, now: float | None = None) -> bool:
        """Whether the holder may still be running: its pid on this host, else a fresh heartbeat."""
        if self.local:
            return _pid_alive(self.pid)
        return (now or time.time()) - self.heartbeat < STALE_AFTER_S

    def to_dict(self) -> dict:
        return {"host": self.host, "pid": self.pid, "since": self.since, "heartbeat": self.heartbeat,
                "job": self.job, "what": self.what}


def read_holder(owner_path: str | os.PathLike[str]) -> Holder | None:
    """The owner record at ``owner_path`` (None when absent or unreadable, e.g. mid-replace)."""
    try:
        d = json.loads(Path(owner_path).read_text(encoding="utf-8"))
        return Holder(str(d["host"]), int(d["pid"]), str(d.get("since", "?")), float(d.get("heartbeat", 0.0)),
                      d.get("job"), str(d.get("what", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it (one line)."""

    def __init__(self, target: Path, holder: Holder | None, what: str) -> None:
        self.target, self.holder = target, holder
        who = holder.describe() if holder else "another process (no owner record yet)"
        super().__init__(f"{target} is being {what} by {who}")


class Lock:
    """``with Lock(path, what="trained"):`` one process at a time for ``path`` (a folder or a file).

    The lock file is ``<folder>/.run.lock`` for a folder, ``.<name>.lock`` beside a file; the owner
    record is the same name with ``.owner.json``. ``wait``: 0 raises :class:`LockHeld` at once when a
    live process holds it, ``None`` waits for it (logging once whom it waits for), a number waits
    that many seconds at most.
    """

    def __init__(self, path: str | os.PathLike[str], what: str = "used", *, wait: float | None = 0.0,
                 log: Callable[[str], None] = print, folder: bool | None = None) -> None:
        self.target = Path(path)
        folder_lock = folder if folder is not None else (self.target.suffix == "" or self.target.is_dir())
        base = self.target / ".run" if folder_lock else self.target.parent / f".{self.target.name}"
        self.lock_path = base.with_name(base.name + ".lock")
        self.owner_path = base.with_name(base.name + ".owner.json")
        self.what, self.wait, self.log = what, wait, log
        self._lock = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- acquire / release

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        import filelock

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.lock_path))
        deadline = None if self.wait is None else time.monotonic() + self.wait
        told = False
        while True:
            try:
                lock.acquire(timeout=0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
            except filelock.Timeout:
                holder = read_holder(self.owner_path)
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockHeld(self.target, holder, self.what) from None
                if not told:
                    self.log(f"[lock] waiting: {LockHeld(self.target, holder, self.what)}")
                    told = True
                time.sleep(0.5 if deadline is None else 0.0)
                continue
            holder = read_holder(self.owner_path)
            if holder is not None and not holder.local and holder.alive() and holder.job != job_id():
                # flock may not reach across hosts on this filesystem: a live record there wins
                lock.release()
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockHeld(self.target, holder, self.what)
                if not told:
                    self.log(f"[lock] waiting: {LockHeld(self.target, holder, self.what)}")
                    told = True
                time.sleep(min(HEARTBEAT_S, 5.0))
                continue
            break
        self._lock = lock
        if holder is not None:
            why = ("an earlier run of this job" if holder.job and holder.job == job_id() else
                   "process gone" if holder.local else f"no heartbeat for {time.time() - holder.heartbeat:.0f} s")
            self.log(f"[lock] {self.target}: took over the stale lock of {holder.describe()} ({why})")
        try:
            self._write_owner(Holder.here(self.what))
        except BaseException:
            self._lock = None
            lock.release()
            raise
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lock-heartbeat {self.target.name}", daemon=True)
        self._beat.start()

    def release(self) -> None:
        if self._lock is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        try:
            self.owner_path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            lock, self._lock = self._lock, None
            lock.release()

    @property
    def held(self) -> bool:
        return self._lock is not None

    # -- owner record

    def _write_owner(self, holder: Holder) -> None:
        from .runs import atomic_write_json

        atomic_write_json(self.owner_path, holder.to_dict())

    def _heartbeat(self) -> None:
        me = Holder.here(self.what)
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write_owner(Holder(me.host, me.pid, me.since, time.time(), me.job, me.what))
            except OSError:  # a full or read-only disk must not kill the run; the lock itself stands
                pass
