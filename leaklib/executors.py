"""Running many runs at once: in this process, a local process pool, submitit's local executor, or Slurm.

One API for the command line and the book::

    run_sweep(configs, executor="local", jobs=2, results_dir="results", device="cpu")
        -> [(config, metrics), ...]
    map_runs(task, configs, executor="slurm", partition="gpu", time="24:00:00")
        -> [Outcome, ...]

``task`` is a picklable top-level function ``task(config, results_dir, device, **task_kwargs)``
whose result is cached in the run folder by the task itself (training writes ``metrics.json``,
the analyses :func:`leaklib.sweep.cached` files), so a finished run is never computed twice.

Executors:

* ``inline``: one run after another in this process (``local`` with ``jobs=1`` is the same).
* ``local``: a pool of ``jobs`` worker processes (``spawn``), started once, each run handed to
  the next free worker. CPU threads are split (``cores // jobs`` each, OMP/MKL too); where there
  are GPUs, worker k sees GPU ``k mod count`` only. Ctrl-C stops the workers cleanly (they finish
  their atomic writes and release their locks; the next command resumes).
* ``submitit-local``: one subprocess per run through submitit's LocalExecutor, at most ``jobs``
  at once: the Slurm code path (requeue on SIGUSR2 through submitit's checkpoint protocol) on
  this machine, for testing a cluster set-up.
* ``slurm``: one Slurm job per run (a job array, ``jobs`` = array parallelism). A job that hits
  its time limit or is pre-empted gets SIGUSR2, is requeued by submitit and resumes from the
  run's checkpoint. ``wait=False`` returns once submitted; ``leaklib status`` follows them.

Every task writes ``<run>/logs/<task>.log`` and, when it fails, ``<run>/logs/<task>.json``
(the error, host, pid, job id); submissions are recorded in ``<run>/logs/<task>.submitted.json``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import inspect
import io
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
import types
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .locks import LockHeld, job_id, read_holder
from .runs import atomic_write_json, read_json

__all__ = [
    "EXECUTORS",
    "SlurmOptions",
    "Outcome",
    "map_runs",
    "run_sweep",
    "train_task",
    "parse_time",
    "cpu_count",
]

EXECUTORS = ("inline", "local", "submitit-local", "slurm")


def cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_time(text: str | int | float) -> int:
    """A Slurm time limit in minutes: ``90``, ``"90"``, ``"1:30:00"``, ``"2-00:00:00"`` (ValueError otherwise)."""
    if isinstance(text, (int, float)):
        minutes = float(text)
    else:
        match = re.fullmatch(r"\s*(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\s*", str(text))
        if not match:
            raise ValueError(f"time must be minutes or [D-]HH:MM[:SS], got {text!r}")
        days, a, b, c = (int(g) if g else None for g in match.groups())
        if b is None and c is None and days is None:
            minutes = float(a)
        elif c is None:  # D-HH:MM or HH:MM
            minutes = (days or 0) * 1440 + a * 60 + (b or 0)
        else:  # [D-]HH:MM:SS
            minutes = (days or 0) * 1440 + a * 60 + b + c / 60
    if not minutes > 0 or math.isinf(minutes):
        raise ValueError(f"time must be positive, got {text!r}")
    return max(1, math.ceil(minutes))


@dataclass(frozen=True)
class SlurmOptions:
    """Per-job resources for ``slurm`` (and the time limit and GPUs for ``submitit-local``)."""

    partition: str | None = None
    time: int = 24 * 60                   # minutes per job; a run that needs longer is requeued and resumes
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    sbatch: tuple[str, ...] = ()          # extra sbatch flags: "qos=high", "--constraint=a100", "exclusive"
    setup: tuple[str, ...] = ()           # shell lines run before the job (module load ..., source venv/bin/activate)
    max_requeues: int = 30                # time-limit requeues per run (pre-emptions are not counted)
    signal_delay_s: int = 120             # SIGUSR2 this long before the time limit
    log_dir: str | None = None            # default <results>/<profile>/<variant>/jobs

    def sbatch_flags(self) -> dict[str, Any]:
        """``sbatch`` as submitit's additional_parameters: {"qos": "high", "exclusive": True}."""
        flags: dict[str, Any] = {}
        for item in self.sbatch:
            key, sep, value = str(item).lstrip("-").partition("=")
            if not key:
                raise ValueError(f"sbatch flag must be KEY=VALUE or KEY, got {item!r}")
            flags[key.replace("_", "-")] = value if sep else True
        return flags


