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
    "read_json",
    "read_jsonl",
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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`atomic_write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict]:
    """All records of a JSON-lines file (empty list if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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
