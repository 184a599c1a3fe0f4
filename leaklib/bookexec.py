"""Executing a chapter where the reader can see it: the kernel over IPC, progress on the terminal.

Both routes that execute chapters use this: ``leaklib book run`` (papermill) and
``jupyter-book build book/`` (Jupyter Book's own execution, see ``leaklib.sphinx_book``).

* The kernel runs over IPC (Unix domain sockets in a private temporary folder) instead of TCP on
  localhost: nothing listens on a port, and ipykernel has no reason for its "Kernel is running over
  TCP without encryption" warning. On Windows, where ZeroMQ has no IPC transport, nbclient's TCP
  default stays.
* While a chapter runs, one status line says which code cell runs (of how many) and, while runs of
  the profile's sweep are being trained, which run of how many and its epoch. The training part is
  read from the run folders under ``results/<profile>/`` (``config.json`` is written when a run
  starts or resumes, ``history.jsonl`` after each epoch, ``metrics.json`` when it is finished), so
  the science modules need no callback. On a terminal the line is redrawn in place every second; in
  a log (CI) the current state is printed when it changed, at most once every ``interval`` seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

__all__ = ["kernel_manager_class", "client_kwargs", "Progress", "TrainingWatcher", "chapter_progress"]

_IPC_DIR: str | None = None
_IPC_CLASS: Any = None


def _ipc_dir() -> str:
    """One private folder per process for the kernels' sockets (short: socket paths are limited to
    about 100 bytes), removed at exit."""
    global _IPC_DIR
    if _IPC_DIR is None:
        _IPC_DIR = tempfile.mkdtemp(prefix="leaklib-kernel-")
        atexit.register(shutil.rmtree, _IPC_DIR, True)
    return _IPC_DIR


def kernel_manager_class() -> Any:
    """nbclient's kernel manager (``AsyncKernelManager``) with ``transport = "ipc"``; ``None`` where
    ZeroMQ has no IPC transport (Windows), meaning nbclient's default."""
    global _IPC_CLASS
    if os.name != "posix":
        return None
    if _IPC_CLASS is None:
        from jupyter_client.manager import AsyncKernelManager
        from traitlets import default

        class IPCKernelManager(AsyncKernelManager):
            """A kernel reached over Unix domain sockets ``<private dir>/k<id>-<n>``.

            Shut down while a cell runs (Ctrl-C), the kernel's process group is killed at once:
            jupyter_client's graceful shutdown interrupts the cell and asks the kernel to shut down
            in the same breath, and ipykernel, whose sockets are closed by then, prints a ZMQError
            traceback when it sends the interrupted cell's reply (or the reply arrives and asyncio
            reports a cell error nobody retrieves). Runs in training resume from their last epoch
            (their files are written atomically). ``busy`` (set per chapter by ``client_kwargs``)
            says whether a cell is running; without it the shutdown is jupyter_client's.
            """

            busy: Callable[[], bool] | None = None

            async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
                if not now and self.busy is not None and self.busy():
                    now = True
                await super()._async_shutdown_kernel(now=now, restart=restart)

            shutdown_kernel = _async_shutdown_kernel  # type: ignore[assignment]

            @default("transport")
            def _default_transport(self) -> str:
                return "ipc"

            @default("ip")
            def _default_ip(self) -> str:
                if self.transport != "ipc":  # pragma: no cover - only if configured back to tcp
                    return super()._ip_default()
                return os.path.join(_ipc_dir(), f"k{uuid.uuid4().hex[:8]}")

        _IPC_CLASS = IPCKernelManager
    return _IPC_CLASS


def client_kwargs(progress: Progress | None = None) -> dict[str, Any]:
    """Keyword arguments for nbclient's ``NotebookClient`` (also accepted by papermill's
    ``execute_notebook``): the IPC kernel manager and, with ``progress``, its cell hooks."""
    kwargs: dict[str, Any] = {}
    km = kernel_manager_class()
    if km is not None and progress is not None:
        km = type(km.__name__, (km,), {"busy": staticmethod(progress.busy)})
    if km is not None:
        kwargs["kernel_manager_class"] = km
    if progress is not None:
        kwargs["on_cell_execute"] = progress.cell_started
        kwargs["on_cell_executed"] = progress.cell_done
    return kwargs


def code_cell_count(nb: Any) -> int:
    """Code cells that a kernel will execute (nbclient skips empty ones)."""
    return sum(1 for c in nb.cells if c.get("cell_type") == "code" and str(c.get("source", "")).strip())