@dataclass
class Outcome:
    """What became of one run's task.

    status: ``done`` (value is the task's result), ``reused`` (finished before, nothing ran),
    ``failed`` (error: one line; log: the run's log), ``held`` (another live process is on it;
    error says who), ``submitted`` (a batch job that was not waited for).
    """

    config: Any
    status: str
    value: Any = None
    error: str | None = None
    job_id: str | None = None
    log: str | None = None
    seconds: float = 0.0
    where: str = ""
    user_error: bool = True


# ----------------------------------------------------------------------------- one task, anywhere

def _now() -> str:
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _error_line(exc: BaseException, log: Path | None) -> tuple[str, bool]:
    """(one line for the user, whether it is a user error rather than a bug)."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.filename:
        hint = " (is the results folder writable?)" if isinstance(exc, PermissionError) else ""
        return f"cannot write or read {exc.filename}: {exc.strerror}{hint}", True
    if isinstance(exc, (ValueError, FileNotFoundError, LockHeld, OSError)):
        text = " ".join(str(exc).split()) or type(exc).__name__
        return text, True
    where = f" (traceback in {log})" if log else ""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}{where}", False


class _Tee(io.TextIOBase):
    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            try:
                s.write(text)
                s.flush()
            except (OSError, ValueError):
                pass
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _captured(log_path: Path | None, tee: bool) -> Iterator[Any]:
    """stdout and stderr of the task into ``log_path`` (and still to the terminal when ``tee``)."""
    handle = None
    if log_path is not None:
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(log_path, "a", encoding="utf-8", buffering=1)
        except OSError:
            handle = None
    if handle is None:
        yield None
        return
    try:
        out = _Tee(handle, sys.__stdout__) if tee else _Tee(handle)
        err = _Tee(handle, sys.__stderr__) if tee else _Tee(handle)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # type: ignore[arg-type]
            yield handle
    finally:
        handle.close()


def _task_name(task: Callable) -> str:
    name = getattr(task, "task_name", None) or getattr(task, "__name__", "task")
    return str(name).removesuffix("_task")


def _record_path(folder: Path, name: str, suffix: str = "json") -> Path:
    return folder / "logs" / f"{name}.{suffix}"


def _write_record(folder: Path, name: str, record: dict, suffix: str = "json") -> None:
    try:
        atomic_write_json(_record_path(folder, name, suffix), record)
    except OSError:  # a read-only results folder: the outcome still reaches the caller
        pass


def _execute(task: Callable, config: Any, results_dir: str, device: str, kwargs: dict, *,
             capture: bool, tee: bool = False) -> Outcome:
    """Run one task for one run, turning its exception into a failed Outcome (recorded in the run folder)."""
    name = _task_name(task)
    folder = config.folder(results_dir)
    log_path = _record_path(folder, name, "log") if capture else None
    where = f"{socket.gethostname()} pid {os.getpid()}" + (f" job {job_id()}" if job_id() else "")
    t0 = time.perf_counter()
    with contextlib.suppress(OSError):
        _record_path(folder, name).unlink(missing_ok=True)  # an earlier failure is being retried
    with _captured(log_path, tee) as handle:
        if handle is not None:
            print(f"== {name} {config.label()} on {where} at {_now()}", flush=True)
        try:
            value = task(config, results_dir, device, **kwargs)
        except LockHeld as exc:
            print(f"[skip] {exc}", flush=True)
            return Outcome(config, "held", error=str(exc), seconds=time.perf_counter() - t0, where=where)
        except Exception as exc:  # noqa: BLE001 - every failure becomes data for the caller and `leaklib status`
            shown = log_path if handle is not None else None
            if handle is not None:
                traceback.print_exc()
            elif not _error_line(exc, None)[1]:  # a bug, in this process: its traceback goes to the run's log
                shown = _append_traceback(_record_path(folder, name, "log"), config, where)
            line, user = _error_line(exc, shown)
            _write_record(folder, name, {"state": "failed", "error": line, "host": socket.gethostname(),
                                         "pid": os.getpid(), "job": job_id(), "when": _now(),
                                         "log": str(shown) if shown else None})
            return Outcome(config, "failed", error=line, log=str(shown) if shown else None,
                           seconds=time.perf_counter() - t0, where=where, user_error=user)
        except BaseException as exc:  # Ctrl-C, SIGTERM or a requeue (SystemExit): finished epochs are saved
            print(f"[interrupted] {name} {config.label()}: {type(exc).__name__} at {_now()}", flush=True)
            raise
        if handle is not None:
            print(f"== done in {time.perf_counter() - t0:.1f} s", flush=True)
    return Outcome(config, "done", value=value, seconds=time.perf_counter() - t0, where=where,
                   log=str(log_path) if log_path else None)


def _append_traceback(path: Path, config: Any, where: str) -> Path | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"== {config.label()} on {where} at {_now()}\n{traceback.format_exc()}")
    except OSError:
        return None
    return path


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


class SubmittedTask:
    """The callable a submitit job runs: one task for one run, requeued on SIGUSR2.

    ``checkpoint`` is submitit's checkpoint protocol: it resubmits the same call, which resumes
    from the run's own checkpoint (training) or finds the finished cache; nothing else to save.
    """

    def __init__(self, task: Callable, threads: int | None) -> None:
        self.task, self.threads = task, threads

    def __call__(self, config: Any, results_dir: str, device: str, kwargs: dict) -> Outcome:
        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0) or None
        if threads:
            os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        _set_threads(threads)
        return _execute(self.task, config, results_dir, device, kwargs, capture=True, tee=True)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


# ----------------------------------------------------------------------------- the local process pool

def _pool_worker(conn: Any, threads: int, env: dict[str, str], cwd: str) -> None:  # pragma: no cover - worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us with SIGTERM
    # a forked worker starts with the forkserver's environment and folder, which may be older than the
    # caller's: take the caller's now (before CUDA is initialised: this worker's GPU and thread count)
    os.environ.update(env)
    with contextlib.suppress(OSError):
        os.chdir(cwd)

    def _terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    _set_threads(threads)
    import leaklib.train  # noqa: F401 - the imports every task needs, before saying ready

    try:
        conn.send(("ready", os.getpid(), time.time()))
    except OSError:  # the parent is gone (Ctrl-C while this worker started): nothing to do, nothing to say
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, task, config, results_dir, device, kwargs = message
        outcome = _execute(task, config, results_dir, device, kwargs, capture=True)
        try:
            conn.send(("done", index, outcome))
        except OSError:  # the parent is gone; the outcome is in the run folder (metrics or logs/)
            return


@contextlib.contextmanager
def _environ(changes: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _plain_main() -> Iterator[None]:
    """Start workers without re-running the caller's script (spawn imports ``__main__`` otherwise):
    tasks are top-level functions of importable modules, the workers need nothing from it."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class _Worker:
    def __init__(self, ctx: Any, slot: int, env: dict[str, str], threads: int) -> None:
        self.slot, self.env, self.threads = slot, env, threads
        parent, child = ctx.Pipe()
        self.process = ctx.Process(target=_pool_worker, args=(child, threads, {**os.environ, **env}, os.getcwd()),
                                   daemon=True,
                                   name=f"leaklib-worker-{slot}")
        # the workers inherit a blocked SIGINT: Ctrl-C reaches the parent only, even while they start
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            with _environ(env), _plain_main():
                self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.close()
        self.conn = parent
        self.index: int | None = None
        self.started = 0.0
        self.ready_at: float | None = None

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


