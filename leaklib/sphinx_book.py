"""Sphinx extension for ``jupyter-book build book/``: the chapters executed as ``leaklib book run`` does.

Listed under ``sphinx.extra_extensions`` in ``_config.yml``. With ``execute_notebooks: cache``
Jupyter Book (myst-nb) executes each chapter with its default parameters and keeps the executed
notebook in jupyter-cache (``book/_build/.jupyter_cache``), keyed by the code of its cells. This
extension adds what ``leaklib book run`` does around an execution:

* **The same reuse rule.** A chapter is executed again when its code, its parameters (the profile,
  e.g. ``$LEAKLIB_PROFILE``, and the resolved folders and device), leaklib's code or an upstream
  chapter changed, or when the figures it wrote are gone; otherwise nothing is executed (jupyter-cache
  alone would miss a change to leaklib or upstream, and Sphinx would not even re-read the page).
  The record of each execution is ``<cache>/leaklib/<chapter>.json``.
* **The same page.** The "This page was executed with" note becomes the output of the folded
  ``parameters`` cell, as ``leaklib book run`` shows it; it is cached with the outputs.
* **Progress and the kernel transport** of ``leaklib.bookexec``: a status line with the running cell
  and training run, the kernel over IPC.
* ``$LEAKLIB_ROOT`` is set to the folder above ``book/`` for the kernels (unless set), so that the
  chapters find ``results/`` and ``figures/`` there (``leaklib.paths``).

myst-nb offers no hook around its notebook client, so the extension wraps two of its functions
(``single_nb_execution`` as myst-nb's execution modules call it, and their ``start_client``, which
knows the notebook's path); with a myst-nb that lacks them it says so once and leaves execution to
myst-nb alone. Under ``leaklib book run`` (execution off) it does nothing.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import book
from .paths import PROFILE_ENV, ROOT_ENV, chapter_dirs, is_repo_root

__all__ = ["setup", "Plan", "plan_chapters", "parameters_of", "attach_note_keeping_key"]

RECORD_DIR = "leaklib"


@dataclass
class Plan:
    """One chapter as this build would execute it."""

    docname: str
    number: int
    path: Path
    key: str
    parameters: dict[str, Any]
    resolved_device: str
    kernel: str


_state: dict[str, Any] = {"active": False, "app": None, "plans": {}, "path": None, "warned": False}


# --------------------------------------------------------------------------- planning

def parameters_of(nb: Any) -> dict[str, Any] | None:
    """A chapter's default parameters: its ``parameters`` cell run here (in this process, with this
    environment, as the kernel will run it), the folders made absolute as the chapter makes them."""
    cell = next((c for c in nb.cells if c.get("cell_type") == "code"
                 and "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return None
    namespace: dict[str, Any] = {"__name__": "__leaklib_parameters__"}
    try:
        exec(compile(cell.source, "<parameters cell>", "exec"), namespace)  # noqa: S102 - the book's own cell
        profile = str(namespace["profile"])
        results_dir, figures_dir = chapter_dirs(namespace.get("results_dir", "results"),
                                                namespace.get("figures_dir", ""), profile)
    except Exception:  # noqa: BLE001 - not one of the book's chapters: myst-nb's rules alone
        return None
    return {"profile": profile, "device": str(namespace.get("device", "auto")),
            "results_dir": results_dir, "figures_dir": figures_dir}


def code_key(nb: Any, parameters: dict[str, Any], resolved_device: str, kernel: str, code: str,
             upstream: list[str]) -> str:
    """Hash of what a chapter's outputs depend on: its code cells (markdown is re-rendered without
    execution, as jupyter-cache does), its parameters, leaklib's code and the upstream chapters."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            h.update(cell.source.encode() + b"\0")
    h.update(json.dumps(dict(parameters, resolved_device=resolved_device), sort_keys=True).encode())
    h.update(kernel.encode())
    h.update(code.encode())
    for key in upstream:
        h.update(key.encode())
    return h.hexdigest()


