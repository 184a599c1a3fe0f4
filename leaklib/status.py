"""``leaklib status``: where every run of a sweep stands, read from its run folder only.

A run is ``done`` (metrics.json with its config hash: finished or diverged), ``running`` (a live
process holds its lock: host, pid, job, heartbeat), ``failed`` (its last task failed, or its
batch job ended without finishing: the error and the last lines of its log), ``interrupted``
(epochs saved, nobody on it: the same command resumes it), ``queued`` (a batch job was submitted
and has not started), ``damaged`` (a file that cannot be read: what to do) or ``not started``.
Nothing here writes, locks or waits, so it is safe next to running jobs.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .locks import read_holder
from .profiles import format_tau
from .runs import RunFileError, read_json, read_jsonl

__all__ = ["RunState", "run_state", "sweep_status", "format_status", "tail"]

#: sacct states of a job that has not ended yet.
ACTIVE_SLURM_STATES = ("PENDING", "REQUEUED", "RUNNING", "CONFIGURING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
                       "REQUEUE_FED", "COMPLETING")

STATES = ("done", "running", "queued", "interrupted", "failed", "damaged", "not started")


@dataclass
class RunState:
    config: Any
    state: str
    epochs_done: int = 0
    test_acc: float | None = None
    note: str = ""
    log: str | None = None
    log_tail: list[str] = field(default_factory=list)
    analyses: list[str] = field(default_factory=list)


def tail(path: str | Path | None, lines: int) -> list[str]:
    """The last ``lines`` non-empty lines of a text file (empty if unreadable)."""
    if not path or lines <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 64_000))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


def _record(path: Path) -> dict | None:
    try:
        value = read_json(path)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _slurm_state(job: str) -> str | None:
    """sacct's state of a Slurm job (None where sacct is not available or says nothing)."""
    if not shutil.which("sacct"):
        return None
    try:
        out = subprocess.run(["sacct", "-j", job, "-X", "-n", "-P", "-o", "State"], capture_output=True, text=True,
                             timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].split()[0] if out else None


def _pid_alive(pid: int) -> bool:
    from .locks import _pid_alive as alive

    return alive(pid)