#: How pool workers start: "forkserver" (one process imports torch and leaklib once, workers fork
#: from it) or "spawn" (every worker imports them itself); LEAKLIB_START_METHOD overrides.
START_METHOD = "forkserver"


def _context() -> Any:
    method = os.environ.get("LEAKLIB_START_METHOD", START_METHOD)
    if method not in multiprocessing.get_all_start_methods():
        method = "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        # what every training task imports: leaklib and torch, scikit-learn's digits, and torch._dynamo
        # (imported by the first optimiser step); ~70 % of a fresh process's first-run time here
        ctx.set_forkserver_preload(["leaklib.train", "leaklib.executors", "sklearn.datasets", "torch._dynamo"])
    return ctx


def _start_helpers(ctx: Any) -> None:
    """Start multiprocessing's helper processes so that a Ctrl-C while the pool starts reaches this process only.

    The resource tracker first: starting it unblocks SIGINT in the calling thread, which would undo
    the mask :class:`_Worker` holds while a worker starts. Then the forkserver, with SIGINT ignored
    (a disposition that survives ``exec``; only for the fork itself, not while it imports): it
    preloads torch for seconds before ignoring SIGINT itself, and a Ctrl-C in that time killed it
    with a traceback of the import it was in.
    """
    if threading.current_thread() is not threading.main_thread():  # signal.signal works in the main thread only
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, old)