def plan_chapters(srcdir: Path, code: str | None = None) -> list[Plan]:
    """The chapters under ``srcdir`` in dependency order, with their keys (upstream chained)."""
    import nbformat

    code = book.package_hash() if code is None else code
    plans, upstream = [], []
    for n, chapter in enumerate(book.CHAPTERS):
        path = srcdir / f"{chapter}.ipynb"
        if not path.is_file():
            continue
        nb = nbformat.read(path, as_version=4)
        parameters = parameters_of(nb)
        if parameters is None:
            continue
        resolved = book.resolve_device(parameters["device"])
        kernel = str(nb.metadata.get("kernelspec", {}).get("name", "python3"))
        key = code_key(nb, parameters, resolved, kernel, code, upstream)
        upstream.append(key)
        plans.append(Plan(chapter, n + 1, path, key, parameters, resolved, kernel))
    return plans


def record_path(cache_path: Path, docname: str) -> Path:
    return cache_path / RECORD_DIR / f"{docname}.json"


def stale_reason(plan: Plan, cache_path: Path) -> str:
    """Why ``plan``'s chapter must be executed again ('' if its cached execution is still valid)."""
    try:
        record = json.loads(record_path(cache_path, plan.docname).read_text())
    except (OSError, ValueError):
        return "not executed yet by this build"
    if record.get("key") != plan.key:
        return "its code, its parameters, leaklib or an upstream chapter changed"
    missing = [f for f in record.get("figures", []) if not Path(f).is_file()]
    if missing:
        return f"{len(missing)} of its figures are gone (e.g. {Path(missing[0]).name})"
    return ""


def _forget(cache_path: Path, path: Path) -> bool:
    """Remove the jupyter-cache record of the notebook at ``path`` (so that myst-nb executes it)."""
    if not cache_path.exists():
        return False
    import nbformat
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_path))
    try:
        record = cache.match_cache_notebook(nbformat.read(path, as_version=4))
    except KeyError:
        return False
    cache.remove_cache(record.pk)
    return True


def attach_note_keeping_key(nb: Any, note: str, metadata: list[Any] | None = None) -> None:
    """``book.attach_note``, with every code cell's metadata left as in the source (``metadata``, one
    per code cell; default: as it is now).

    myst-nb caches the executed notebook under jupyter-cache's hash of its code cells, sources and
    metadata included, and looks a page up by the hash of the source notebook. A tag added by the
    note would make the two differ: every page Sphinx reads again (its file is newer, after a
    checkout or a markdown edit; a changed configuration) would miss the cache and be executed again.
    """
    code = [c for c in nb.cells if c.get("cell_type") == "code"]
    if metadata is None:
        metadata = [copy.deepcopy(c.get("metadata", {})) for c in code]
    book.attach_note(nb, note)
    code = [c for c in nb.cells if c.get("cell_type") == "code"]
    if len(code) == len(metadata):
        for cell, meta in zip(code, metadata):
            cell["metadata"] = meta


# --------------------------------------------------------------------------- Sphinx events

def _logger() -> Any:
    from sphinx.util import logging

    return logging.getLogger(__name__)


def _cache_path(app: Any) -> Path:
    return Path(app.env.mystnb_config.execution_cache_path)


def _builder_inited(app: Any) -> None:
    _state.update(active=False, app=app, plans={}, path=None)
    config = getattr(app.env, "mystnb_config", None)
    if config is None or config.execution_mode in ("off", "inline"):
        return
    if not _install():
        return
    root = Path(app.srcdir).resolve().parent
    if ROOT_ENV not in os.environ and is_repo_root(root):
        os.environ[ROOT_ENV] = str(root)  # inherited by the kernels
    _state["active"] = True
    profile = os.environ.get(PROFILE_ENV)
    if profile:
        _logger().info(f"[leaklib] {PROFILE_ENV}={profile}: chapters default to profile {profile}")


def _env_get_outdated(app: Any, env: Any, added: set[str], changed: set[str], removed: set[str]) -> list[str]:
    if not _state["active"]:
        return []
    plans = plan_chapters(Path(app.srcdir))
    _state["plans"] = {p.docname: p for p in plans}
    if env.mystnb_config.execution_mode != "cache":
        return []
    cache_path = _cache_path(app)
    outdated = []
    for plan in plans:
        reason = stale_reason(plan, cache_path)
        if not reason:
            continue
        forgot = _forget(cache_path, plan.path)
        if forgot or plan.docname not in added:
            _logger().info(f"[leaklib] {plan.docname} will be executed: {reason}")
        outdated.append(plan.docname)
    return outdated