class Progress:
    """One status line for a running chapter: ``<prefix>: cell 3/7, training run 4/9 (...) - 95 s``."""

    def __init__(self, prefix: str, total_cells: int | None = None, stream: TextIO | None = None,
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix, self.total = prefix, total_cells
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval, self.clock = interval, clock
        self.t0 = clock()
        self.cell = 0
        self.cells_done = 0
        self.training: str | None = None
        self._lock = threading.Lock()
        self._printed: str | None = None
        self._printed_at = -1e9
        self._drawn = False

    # nbclient hooks (called with keyword arguments)
    def cell_started(self, **_: Any) -> None:
        with self._lock:
            self.cell += 1
        self.show()

    def cell_done(self, **_: Any) -> None:
        with self._lock:
            self.cells_done = self.cell

    def busy(self) -> bool:
        """Whether a cell is running (started, and its reply not in yet)."""
        with self._lock:
            return self.cell > self.cells_done

    def set_training(self, text: str | None) -> None:
        with self._lock:
            changed = text != self.training
            self.training = text
        if changed:
            self.show()

    def text(self) -> str:
        with self._lock:
            if self.cell == 0:
                return f"{self.prefix}: starting the kernel"
            cell = f"cell {self.cell}/{self.total}" if self.total else f"cell {self.cell}"
            training = f", {self.training}" if self.training else ""
        return f"{self.prefix}: {cell}{training}"

    def show(self) -> None:
        """Draw the line (terminal) or print it when it changed (log, throttled)."""
        text = self.text()
        now = self.clock()
        if self.cell == 0 and not self.tty:
            return  # a log starts with the first cell
        if self.tty:
            line = f"{text} - {now - self.t0:.0f} s"
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()
            self._drawn = True
            return
        if text == self._printed or (self._printed is not None and now - self._printed_at < self.interval):
            return  # a log gets at most one line per interval, always the current state
        self.stream.write(f"{text} - {now - self.t0:.0f} s\n")
        self.stream.flush()
        self._printed, self._printed_at = text, now

    def tick(self) -> None:
        """Periodic redraw: the elapsed time on a terminal, a held-back change in a log."""
        self.show()

    def close(self) -> None:
        """Erase the line on a terminal so that the caller's "done" line replaces it."""
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class TrainingWatcher:
    """Which run of a profile's sweep is being trained, read from its run folders.

    The sweep trains its runs in ``leaklib.sweep.sweep_configs`` order; the current run is the first
    one without a finished ``metrics.json`` whose ``config.json`` was written since ``since`` (a run
    that merely is not finished yet, in a chapter that does not train, is not reported).
    """

    def __init__(self, results_dir: str | os.PathLike[str], profile: str, since: float | None = None,
                 overrides: Any = None) -> None:
        self.results_dir, self.profile, self.overrides = Path(results_dir), profile, overrides
        self.since = time.time() if since is None else since
        self._runs: list[tuple[str, Path, str]] | None = None
        self._epochs = 0
        self._finished: set[Path] = set()
        self.failed = False

    #: At most this many runs trained at once are named in the status line.
    SHOWN = 3

    def _load(self) -> list[tuple[str, Path, str]]:
        if self._runs is None:
            from .profiles import format_tau, get_profile, parse_overrides
            from .sweep import sweep_configs

            prof = get_profile(self.profile, **parse_overrides(self.overrides))
            self._epochs = prof.epochs
            self._runs = [(f"{c.dataset}, tau_m={format_tau(c.tau_m)}, seed {c.seed}", c.folder(self.results_dir),
                           c.hash()) for c in sweep_configs(prof)]
        return self._runs

    def _finished_run(self, folder: Path, digest: str) -> bool:
        if folder in self._finished:
            return True
        try:
            done = json.loads((folder / "metrics.json").read_text()).get("config_hash") == digest
        except (OSError, ValueError):
            return False
        if done:
            self._finished.add(folder)
        return done

    def status(self) -> str | None:
        """``training run 4/9 (digits, tau_m=100, seed 2), epoch 7/12``, or None when none trains.

        Runs trained at once (local worker processes) are all named, the first ``SHOWN`` of them:
        ``training runs 4/9 (...) epoch 7/12, 5/9 (...) epoch 6/12``.
        """
        if self.failed:
            return None
        try:
            runs = self._load()
        except Exception:  # noqa: BLE001 - an unknown profile: the chapter itself will say so
            self.failed = True
            return None
        active = []
        for i, (label, folder, digest) in enumerate(runs):
            if self._finished_run(folder, digest):
                continue
            try:
                started = (folder / "config.json").stat().st_mtime
            except OSError:
                continue  # not started (yet)
            if started < self.since - 1:
                continue  # left unfinished earlier, not (yet) trained by this chapter
            try:
                with open(folder / "history.jsonl", "rb") as handle:
                    done = sum(1 for line in handle if line.strip())
            except OSError:
                done = 0
            active.append((i, label, min(done + 1, self._epochs)))
        if not active:
            return None
        if len(active) == 1:
            i, label, epoch = active[0]
            return f"training run {i + 1}/{len(runs)} ({label}), epoch {epoch}/{self._epochs}"
        shown = ", ".join(f"{i + 1}/{len(runs)} ({label}) epoch {epoch}/{self._epochs}"
                          for i, label, epoch in active[:self.SHOWN])
        more = f" and {len(active) - self.SHOWN} more" if len(active) > self.SHOWN else ""
        return f"training runs {shown}{more}"


@contextlib.contextmanager
def chapter_progress(prefix: str, total_cells: int | None, results_dir: str | os.PathLike[str] | None,
                     profile: str | None, stream: TextIO | None = None, poll: float = 1.0,
                     interval: float = 10.0, overrides: Any = None) -> Iterator[Progress]:
    """A ``Progress`` for one chapter, kept up to date by a background thread that reads the
    training runs every ``poll`` seconds."""
    progress = Progress(prefix, total_cells, stream, interval=interval)
    watcher = TrainingWatcher(results_dir, profile, overrides=overrides) if results_dir and profile else None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(poll):
            if watcher is not None:
                progress.set_training(watcher.status())
            progress.tick()

    thread = threading.Thread(target=loop, name=f"progress {prefix}", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join(timeout=5)
        progress.close()