def _gpu_env(device: str, jobs: int) -> list[dict[str, str]]:
    """Per worker: CUDA_VISIBLE_DEVICES (one GPU each, round robin) when the device is auto/cuda and GPUs exist."""
    if device not in ("auto", "cuda"):
        return [{} for _ in range(jobs)]
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        count = 0
    if count == 0:
        return [{} for _ in range(jobs)]
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()] or \
        [str(i) for i in range(count)]
    return [{"CUDA_VISIBLE_DEVICES": visible[k % len(visible)]} for k in range(jobs)]


def _run_pool(task: Callable, configs: Sequence[Any], indices: Sequence[int], results_dir: str, device: str,
              kwargs: dict, jobs: int, threads: int | None, report: Callable[[int, Outcome], None],
              log: Callable[[str], None]) -> dict[int, Outcome]:
    ctx = _context()
    jobs = max(1, min(jobs, len(indices)))
    per_worker = threads or max(1, cpu_count() // jobs)
    envs = _gpu_env(device, jobs)
    worker_device = "cuda" if envs[0] else device
    base_env = {"OMP_NUM_THREADS": str(per_worker), "MKL_NUM_THREADS": str(per_worker)}
    _start_helpers(ctx)
    pending = deque(indices)
    outcomes: dict[int, Outcome] = {}
    workers: list[_Worker] = []
    try:
        for k in range(jobs):  # inside the try: a Ctrl-C while they start stops those already started
            workers.append(_Worker(ctx, k, {**base_env, **envs[k]}, per_worker))
        gpu_note = f", GPU {', '.join(w.env['CUDA_VISIBLE_DEVICES'] for w in workers)}" if envs[0] else ""
        log(f"[local] {jobs} worker process(es), {per_worker} CPU thread(s) each{gpu_note}")
        while pending or any(w.index is not None for w in workers):
            for w in workers:
                if w.index is None and pending:
                    w.index, w.started = pending.popleft(), time.perf_counter()
                    w.conn.send((w.index, task, configs[w.index], results_dir, worker_device, kwargs))
            busy = [w for w in workers if w.index is not None]
            ready = multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy],
                                                    timeout=5.0)
            for k, w in enumerate(workers):
                if w.index is None:
                    continue
                message = None
                if w.conn in ready or w.process.sentinel in ready:
                    try:
                        while w.conn.poll():
                            message = w.conn.recv()
                            if message[0] == "ready":
                                w.ready_at = message[2]
                                message = None
                            elif message[0] == "done":
                                break
                    except (EOFError, OSError):
                        message = None
                if message is not None and message[0] == "done":
                    outcomes[w.index] = message[2]
                    report(w.index, message[2])
                    w.index = None
                elif not w.process.is_alive():
                    code = w.process.exitcode
                    config = configs[w.index]
                    log_path = _record_path(config.folder(results_dir), _task_name(task), "log")
                    line = (f"its worker process died (exit code {code}{', killed' if code and code < 0 else ''}); "
                            f"the same command resumes it")
                    _write_record(config.folder(results_dir), _task_name(task),
                                  {"state": "failed", "error": line, "host": socket.gethostname(),
                                   "pid": w.process.pid, "when": _now(), "log": str(log_path)})
                    outcome = Outcome(config, "failed", error=line, log=str(log_path),
                                      seconds=time.perf_counter() - w.started, user_error=False)
                    outcomes[w.index] = outcome
                    report(w.index, outcome)
                    w.index = None
                    w.conn.close()
                    workers[k] = _Worker(ctx, w.slot, w.env, per_worker)  # a fresh worker for the rest
    except BaseException:
        for w in workers:  # SIGTERM: they finish their atomic write, release their locks and exit
            if w.process.is_alive():
                w.process.terminate()
        for w in workers:
            w.stop(timeout=30.0)
        raise
    for w in workers:
        with contextlib.suppress(OSError, BrokenPipeError):
            w.conn.send(None)
    for w in workers:
        w.process.join(10)
        w.stop(timeout=5)
    return outcomes