def run_state(config: Any, results_dir: str | Path = "results", lines: int = 5, task: str = "train") -> RunState:
    """The state of one run (see the module docstring)."""
    folder = config.folder(results_dir)
    epochs = config.profile.epochs
    analyses = sorted(p.stem for p in (folder / "analysis").glob("*.json")) if (folder / "analysis").is_dir() else []
    logs = folder / "logs"
    train_log = logs / f"{task}.log"
    try:  # the remedies `leaklib train` gives for the same damage
        history = read_jsonl(folder / "history.jsonl", f"restore it, or delete {folder} to retrain this run")
    except RunFileError as exc:
        return RunState(config, "damaged", note=str(exc), analyses=analyses)
    done_epochs = len(history)
    metrics_path = folder / "metrics.json"
    if metrics_path.exists():
        rebuild = "delete it to rebuild it from the checkpoint and history (`leaklib train` does that), or restore it"
        try:
            metrics = read_json(metrics_path, rebuild)
        except RunFileError as exc:
            return RunState(config, "damaged", done_epochs, note=str(exc), analyses=analyses)
        if not isinstance(metrics, dict):
            return RunState(config, "damaged", done_epochs, note=f"{metrics_path} is damaged (not a JSON object); "
                            f"{rebuild}", analyses=analyses)
        if metrics.get("config_hash") != config.hash():
            return RunState(config, "damaged", done_epochs, note=f"{metrics_path} belongs to other settings (config "
                            f"hash {metrics.get('config_hash')}, expected {config.hash()}); move {folder} away to "
                            f"train this run", analyses=analyses)
        acc, epochs, seconds = metrics.get("test_acc"), metrics.get("epochs"), metrics.get("train_seconds", 0.0)
        if (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0
                or isinstance(seconds, bool) or not isinstance(seconds, (int, float))):
            return RunState(config, "damaged", done_epochs, note=f"{metrics_path} is damaged (epochs {epochs!r}, "
                            f"train_seconds {seconds!r}); {rebuild}", analyses=analyses)
        record_path = folder / "config.json"
        try:
            record = read_json(record_path, f"restore it, or delete {folder} to retrain this run")
            if not isinstance(record, dict) or record.get("config_hash") != config.hash():
                raise RunFileError(f"{record_path} does not carry this run's config hash {config.hash()}; restore it, "
                                   f"or delete {folder} to retrain this run")
        except OSError:
            return RunState(config, "damaged", done_epochs, note=f"{record_path} is missing or unreadable; restore "
                            f"it, or delete {folder} to retrain this run", analyses=analyses)
        except RunFileError as exc:
            return RunState(config, "damaged", done_epochs, note=str(exc), analyses=analyses)
        acc = float(acc) if (isinstance(acc, (int, float)) and not isinstance(acc, bool)) or acc == "nan" else None
        status = metrics.get("status", "finished")
        note = status if status != "diverged" else f"diverged at epoch {metrics.get('diverged_epoch')}"
        note += f", {float(seconds):.0f} s of training"
        return RunState(config, "done", epochs, acc, note, analyses=analyses)
    holder = read_holder(folder / ".run.owner.json")
    if holder is not None and holder.alive():
        age = time.time() - holder.heartbeat
        return RunState(config, "running", done_epochs, note=f"on {holder.describe()}, heartbeat {age:.0f} s ago",
                        log=str(train_log), analyses=analyses)
    failed, submitted = _record(logs / f"{task}.json"), _record(logs / f"{task}.submitted.json")
    newer_submission = submitted is not None and (failed is None or (logs / f"{task}.submitted.json").stat().st_mtime
                                                  > (logs / f"{task}.json").stat().st_mtime)
    if submitted is not None and newer_submission:
        job, kind = str(submitted.get("job")), submitted.get("executor")
        stderr = submitted.get("stderr")
        if kind == "slurm":
            state = _slurm_state(job)
            if state is None or state in ACTIVE_SLURM_STATES:
                what = f"slurm job {job} submitted {submitted.get('submitted', '?')}" + (f" ({state})" if state else "")
                return RunState(config, "queued", done_epochs, note=what, log=stderr, analyses=analyses)
            return RunState(config, "failed", done_epochs, note=f"slurm job {job} ended {state} without finishing",
                            log=stderr, log_tail=tail(stderr, lines) or tail(train_log, lines), analyses=analyses)
        # submitit-local: the job id is its controller's pid on the submitting host
        import socket

        if submitted.get("host") == socket.gethostname() and job.isdigit() and _pid_alive(int(job)):
            return RunState(config, "queued", done_epochs, note=f"local job {job} starting", log=stderr,
                            analyses=analyses)
        return RunState(config, "failed", done_epochs, note=f"{kind} job {job} ended without finishing", log=stderr,
                        log_tail=tail(stderr, lines) or tail(train_log, lines), analyses=analyses)
    if failed is not None and failed.get("state") == "failed":
        log = failed.get("log") or (str(train_log) if train_log.exists() else None)
        where = f" (on {failed.get('host')} pid {failed.get('pid')}" + (f", job {failed['job']}" if failed.get("job")
                                                                         else "") + ")" if failed.get("host") else ""
        return RunState(config, "failed", done_epochs, note=f"{failed.get('error')}{where}", log=log,
                        log_tail=tail(log, lines), analyses=analyses)
    if holder is not None or done_epochs:
        gone = f"{holder.describe()} is gone; " if holder is not None else ""
        return RunState(config, "interrupted", done_epochs,
                        note=f"{gone}{done_epochs}/{epochs} epochs saved; `leaklib train` resumes it",
                        log=str(train_log) if train_log.exists() else None,
                        log_tail=tail(train_log, lines) if holder is not None else [], analyses=analyses)
    return RunState(config, "not started", analyses=analyses)


def sweep_status(configs: Sequence[Any], results_dir: str | Path = "results", lines: int = 5) -> list[RunState]:
    return [run_state(c, results_dir, lines) for c in configs]


def format_status(states: Sequence[RunState], results_dir: str | Path = "results") -> str:
    """The table ``leaklib status`` prints: one row per run, failed runs with their log's last lines."""
    if not states:
        return "no runs"
    first = states[0].config
    where = Path(results_dir) / first.profile.name / first.variant()
    out = [f"profile {first.profile.name}, settings {first.variant()} ({where}), {len(states)} run(s)",
           f"{'dataset':<8} {'tau_m':>9} {'seed':>4}  {'state':<11} {'epochs':>7} {'test acc':>8}  note"]
    for s in states:
        c = s.config
        acc = "" if s.test_acc is None or math.isnan(s.test_acc) else f"{s.test_acc:.4f}"
        epochs = f"{s.epochs_done}/{c.profile.epochs}"
        extra = f" [analyses: {', '.join(s.analyses)}]" if s.analyses else ""
        out.append(f"{c.dataset:<8} {format_tau(c.tau_m):>9} {c.seed:>4}  {s.state:<11} {epochs:>7} {acc:>8}  "
                   f"{s.note}{extra}")
        if s.state == "failed" and s.log:
            out.append(f"    log: {s.log}")
        for line in s.log_tail:
            out.append(f"    | {line}")
    counts = {k: sum(s.state == k for s in states) for k in STATES}
    out.append("summary: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return "\n".join(out)