# --------------------------------------------------------------------------- around myst-nb's execution

_ORIGINAL: dict[str, Any] = {}


def _install() -> bool:
    """Wrap myst-nb's execution (idempotent); False, with one warning, if myst-nb changed shape."""
    if _ORIGINAL:
        return True
    try:
        from jupyter_cache.executors import utils as jc_utils
        from myst_nb.core.execute import cache as nb_cache
        from myst_nb.core.execute import direct as nb_direct

        clients = (nb_cache.NotebookClientCache, nb_direct.NotebookClientDirect)
        modules = (nb_cache, nb_direct)
        assert all(m.single_nb_execution is jc_utils.single_nb_execution for m in modules)
        assert all(callable(getattr(c, "start_client", None)) for c in clients)
    except (ImportError, AttributeError, AssertionError):
        if not _state["warned"]:
            _logger().warning("[leaklib] this myst-nb has no single_nb_execution/start_client to wrap: "
                              "chapters run without leaklib's reuse rule, note and progress line")
            _state["warned"] = True
        return False
    _ORIGINAL["execute"] = jc_utils.single_nb_execution
    for module in modules:
        module.single_nb_execution = _execute
    for client in clients:
        original = client.start_client

        def start_client(self: Any, _original: Any = original) -> Any:
            _state["path"] = self.path
            try:
                return _original(self)
            finally:
                _state["path"] = None

        client.start_client = start_client
    return True


def _execute(nb: Any, cwd: str | None, timeout: int | None, allow_errors: bool, meta_override: bool = True,
             record_timing: bool = False, **kwargs: Any) -> Any:
    """myst-nb's ``single_nb_execution`` with the IPC kernel, a progress line, and for a chapter of
    the book the note and the record of the execution."""
    from leaklib import __version__

    from . import bookexec

    original = _ORIGINAL["execute"]
    if not _state["active"]:
        return original(nb, cwd, timeout, allow_errors, meta_override, record_timing, **kwargs)
    app, path = _state["app"], _state["path"]
    docname = Path(path).stem if path is not None else "notebook"
    plan = _state["plans"].get(docname) if path is not None else None
    if plan is not None and Path(path).resolve() != plan.path.resolve():
        plan = None
    prefix = f"[book] {plan.number}/{len(book.CHAPTERS)} {docname}" if plan else f"[book] {docname}"
    figures_dir = Path(plan.parameters["figures_dir"]) if plan else None
    before = book._snapshot(figures_dir) if figures_dir else {}
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    params = plan.parameters if plan else {}
    metadata = [copy.deepcopy(c.get("metadata", {})) for c in nb.cells if c.get("cell_type") == "code"]
    with bookexec.chapter_progress(prefix, bookexec.code_cell_count(nb), params.get("results_dir"),
                                   params.get("profile")) as progress:
        result = original(nb, cwd, timeout, allow_errors, meta_override, record_timing,
                          **{**bookexec.client_kwargs(progress), **kwargs})
    if result.err is not None or plan is None:
        return result
    after = book._snapshot(figures_dir) if figures_dir else {}
    figures = sorted(p for p, m in after.items() if before.get(p) != m)
    root = Path(app.srcdir).resolve().parent
    note = book.executed_note(plan.parameters["profile"], plan.parameters["device"], plan.resolved_device,
                              when, book.git_commit(root), __version__, result.time)
    attach_note_keeping_key(nb, note, metadata)
    if app.env.mystnb_config.execution_mode == "cache":
        from .runs import atomic_write_json

        atomic_write_json(record_path(_cache_path(app), docname), {
            "key": plan.key, "executed_at": when, "seconds": round(result.time, 2), "figures": figures,
            **plan.parameters, "resolved_device": plan.resolved_device, "leaklib": __version__})
    return result


def setup(app: Any) -> dict[str, Any]:
    from leaklib import __version__

    app.connect("builder-inited", _builder_inited, priority=900)  # after myst-nb's (500)
    app.connect("env-get-outdated", _env_get_outdated)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