# ----------------------------------------------------------------------------- submitit (local and Slurm)

def _jobs_folder(configs: Sequence[Any], results_dir: str, options: SlurmOptions) -> Path:
    if options.log_dir:
        return Path(options.log_dir)
    first = configs[0]
    return Path(results_dir) / first.profile.name / first.variant() / "jobs"


def _make_submitit(kind: str, folder: Path, options: SlurmOptions, jobs: int | None, name: str) -> Any:
    import submitit

    if kind == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise ValueError(f"--executor slurm needs Slurm's {' and '.join(missing)} on PATH; run it where jobs "
                             f"are submitted (a login node), or use --executor local")
        executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=options.max_requeues)
        params: dict[str, Any] = {"job_name": f"leaklib-{name}", "time": options.time,
                                  "signal_delay_s": options.signal_delay_s}
        if options.partition:
            params["partition"] = options.partition
        if options.gpus_per_job:
            params["gpus_per_node"] = options.gpus_per_job
        if options.cpus_per_job:
            params["cpus_per_task"] = options.cpus_per_job
        if options.mem_gb:
            gb = float(options.mem_gb)
            params["mem"] = f"{int(gb)}GB" if gb.is_integer() else f"{math.ceil(gb * 1024)}MB"
        if options.account:
            params["account"] = options.account
        if options.setup:
            params["setup"] = list(options.setup)
        if jobs:
            params["array_parallelism"] = jobs
        # --requeue: Slurm requeues the job after a node failure too; it then resumes like a pre-empted one
        params["additional_parameters"] = {"requeue": True, **options.sbatch_flags()}
        executor.update_parameters(**params)
        return executor
    executor = submitit.LocalExecutor(folder=str(folder), max_num_timeout=options.max_requeues)
    executor.update_parameters(timeout_min=options.time, signal_delay_s=min(options.signal_delay_s, 30))
    return executor


@contextlib.contextmanager
def _stderr_captured() -> Iterator[dict]:
    """stderr (file descriptor 2 and sys.stderr) into a buffer, where sbatch's refusal goes; the text is
    in the dict afterwards."""
    import tempfile

    said: dict = {}
    sys.stderr.flush()
    saved = os.dup(2)
    python_level = io.StringIO()  # submitit copies the command's stderr to sys.stderr itself
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            with contextlib.redirect_stderr(python_level):
                yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            said["text"] = python_level.getvalue() + buffer.read().decode(errors="replace")
            if said["text"].strip() and sys.exc_info()[0] is None:  # submitted: pass on what sbatch said
                sys.stderr.write(said["text"])


def _job_paths(job: Any) -> tuple[str, str]:
    paths = job.paths
    return str(paths.stdout), str(paths.stderr)


def _submitit_outcome(job: Any, config: Any, task_name: str, results_dir: str, t0: float) -> Outcome:
    stdout, stderr = _job_paths(job)
    try:
        outcome = job.result()
    except Exception as exc:  # noqa: BLE001 - the job died without a result (killed, out of memory, ...)
        reason = " ".join(str(exc).split())
        reason = reason[:200] + ("..." if len(reason) > 200 else "")
        line = f"job {job.job_id} ended without a result ({reason or type(exc).__name__}); see {stderr}"
        _write_record(config.folder(results_dir), task_name, {"state": "failed", "error": line, "job": job.job_id,
                                                             "when": _now(), "log": stderr})
        return Outcome(config, "failed", error=line, job_id=job.job_id, log=stderr,
                       seconds=time.perf_counter() - t0, user_error=False)
    if not isinstance(outcome, Outcome):  # pragma: no cover - a foreign callable
        outcome = Outcome(config, "done", value=outcome)
    return replace(outcome, job_id=job.job_id, log=outcome.log or stderr)


