"""Results are data: run folders, atomic writes, config hashes, versions and the git commit.

Layout: ``<results>/<profile>/<variant>/<dataset>/tau-<tau_m>/seed-<seed>/`` holding ``config.json``,
``history.jsonl``, ``checkpoint.pt`` and ``metrics.json``; ``<variant>`` is a short hash of the
sweep's settings (the design note's layout had no such level, and two settings shared a folder).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "run_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "remove_stale_temporaries",
    "read_json",
    "read_jsonl",
    "RunFileError",
    "load_checkpoint",
    "checkpoint_intact",
    "checked_history",
    "config_hash",
    "git_commit",
    "environment_info",
]


def run_dir(results_dir: str | os.PathLike[str], profile: str, dataset: str, tau_m: float, seed: int,
            variant: str) -> Path:
    """``<results>/<profile>/<variant>/<dataset>/tau-<tau_m>/seed-<seed>`` (tau_m written exactly, 'inf' for IF).

    ``variant`` names the sweep's settings (:meth:`leaklib.train.RunConfig.variant`), so runs of
    different settings never share a folder and switching settings back and forth reuses both.
    """
    from .profiles import format_tau

    if not variant or "/" in variant or variant.startswith("."):
        raise ValueError(f"bad variant name {variant!r}")
    return Path(results_dir) / profile / variant / dataset / f"tau-{format_tau(tau_m)}" / f"seed-{seed}"


def _process_umask() -> int:
    """This process's umask, read without changing it where Linux says it (os.umask sets it to read it)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Mode of the files written here: what ``open(path, "w")`` would give (mkstemp's own is 0600, which
#: made results unreadable to the group sharing a results folder).
FILE_MODE = 0o666 & ~_process_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: never half-written.

    The file gets the mode a plain ``open`` would give it (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temporaries(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Delete the temporary files :func:`atomic_write_bytes` left in ``folder`` when its process was killed
    mid-write (``.<file>.<random>.tmp``; only those of ``name`` when given). Call it only while holding
    the folder's (or the file's) lock, so that no live write is removed; returns what was removed."""
    removed = []
    pattern = f".{name}.*.tmp" if name else ".*.tmp"
    for path in Path(folder).glob(pattern):
        if ".owner.json." in path.name:  # a lock's owner record, refreshed by a live heartbeat thread
            continue
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomic text write (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _jsonable(value.item())
    return value


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomic, strict JSON (infinities written as the strings 'inf'/'-inf', NaN as 'nan')."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` through a temporary file and ``os.replace``."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


class RunFileError(ValueError):
    """A results file is unreadable or inconsistent. The message is one line: the file, what is
    wrong with it and what to do."""


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_json(path: str | os.PathLike[str], remedy: str = "delete it to recompute it, or restore it") -> Any:
    """Read a JSON file written by :func:`atomic_write_json`.

    A corrupt file raises :class:`RunFileError` naming it and ``remedy``; a missing one raises
    FileNotFoundError as usual.
    """
    path = Path(path)
    text = path.read_bytes()
    try:
        return json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise RunFileError(f"{path} is not UTF-8 text (corrupt?); {remedy}") from None
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}"
                           f"{', the file is empty' if not text.strip() else ''}); {remedy}") from None


def read_jsonl(path: str | os.PathLike[str], remedy: str = "delete it to recompute it, or restore it") -> list[dict]:
    """All records of a JSON-lines file (empty list if it does not exist); a corrupt line raises
    :class:`RunFileError` naming the file, the line and ``remedy``."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise RunFileError(f"{path} is not UTF-8 text (corrupt?); {remedy}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunFileError(f"{path} line {number} is not valid JSON ({exc.msg}); {remedy}") from None
        if not isinstance(record, dict):
            raise RunFileError(f"{path} line {number} is not a JSON object; {remedy}")
        records.append(record)
    return records


def checked_history(path: str | os.PathLike[str], epochs: int, remedy: str) -> list[dict]:
    """The first ``epochs`` records of a run's history.jsonl, which must be epochs 1..``epochs`` in order.

    Fewer records than ``epochs`` (the history lost epochs that the checkpoint or metrics count) or
    records out of order raise :class:`RunFileError` naming the file and ``remedy``; records past
    ``epochs`` (an epoch written just before a kill, whose checkpoint was not) are dropped.
    """
    history = read_jsonl(path, remedy)
    if len(history) < epochs:
        raise RunFileError(f"{path} has {len(history)} epoch(s) but the run's checkpoint/metrics count {epochs}; "
                           f"{remedy}")
    numbers = [h.get("epoch") for h in history[:epochs]]
    if numbers != list(range(1, epochs + 1)):
        raise RunFileError(f"{path} does not list epochs 1..{epochs} in order (found {numbers[:6]}...); {remedy}")
    return history[:epochs]


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu",
                    remedy: str = "delete it to retrain this run from scratch, or restore it") -> dict:
    """``torch.load`` a checkpoint; an unreadable one raises :class:`RunFileError` naming it and ``remedy``."""
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated zip, bit rot, not a torch file, ...
        raise RunFileError(f"{path} is unreadable (truncated? {_one_line(exc, 80)}); {remedy}") from None
    if not isinstance(state, dict) or not {"config_hash", "epoch", "model"} <= set(state):
        raise RunFileError(f"{path} is not a leaklib checkpoint (no config hash, epoch or model); {remedy}")
    return state


def checkpoint_intact(path: str | os.PathLike[str]) -> bool:
    """Cheap check that a ``torch.save`` file is complete: its zip directory reads and lists a pickle.

    Catches the usual damage (a truncated or emptied file) without loading the tensors.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def jsonl_text(records: Iterable[dict]) -> str:
    """JSON-lines text of ``records``."""
    return "".join(json.dumps(_jsonable(r), sort_keys=True, allow_nan=False) + "\n" for r in records)


def config_hash(config: dict) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of ``config``."""
    canonical = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def git_commit(cwd: str | os.PathLike[str] | None = None, short: bool = False) -> str:
    """Commit of the git tree at ``cwd`` (default: leaklib's source tree), with '-dirty' when tracked
    files differ, or 'unknown' outside git; ``short`` abbreviates the hash."""
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    rev = ["git", "rev-parse"] + (["--short"] if short else []) + ["HEAD"]
    try:
        commit = subprocess.run(rev, cwd=where, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def environment_info() -> dict[str, str]:
    """Versions of Python and the numerical stack, the machine, and the git commit."""
    import numpy
    import scipy
    import torch

    from . import __version__

    return {
        "leaklib": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda or "none",
        "git_commit": git_commit(),
    }