def _run_submitit(kind: str, task: Callable, configs: Sequence[Any], indices: Sequence[int], results_dir: str,
                  device: str, kwargs: dict, jobs: int | None, threads: int | None, options: SlurmOptions,
                  wait: bool, report: Callable[[int, Outcome], None],
                  log: Callable[[str], None]) -> dict[int, Outcome]:
    name = _task_name(task)
    folder = _jobs_folder(configs, results_dir, options)
    created = folder.absolute()
    while not created.parent.exists():  # the top folder this submission creates (removed if sbatch refuses)
        created = created.parent
    created = created if not created.exists() else None
    executor = _make_submitit(kind, folder, options, jobs, name)
    call = SubmittedTask(task, threads if threads else (None if kind == "slurm" else max(1, cpu_count() // (jobs or 1))))
    outcomes: dict[int, Outcome] = {}

    def record(index: int, job: Any) -> None:
        stdout, stderr = _job_paths(job)
        log(f"[submitted] {configs[index].label()}: {kind} job {job.job_id}, log {stderr}")
        _write_record(configs[index].folder(results_dir), name,
                      {"executor": kind, "job": job.job_id, "stdout": stdout, "stderr": stderr,
                       "submitted": _now(), "host": socket.gethostname()}, "submitted.json")

    if kind == "slurm":
        args = [(configs[i], str(results_dir), device, kwargs) for i in indices]
        before = set(folder.rglob("*")) if created is None else set()
        try:
            with _stderr_captured() as said:
                submitted = (executor.map_array(call, *zip(*args)) if len(args) > 1
                             else [executor.submit(call, *args[0])])
        except Exception as exc:  # noqa: BLE001 - sbatch refused (bad partition, account, limits, ...)
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            for path in sorted(set(folder.rglob("*")) - before, reverse=True):  # the refused submission's files
                with contextlib.suppress(OSError):
                    path.unlink() if path.is_file() else path.rmdir()
            text = "\n".join(str(t.decode(errors="replace") if isinstance(t, bytes) else t)
                             for t in (said.get("text"), getattr(exc, "output", None), str(exc)) if t)
            last = [line for line in text.splitlines() if line.strip()][:1] or [type(exc).__name__]
            raise ValueError(f"sbatch refused the jobs: {last[0].strip()}") from None
        running = dict(zip(indices, submitted))
        for index, job in running.items():
            record(index, job)
        if not wait:
            for index, job in running.items():
                outcomes[index] = Outcome(configs[index], "submitted", job_id=job.job_id, log=_job_paths(job)[1])
            return outcomes
        t0 = time.perf_counter()
        while running:
            for index, job in list(running.items()):
                if job.done():
                    outcomes[index] = _submitit_outcome(job, configs[index], name, results_dir, t0)
                    report(index, outcomes[index])
                    del running[index]
            time.sleep(5.0)
        return outcomes

    # submitit-local: at most `jobs` subprocesses at once; GPUs round robin
    gpu_envs = _gpu_env(device, max(1, jobs or 1))
    queue = deque(indices)
    running = {}
    started: dict[int, float] = {}
    slot = 0
    try:
        while queue or running:
            while queue and len(running) < (jobs or len(indices)):
                index = queue.popleft()
                gpu = gpu_envs[slot % len(gpu_envs)].get("CUDA_VISIBLE_DEVICES")
                slot += 1
                executor.update_parameters(gpus_per_node=1 if gpu else 0,
                                           visible_gpus=[int(gpu)] if gpu and gpu.isdigit() else ())
                job = executor.submit(call, configs[index], str(results_dir), "cuda" if gpu else device, kwargs)
                running[index], started[index] = job, time.perf_counter()
                record(index, job)
            for index, job in list(running.items()):
                if job.done():
                    outcomes[index] = _submitit_outcome(job, configs[index], name, results_dir, started[index])
                    report(index, outcomes[index])
                    del running[index]
            time.sleep(0.1)
    except BaseException:
        for job in running.values():
            with contextlib.suppress(Exception):
                job.cancel(check=False)
        raise
    return outcomes


# ----------------------------------------------------------------------------- the API

def _accepts(task: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(task).parameters
    except (TypeError, ValueError):
        return False


def _already_on_slurm(config: Any, results_dir: str, name: str, what: str) -> str | None:
    """Why not to submit this run again: a live process trains it, or its job is still queued or running."""
    from .status import ACTIVE_SLURM_STATES, _slurm_state

    folder = config.folder(results_dir)
    holder = read_holder(folder / ".run.owner.json") if what == "run" else None
    if holder is not None and holder.alive():
        return f"{folder} is being trained by {holder.describe()}"
    try:
        record = read_json(_record_path(folder, name, "submitted.json"))
    except (OSError, ValueError):
        return None
    if isinstance(record, dict) and record.get("executor") == "slurm":
        state = _slurm_state(str(record.get("job")))
        if state in ACTIVE_SLURM_STATES:
            return f"already submitted as slurm job {record.get('job')} ({state})"
    return None


def map_runs(task: Callable, configs: Sequence[Any], *, executor: str = "inline", jobs: int | None = None,
             results_dir: str | os.PathLike[str] = "results", device: str = "auto", threads: int | None = None,
             task_kwargs: dict | None = None, ready: Callable[[Any, str], Any] | None = None,
             describe: Callable[[Outcome], str] | None = None, wait: bool = True,
             log: Callable[[str], None] = print, slurm: SlurmOptions | None = None,
             what: str = "run", **slurm_options: Any) -> list[Outcome]:
    """Run ``task(config, results_dir, device, **task_kwargs)`` for every config; one Outcome each, in order.

    ``ready(config, results_dir)`` (top-level, optional) returns the value of a run whose task has
    nothing left to do (e.g. a finished training run), which is then not submitted. Progress
    lines ("[run 3/9 done] digits tau_m=30 seed=1: finished, test acc 0.950, 24 s") go to ``log``
    as runs end; ``describe(outcome)`` writes the part after the colon. ``jobs``: runs at once
    (default 1; for ``slurm`` the array's parallelism, default unlimited). ``slurm`` or keyword
    options (partition, time, gpus_per_job, cpus_per_job, mem_gb, account, sbatch, setup,
    max_requeues, log_dir) set the batch jobs' resources.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if slurm_options:
        if "time" in slurm_options:
            slurm_options["time"] = parse_time(slurm_options["time"])
        for key in ("sbatch", "setup"):
            if key in slurm_options and isinstance(slurm_options[key], str):
                slurm_options[key] = (slurm_options[key],)
            elif key in slurm_options:
                slurm_options[key] = tuple(slurm_options[key])
        unknown = set(slurm_options) - set(SlurmOptions.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown executor option(s): {', '.join(sorted(unknown))}")
    options = replace(slurm or SlurmOptions(), **slurm_options)
    configs = list(configs)
    results_dir = str(results_dir)
    kwargs = dict(task_kwargs or {})
    n = len(configs)
    if executor == "local" and (jobs or 1) == 1:
        executor = "inline"
    if executor in ("inline", "local"):
        from .train import resolve_device

        resolve_device(device)  # before anything is written
    elif not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    outcomes: dict[int, Outcome] = {}
    finished = 0

    def report(index: int, outcome: Outcome) -> None:
        nonlocal finished
        finished += 1
        label = configs[index].label()
        if outcome.status in ("done", "reused"):
            text = describe(outcome) if describe else "done"
            took = f", {outcome.seconds:.0f} s" if outcome.status == "done" else ""
            log(f"[{what} {finished}/{n} {outcome.status}] {label}: {text}{took}")
        elif outcome.status == "held":
            log(f"[{what} {finished}/{n} skipped] {label}: {outcome.error}")
        else:
            where = f" (log: {outcome.log})" if outcome.log and outcome.log not in (outcome.error or "") else ""
            log(f"[{what} {finished}/{n} {outcome.status}] {label}: {outcome.error}{where}")

    todo = []
    for index, config in enumerate(configs):
        value = None
        if ready is not None:
            try:
                value = ready(config, results_dir)
            except (ValueError, OSError) as exc:  # damaged files: say so now, submit nothing for it
                line, user = _error_line(exc, None)
                outcomes[index] = Outcome(config, "failed", error=line, user_error=user)
                report(index, outcomes[index])
                continue
        if value is not None:
            outcomes[index] = Outcome(config, "reused", value=value)
            report(index, outcomes[index])
            continue
        if executor == "slurm":
            busy = _already_on_slurm(config, results_dir, _task_name(task), what)
            if busy:
                outcomes[index] = Outcome(config, "held", error=busy)
                report(index, outcomes[index])
                continue
        todo.append(index)

    if todo and executor == "inline":
        if threads:
            _set_threads(threads)
        inline_kwargs = dict(kwargs)
        if _accepts(task, "log"):
            inline_kwargs["log"] = log
        for index in todo:
            if _accepts(task, "tag"):
                inline_kwargs["tag"] = f"[{what} {finished + 1}/{n}]"
            outcome = _execute(task, configs[index], results_dir, device, inline_kwargs, capture=False)
            outcomes[index] = outcome
            report(index, outcome)
    elif todo and executor == "local":
        outcomes.update(_run_pool(task, configs, todo, results_dir, device, kwargs, jobs or 1, threads, report, log))
    elif todo:
        outcomes.update(_run_submitit(executor, task, configs, todo, results_dir, device, kwargs, jobs, threads,
                                      options, wait, report, log))
    return [outcomes[i] for i in range(n)]


# ----------------------------------------------------------------------------- training

def train_task(config: Any, results_dir: str, device: str, data_root: str | None = None, download: bool = False,
               progress: bool = False, log: Callable[[str], None] = print, tag: str = "",
               lock_wait: float | None = 0.0) -> dict:
    """Train (or resume, or reuse) one run: :func:`leaklib.train.train_run`; returns its metrics.

    ``lock_wait``: how long to wait for another process that is training this run (seconds; None
    as long as it takes; 0 skips it at once, reported as ``held``).
    """
    from .train import train_run

    return train_run(config, results_dir, device=device, data_root=data_root, download=download,
                     progress=progress, log=log, tag=tag, lock_wait=lock_wait)


train_task.task_name = "train"  # type: ignore[attr-defined]


def finished_run(config: Any, results_dir: str) -> dict | None:
    """The metrics of a finished, intact run with these settings (None: it has to be trained)."""
    from .train import _reusable

    return _reusable(config, config.folder(results_dir), config.hash(), config.label(), log=lambda s: None)


def describe_training(outcome: Outcome) -> str:
    metrics = outcome.value or {}
    status = metrics.get("status", "finished")
    acc = metrics.get("test_acc")
    acc_text = f", test acc {acc:.3f}" if isinstance(acc, (int, float)) and not math.isnan(acc) else ""
    if status == "diverged":
        return f"diverged at epoch {metrics.get('diverged_epoch')}{acc_text}"
    return f"{status}{acc_text}"


def run_sweep(configs: Sequence[Any], executor: str = "inline", jobs: int | None = None,
              results_dir: str | os.PathLike[str] = "results", device: str = "auto", *,
              data_root: str | os.PathLike[str] | None = None, download: bool = False, threads: int | None = None,
              progress: bool = False, wait: bool = True, log: Callable[[str], None] = print,
              slurm: SlurmOptions | None = None, lock_wait: float | None = 0.0,
              **slurm_options: Any) -> list[tuple[Any, dict]]:
    """Train (or resume, or reuse) every run; returns ``[(config, metrics)]`` in the order given.

    A run that did not end has ``{"status": "failed" | "held" | "submitted", "error": ..., "job_id": ...,
    "log": ...}`` instead of its metrics. Results do not depend on ``jobs`` or the executor: each run
    seeds itself (bit for bit at equal threads per run). A run that another process is training is
    skipped (``held``) unless ``lock_wait`` (seconds, None = as long as it takes) lets this process
    wait for it and then reuse (or resume) it.
    """
    outcomes = map_runs(train_task, configs, executor=executor, jobs=jobs, results_dir=results_dir, device=device,
                        threads=threads, task_kwargs={"data_root": None if data_root is None else str(data_root),
                                                      "download": download, "lock_wait": lock_wait,
                                                      "progress": progress and executor in ("inline", "local")
                                                      and (jobs or 1) == 1},
                        ready=finished_run, describe=describe_training, wait=wait, log=log, slurm=slurm,
                        what="run", **slurm_options)
    out = []
    for o in outcomes:
        if o.status in ("done", "reused"):
            out.append((o.config, o.value))
        else:
            out.append((o.config, {"status": o.status, "error": o.error, "job_id": o.job_id, "log": o.log,
                                   "user_error": o.user_error}))
    return out

