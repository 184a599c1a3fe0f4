"""The book pipeline: execute every chapter with papermill, then render HTML with Jupyter Book.

``leaklib book run`` stages a build tree (``_build/src``: a copy of ``book/``'s pages with the
top-level ``_config.yml`` and ``_toc.yml``, the same layout as ``book/`` itself, where those two are
symlinks), executes each chapter there in dependency order with the injected parameters
``profile``, ``device``, ``results_dir`` and ``figures_dir``, drops papermill's raw
``injected-parameters`` cell, shows a short "this page was executed with" note as the output of the
(folded) ``parameters`` cell, and builds the HTML into ``_build/html`` with Jupyter Book's own
execution switched off. The tracked notebooks under ``book/`` are never written to.

A chapter whose source, parameters, package code and upstream chapters are unchanged since its
last execution, and whose figures are still on disk, is not executed again (``--force`` does).

``jupyter-book build book/`` is the other route to the same pages: Jupyter Book executes the chapters
itself with their default parameters (``execute_notebooks: cache``), helped by ``leaklib.sphinx_book``
(the same reuse rule, note, progress line and kernel transport as here).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import profiles as _profiles
from . import runs

#: Chapter stems in dependency order (the notebooks are ``book/<stem>.ipynb``).
CHAPTERS: tuple[str, ...] = (
    "01_neurons_and_coherence",
    "02_training",
    "03_robustness",
    "04_spectrum",
    "05_generalization",
    "06_sparsity",
    "07_claims",
    "08_training_semantics",
)

#: The profiles a book can be run with: every profile of :mod:`leaklib.profiles` (the one place they live).
PROFILES: tuple[str, ...] = tuple(_profiles.PROFILES)
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
#: Extra (non-chapter) files of the book, copied into the stage as they are.
BOOK_SUFFIXES: tuple[str, ...] = (".md", ".bib", ".png", ".svg", ".jpg", ".css")
#: Tag added to the ``parameters`` cell whose output is the "executed with" note.
NOTE_TAG = "executed-with"
#: Tag folding the ``parameters`` cell's source in the HTML (its output, the note, stays visible).
HIDE_TAG = "hide-input"
#: Files of ``book/`` that are not pages: Jupyter Book's configuration (symlinks to the top level).
CONFIG_FILES: tuple[str, ...] = ("_config.yml", "_toc.yml")
#: Notebook metadata key holding the runner's record of an execution.
META_KEY = "leaklib_book"
#: A figure stem named after the paper: fig2_coherence, fig5d_sse, table1_..., eq4_...
FIGURE_NAME = re.compile(r"^(fig|table|eq)\d+[a-z0-9]*(_[a-z0-9]+)*$")
STRICT_FLAGS = "-W -n --keep-going"

GPU_HINT = "GPU users run: leaklib book run --profile paper --device cuda"


class ChapterError(RuntimeError):
    """A chapter raised while it was executed."""

    def __init__(self, chapter: str, cell: int | None, exec_count: int | None, ename: str,
                 evalue: str, notebook: Path | None = None) -> None:
        self.chapter, self.cell, self.exec_count = chapter, cell, exec_count
        self.ename, self.evalue, self.notebook = ename, evalue, notebook
        super().__init__(self.message())

    def message(self) -> str:
        """``chapter 03_robustness failed in cell 4 (In [5]): ValueError: boom``."""
        where = "" if self.cell is None else f" in cell {self.cell}"
        if self.exec_count is not None:
            where += f" (In [{self.exec_count}])"
        return f"chapter {self.chapter} failed{where}: {self.ename}: {self.evalue}"


@dataclass
class ChapterResult:
    """What happened to one chapter in a run."""

    chapter: str
    status: str  # "executed", "reused", "missing"
    seconds: float = 0.0
    figures: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- chapter selection

def normalize_chapter(name: str) -> str:
    """Map ``03``, ``3``, ``03_robustness``, ``book/03_robustness.ipynb`` to ``03_robustness``."""
    stem = Path(name).name
    if stem.endswith(".ipynb"):
        stem = stem[: -len(".ipynb")]
    if stem.isdigit():
        matches = [c for c in CHAPTERS if c.split("_", 1)[0] == f"{int(stem):02d}"]
    else:
        matches = [c for c in CHAPTERS if c == stem or c.split("_", 1)[1] == stem]
    if len(matches) != 1:
        raise ValueError(f"unknown chapter {name!r}; chapters are: {', '.join(CHAPTERS)}")
    return matches[0]


def select_chapters(book_dir: Path, requested: Sequence[str] | None,
                    say: Callable[[str], None] = print) -> list[str]:
    """Chapters to run, in dependency order.

    With ``requested`` empty: every chapter whose notebook exists (a missing one is reported with
    one line). A requested chapter that does not exist raises ``FileNotFoundError``.
    """
    if requested:
        wanted = {normalize_chapter(r) for r in requested}
        missing = [c for c in CHAPTERS if c in wanted and not (book_dir / f"{c}.ipynb").is_file()]
        if missing:
            raise FileNotFoundError(
                "requested chapter(s) not found: " + ", ".join(str(book_dir / f"{c}.ipynb") for c in missing))
        return [c for c in CHAPTERS if c in wanted]
    chosen = []
    for chapter in CHAPTERS:
        if (book_dir / f"{chapter}.ipynb").is_file():
            chosen.append(chapter)
        else:
            say(f"[book] skip {chapter}: book/{chapter}.ipynb does not exist yet")
    return chosen


# --------------------------------------------------------------------------- staging

def stage_dir(build_dir: str | os.PathLike[str]) -> Path:
    """Where ``leaklib book run`` stages the pages and the executed chapters: ``<build_dir>/src`` (flat, as ``book/``)."""
    return Path(build_dir) / "src"


def stage_sources(root: Path, stage: Path) -> None:
    """Copy ``_config.yml`` and ``book/``'s non-notebook files into ``stage`` (``book/x.md`` becomes
    ``stage/x.md``, as Jupyter Book sees ``book/``); ``write_staged_toc`` writes ``stage/_toc.yml``.

    Executed notebooks already in ``stage`` are kept (they are the cache), except those whose source
    notebook no longer exists. A stage of the older layout (pages under ``stage/book/``) is removed.
    """
    for name in CONFIG_FILES:
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root / name} is missing")
    if (stage / "book").is_dir() and not (stage / "book").is_symlink():
        shutil.rmtree(stage / "book")
    stage.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "_config.yml", stage / "_config.yml")
    for src in sorted((root / "book").rglob("*")):
        rel = src.relative_to(root / "book")
        if src.is_dir() or rel.as_posix() in CONFIG_FILES or any(p.startswith(("_build", ".")) for p in rel.parts):
            continue
        if src.suffix in BOOK_SUFFIXES:
            dst = stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for old in stage.glob("*.ipynb"):
        if not (root / "book" / old.name).is_file():
            old.unlink()


def _filter_toc(node: Any, exists: Callable[[str], bool], dropped: list[str]) -> Any:
    """Copy of a toc node without ``file`` entries that do not exist and without emptied lists."""
    if isinstance(node, list):
        kept = [_filter_toc(item, exists, dropped) for item in node]
        return [k for k in kept if k is not None]
    if isinstance(node, dict):
        if "file" in node and not exists(str(node["file"])):
            dropped.append(Path(str(node["file"])).name)
            return None
        out = {}
        for key, value in node.items():
            value = _filter_toc(value, exists, dropped)
            if isinstance(value, list) and not value and key in ("chapters", "sections", "parts"):
                continue
            out[key] = value
        if "file" not in out and not any(k in out for k in ("chapters", "sections", "parts", "url", "glob", "root")):
            return None  # a part whose chapters were all dropped
        return out
    return node


def write_staged_toc(root: Path, stage: Path, say: Callable[[str], None] = print) -> list[str]:
    """Write ``stage/_toc.yml``: the top-level toc without the entries whose file is not staged.

    Returns the stems of the dropped entries; a part left without chapters is dropped too.
    """
    import yaml

    def exists(rel: str) -> bool:
        return any((stage / f"{rel}{ext}").is_file() for ext in ("", ".md", ".ipynb"))

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    if not exists(str(toc.get("root", ""))):
        raise FileNotFoundError(f"the toc's root {toc.get('root')!r} is not in {stage}")
    dropped: list[str] = []
    filtered = _filter_toc(toc, exists, dropped)
    (stage / "_toc.yml").write_text(
        "# Written by leaklib.book from the top-level _toc.yml; do not edit.\n"
        + yaml.safe_dump(filtered, sort_keys=False))
    if dropped:
        say(f"[book] not in this build (not executed here): {', '.join(dropped)}")
        unlink_dropped(stage, dropped)
    return dropped


def unlink_dropped(stage: Path, dropped: Sequence[str]) -> int:
    """In the staged pages (markdown files and notebooks' markdown cells), turn ``{doc}`` links to
    dropped chapters into plain text.

    A partial build (``--chapters 01``, or chapters not written yet) thus has no broken
    cross-reference; returns the number of links rewritten.
    """
    import nbformat

    names = "|".join(re.escape(d) for d in dropped)
    pattern = re.compile(r"\{doc\}`(?:[^`<]*<)?(?:\.?/)?(?:book/)?(" + names + r")>?`")
    count = 0
    for md in stage.rglob("*.md"):
        text, n = pattern.subn(r"`\1` (not in this build)", md.read_text())
        if n:
            md.write_text(text)
            count += n
    for path in stage.rglob("*.ipynb"):
        if not pattern.search(path.read_text()):
            continue
        nb = nbformat.read(path, as_version=4)
        changed = 0
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source, n = pattern.subn(r"`\1` (not in this build)", cell.source)
                changed += n
        if changed:
            nbformat.write(nb, path)
            count += changed
    return count


# --------------------------------------------------------------------------- provenance

def git_commit(root: Path) -> str:
    """Short commit of ``root``, with ``-dirty`` when tracked files differ; ``unknown`` without git."""
    return runs.git_commit(root, short=True)


def package_hash() -> str:
    """SHA-256 over leaklib's Python sources: a chapter is re-executed when the science changes."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for path in sorted(pkg.rglob("*.py")):
        h.update(str(path.relative_to(pkg)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def resolve_device(device: str) -> str:
    """What ``auto`` means on this machine (``cuda`` if torch sees a GPU, else ``cpu``)."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def execution_key(source: Path, parameters: dict[str, Any], upstream: Sequence[str], code: str,
                  kernel: str) -> str:
    """Hash deciding whether a staged executed chapter is still valid."""
    h = hashlib.sha256()
    h.update(source.read_bytes())
    h.update(json.dumps(parameters, sort_keys=True).encode())
    h.update(kernel.encode())
    h.update(code.encode())
    for key in upstream:
        h.update(key.encode())
    return h.hexdigest()


def cached_record(executed: Path, key: str) -> dict[str, Any] | None:
    """The runner's record in ``executed`` if it matches ``key`` and its figures still exist."""
    if not executed.is_file():
        return None
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable stage file is simply not a cache hit
        return None
    record = nb.metadata.get(META_KEY)
    if not record or record.get("key") != key:
        return None
    if not all(Path(f).is_file() for f in record.get("figures", [])):
        return None
    return dict(record)


# --------------------------------------------------------------------------- notebook surgery

def executed_note(profile: str, device: str, resolved: str, when: str, commit: str,
                  version: str, seconds: float | None = None, overrides: dict[str, Any] | None = None) -> str:
    """Markdown admonition shown at the top of an executed chapter (the ``parameters`` cell's output).

    ``overrides``: the profile settings changed for this run (``--set``), named so that a page never
    passes for its profile's defaults.
    """
    dev = device if device == resolved else f"{device} → {resolved}"
    took = "" if seconds is None else f" in {seconds:.0f} s"
    changed = (" with settings changed (`--set " + " ".join(f"{k}={v}" for k, v in overrides.items()) + "`)"
               if overrides else "")
    return (
        "```{admonition} This page was executed with\n"
        ":class: note\n"
        f"profile **{profile}**{changed}, device **{dev}**, on {when}{took}, "
        f"git commit `{commit}`, leaklib {version}. "
        "Rerun it with `jupyter-book build book/` (default profile) or "
        f"`leaklib book run --profile <{'|'.join(PROFILES)}>`.\n"
        "```"
    )


def note_output(note: str) -> Any:
    """The note as a ``display_data`` output (MyST markdown, rendered by myst-nb)."""
    import nbformat

    plain = note.splitlines()[2] if note.count("\n") >= 2 else note
    return nbformat.v4.new_output("display_data", data={"text/markdown": note, "text/plain": plain})


def attach_note(nb: Any, note: str) -> bool:
    """Show ``note`` as the output of the ``parameters`` cell and drop papermill's injected cell.

    The ``parameters`` cell keeps its source (it documents the defaults), folded in the HTML
    (``hide-input``), and is tagged ``executed-with``. Both routes to the book do this, so that their
    pages look the same; a notebook without a ``parameters`` cell gets the note as a markdown cell
    where papermill injected its parameters. Returns True if an injected-parameters cell was found.
    """
    import nbformat

    def tags(cell: Any) -> list[str]:
        return list(cell.get("metadata", {}).get("tags", []))

    params = next((c for c in nb.cells if c.get("cell_type") == "code" and "parameters" in tags(c)), None)
    found = False
    kept = []
    for cell in nb.cells:
        if "injected-parameters" not in tags(cell):
            kept.append(cell)
            continue
        found = True
        if params is None:
            new = nbformat.v4.new_markdown_cell(note)
            new.metadata["tags"] = [NOTE_TAG]
            if "id" in cell:
                new["id"] = cell["id"]
            kept.append(new)
    nb.cells = kept
    if params is not None:
        keep = [t for t in tags(params) if t != "hide-cell"]
        params.metadata["tags"] = keep + [t for t in (HIDE_TAG, NOTE_TAG) if t not in keep]
        params.outputs = [note_output(note)]
    return found


def _chapter_error(chapter: str, exc: Exception, nb_path: Path) -> ChapterError:
    """Turn papermill's execution error into a ChapterError with the source notebook's cell number."""
    import nbformat

    cell_index = getattr(exc, "cell_index", None)
    cell = None
    if cell_index is not None:
        try:
            nb = nbformat.read(nb_path, as_version=4)
            # papermill numbers cells before it inserts its own error banners
            cells = [c for c in nb.cells
                     if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
            before = cells[:cell_index]
            injected = sum("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in before)
            cell = cell_index - injected + 1  # 1-based, counted in book/<chapter>.ipynb
        except Exception:  # noqa: BLE001
            cell = cell_index + 1
    return ChapterError(chapter, cell, getattr(exc, "exec_count", None),
                        getattr(exc, "ename", type(exc).__name__),
                        str(getattr(exc, "evalue", exc)), nb_path)


def _snapshot(directory: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in directory.glob("*") if p.is_file()} if directory.is_dir() else {}


def execute_chapter(chapter: str, source: Path, target: Path, parameters: dict[str, Any], *,
                    kernel: str = "python3", cwd: Path | None = None, prefix: str | None = None,
                    stream: Any = None) -> float:
    """Execute ``source`` into ``target`` with papermill; return the seconds it took.

    The kernel runs over IPC (``leaklib.bookexec``). With ``prefix``, a status line on ``stream``
    (default stdout) shows the running cell and the training run being trained, if any.
    On failure the partly executed notebook is left as ``<target>.failed.ipynb`` and
    ``ChapterError`` names the chapter, the cell (counted in ``source``) and the error.
    """
    import nbformat
    import papermill as pm

    from . import bookexec

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.running.ipynb")
    total = None
    if prefix is not None:
        with contextlib.suppress(Exception):  # an unreadable notebook fails in papermill, with its message
            total = bookexec.code_cell_count(nbformat.read(source, as_version=4)) + bool(parameters)
    progress = (bookexec.chapter_progress(prefix, total, parameters.get("results_dir"),
                                          parameters.get("profile"), stream=stream,
                                          overrides=parameters.get("overrides"))
                if prefix is not None else contextlib.nullcontext(None))
    t0 = time.perf_counter()
    try:
        with progress as shown:
            pm.execute_notebook(str(source), str(tmp), parameters=parameters, kernel_name=kernel,
                                cwd=str(cwd or source.parent), progress_bar=False, log_output=False,
                                **bookexec.client_kwargs(shown))
    except pm.PapermillExecutionError as exc:
        failed = target.with_name(f"{target.stem}.failed.ipynb")
        os.replace(tmp, failed)
        raise _chapter_error(chapter, exc, failed) from None
    except Exception as exc:  # kernel died or missing, notebook unreadable, ...
        text = str(exc).strip()
        raise ChapterError(chapter, None, None, type(exc).__name__,
                           text.splitlines()[-1] if text else "") from exc
    os.replace(tmp, target)
    return time.perf_counter() - t0


def finalize_notebook(path: Path, note: str, record: dict[str, Any]) -> None:
    """Attach ``note`` to the executed notebook ``path`` (``attach_note``); store ``record``."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if not attach_note(nb, note):
        raise ValueError(f"{path} has no injected-parameters cell; was it executed by papermill?")
    nb.metadata[META_KEY] = record
    nbformat.write(nb, path)


# --------------------------------------------------------------------------- figures

def check_figures(figures_dir: Path) -> list[str]:
    """Problems with the saved figures: a name not after the paper, or a PNG without SVG/PDF twin."""
    problems = []
    if not figures_dir.is_dir():
        return problems
    for png in sorted(figures_dir.glob("*.png")):
        if not FIGURE_NAME.match(png.stem):
            problems.append(f"{png.name}: name is not after the paper (e.g. fig2_coherence.png)")
        if not (png.with_suffix(".svg").is_file() or png.with_suffix(".pdf").is_file()):
            problems.append(f"{png.name}: no {png.stem}.svg or {png.stem}.pdf beside it")
    return problems


# --------------------------------------------------------------------------- HTML

def build_html(stage: Path, html_dir: Path, *, strict: bool = False, quiet: bool = True) -> int:
    """Render ``stage`` with Jupyter Book 1 into ``html_dir``; return the Sphinx exit code.

    Equivalent to ``jupyter-book build <stage>`` (plus ``-W -n --keep-going`` when ``strict``),
    except that the HTML goes to ``html_dir`` instead of ``<stage>/_build/html`` and that Jupyter
    Book's own execution is off: the staged chapters were executed by papermill, with parameters,
    and ``execute_notebooks: cache`` in ``_config.yml`` (for ``jupyter-book build book/``) would
    execute them again with their defaults.
    """
    import warnings

    from jupyter_book.sphinx import build_sphinx

    # the same overrides as jupyter_book.cli.main.build, and no execution
    overrides: dict[str, Any] = {"external_toc_path": (stage / "_toc.yml").resolve().as_posix(),
                                 "latex_individualpages": False, "nb_execution_mode": "off"}
    if strict:
        overrides["nitpicky"] = True
    with warnings.catch_warnings():
        # sphinx-external-toc looks through every live object (gc) for Sphinx's toctree collector
        # and so touches torch's deprecated module attributes, which warn: torch is loaded here.
        warnings.filterwarnings("ignore", category=FutureWarning, module="sphinx_external_toc")
        result = build_sphinx(stage.resolve(), html_dir.resolve(), noconfig=True,
                              path_config=str((stage / "_config.yml").resolve()), confoverrides=overrides,
                              builder="html", warningiserror=strict, keep_going=strict, quiet=quiet)
    if isinstance(result, Exception):
        print(f"[book] HTML build failed: {result}", file=sys.stderr)
        return 1
    return int(result)


# --------------------------------------------------------------------------- the run

@dataclass
class RunOptions:
    """Everything ``leaklib book run`` needs; defaults are the README's command."""

    root: Path = Path(".")
    profile: str = _profiles.DEFAULT_PROFILE
    device: str = "auto"
    chapters: list[str] | None = None
    results_dir: Path | None = None
    figures_dir: Path | None = None
    build_dir: Path | None = None
    kernel: str = "python3"
    html: bool = True
    strict: bool = False
    force: bool = False
    threads: int | None = None
    progress: bool = True
    overrides: dict[str, str] = field(default_factory=dict)


def run_book(opts: RunOptions, say: Callable[[str], None] = print) -> list[ChapterResult]:
    """Stage, execute the chapters in order and (unless ``opts.html`` is False) build the HTML.

    Raises ``ChapterError`` on the first failing chapter, ``FileNotFoundError`` for a requested
    chapter that does not exist, ``RuntimeError`` when the HTML build fails.
    """
    from leaklib import __version__

    root = opts.root.resolve()
    results_dir = (opts.results_dir or root / "results").resolve()
    figures_dir = (opts.figures_dir or root / "figures" / opts.profile).resolve()
    build_dir = (opts.build_dir or root / "_build").resolve()
    stage, html_dir = stage_dir(build_dir), build_dir / "html"
    if opts.profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {opts.profile!r}")
    _profiles.get_profile(opts.profile, **_profiles.parse_overrides(opts.overrides))  # bad settings: fail before any chapter

    chapters = select_chapters(root / "book", opts.chapters, say)
    stage_sources(root, stage)
    figures_dir.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)

    parameters = {"profile": opts.profile, "device": opts.device,
                  "results_dir": str(results_dir), "figures_dir": str(figures_dir)}
    if opts.overrides:  # the chapters' default is {}; injected only when set
        parameters["overrides"] = {str(k): str(v) for k, v in opts.overrides.items()}
    resolved = resolve_device(opts.device)
    commit, code = git_commit(root), package_hash()
    upstream: list[str] = []
    results: list[ChapterResult] = []
    t_all = time.perf_counter()
    kernel_env = {"LEAKLIB_FIGURES_DIR": str(figures_dir)}  # inherited by the kernels
    if opts.threads:
        kernel_env.update(OMP_NUM_THREADS=str(opts.threads), MKL_NUM_THREADS=str(opts.threads))
    saved_env = {k: os.environ.get(k) for k in kernel_env}
    os.environ.update(kernel_env)
    try:
        for n, chapter in enumerate(CHAPTERS):
            source = root / "book" / f"{chapter}.ipynb"
            target = stage / f"{chapter}.ipynb"
            if not source.is_file():
                continue
            key = execution_key(source, dict(parameters, resolved_device=resolved), upstream, code,
                                opts.kernel)
            upstream.append(key)
            if chapter not in chapters:
                continue
            prefix = f"[book] {n + 1}/{len(CHAPTERS)} {chapter}"
            hit = None if opts.force else cached_record(target, key)
            if hit is not None:
                results.append(ChapterResult(chapter, "reused", 0.0, hit.get("figures", [])))
                say(f"{prefix}: unchanged, reused (executed {hit.get('executed_at', '?')})")
                continue
            say(f"{prefix}: running ...")  # then a status line while it runs (bookexec.Progress)
            before = _snapshot(figures_dir)
            when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            t0 = time.perf_counter()
            try:
                seconds = execute_chapter(chapter, source, target, parameters, kernel=opts.kernel,
                                          cwd=stage, prefix=prefix if opts.progress else None)
            except ChapterError as err:
                where = f" (partly executed notebook: {err.notebook})" if err.notebook else ""
                say(f"{prefix}: FAILED after {time.perf_counter() - t0:.1f} s{where}")
                raise
            except KeyboardInterrupt:  # Ctrl-C: no half-executed notebook left behind
                target.with_name(f".{target.stem}.running.ipynb").unlink(missing_ok=True)
                say(f"{prefix}: interrupted after {time.perf_counter() - t0:.1f} s")
                raise
            after = _snapshot(figures_dir)
            figures = sorted(p for p, m in after.items() if before.get(p) != m)
            note = executed_note(opts.profile, opts.device, resolved, when, commit, __version__, seconds,
                                 parameters.get("overrides"))
            finalize_notebook(target, note, {
                "key": key, "executed_at": when, "seconds": round(seconds, 2), "commit": commit,
                "profile": opts.profile, "device": opts.device, "resolved_device": resolved,
                "leaklib": __version__, "figures": figures})
            results.append(ChapterResult(chapter, "executed", seconds, figures))
            say(f"{prefix}: done in {seconds:.1f} s, {len(figures)} figure file(s)")
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    say(f"[book] chapters: {time.perf_counter() - t_all:.1f} s; figures in {figures_dir}")
    problems = check_figures(figures_dir)
    for p in problems:
        say(f"[book] figure problem: {p}")
    if problems and opts.strict:
        raise RuntimeError(f"{len(problems)} figure problem(s) in {figures_dir}")

    write_staged_toc(root, stage, say)
    if opts.html:
        t0 = time.perf_counter()
        say(f"[book] building HTML{' (' + STRICT_FLAGS + ')' if opts.strict else ''} ...")
        code_ = build_html(stage, html_dir, strict=opts.strict)
        if code_ != 0:
            raise RuntimeError(f"Jupyter Book build failed (exit {code_}); see the warnings above")
        say(f"[book] HTML built in {time.perf_counter() - t0:.1f} s: {html_dir / 'index.html'}")
    return results


# --------------------------------------------------------------------------- command line

RUN_EPILOG = "Profiles (leaklib.profiles):\n" + "".join(
    f"  {name}{' (default)' if name == _profiles.DEFAULT_PROFILE else ''}: {p.description}\n"
    for name, p in _profiles.PROFILES.items()) + f"""\
{GPU_HINT}
Chapters already executed with the same sources and parameters are reused; finished training
runs in --results-dir are reused by the chapters themselves.
"""


def _device(text: str) -> str:
    if not DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu or cuda[:N], got {text!r}")
    return text


def _threads(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=PROFILES, default=_profiles.DEFAULT_PROFILE,
                   help=f"experiment size (default: {_profiles.DEFAULT_PROFILE})")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="change profile settings for this run, e.g. --set num_steps=48 epochs=1 "
                        "(`leaklib profiles` lists the profiles; the chapters receive them as `overrides`)")
    p.add_argument("--device", type=_device, default="auto",
                   help="auto | cpu | cuda[:N] (default: auto = cuda if torch sees a GPU, else cpu)")
    p.add_argument("--threads", type=_threads, default=None,
                   help="CPU threads per chapter kernel (OMP_NUM_THREADS; default: torch's choice)")
    p.add_argument("--chapters", nargs="+", metavar="CHAPTER",
                   help="only these chapters, e.g. 01 03_robustness (default: every existing chapter)")
    p.add_argument("--results-dir", type=Path, help="training runs and measurements (default: results/)")
    p.add_argument("--figures-dir", type=Path,
                   help="every figure as PNG and SVG (default: figures/<profile>/)")
    p.add_argument("--build-dir", type=Path,
                   help="staged executed sources (<dir>/src) and HTML (<dir>/html) (default: _build/)")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel for papermill (default: python3)")
    p.add_argument("--no-html", dest="html", action="store_false", help="execute only, do not build HTML")
    p.add_argument("--strict", action="store_true",
                   help=f"HTML with warnings as errors ({STRICT_FLAGS}) and figure names checked (CI)")
    p.add_argument("--force", action="store_true", help="re-execute chapters even if unchanged")
    p.add_argument("--root", type=Path, default=Path("."), help=argparse.SUPPRESS)


def _checked_overrides(items: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` strings of ``--set``, each checked by :func:`leaklib.profiles.parse_overrides` (ValueError)."""
    _profiles.parse_overrides(items)
    return [str(item) for item in items]


def _run_command(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        overrides = dict(item.split("=", 1) for item in _checked_overrides(args.overrides))
        opts = RunOptions(root=args.root, profile=args.profile, device=args.device, chapters=args.chapters,
                          results_dir=args.results_dir, figures_dir=args.figures_dir,
                          build_dir=args.build_dir, kernel=args.kernel, html=args.html,
                          strict=args.strict, force=args.force, threads=args.threads, overrides=overrides)
        run_book(opts)
    except ChapterError as err:
        print(f"[book] {err.message()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[book] interrupted; chapters executed so far are kept and reused by the same command",
              file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"[book] error: {err}", file=sys.stderr)
        return 2 if isinstance(err, (FileNotFoundError, ValueError)) else 1
    print(f"[book] total {time.perf_counter() - t0:.1f} s")
    return 0


def _build_command(args: argparse.Namespace) -> int:
    root = args.root.resolve()
    build_dir = (args.build_dir or root / "_build").resolve()
    stage, html_dir = stage_dir(build_dir), build_dir / "html"
    if not (stage / "_toc.yml").is_file():
        print(f"[book] error: {stage} is not staged yet; run `leaklib book run` first", file=sys.stderr)
        return 2
    stage_sources(root, stage)  # pick up edited markdown and bib without re-executing
    write_staged_toc(root, stage)
    t0 = time.perf_counter()
    code = build_html(stage, html_dir, strict=args.strict)
    if code == 0:
        print(f"[book] HTML built in {time.perf_counter() - t0:.1f} s: {html_dir / 'index.html'}")
    return 1 if code else 0


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``book run`` and ``book build`` on the ``leaklib`` command's subparsers."""
    book = subparsers.add_parser("book", help="execute the chapters and build the HTML book",
                                 description=__doc__.splitlines()[0])
    sub = book.add_subparsers(dest="book_command", metavar="{run,build}")
    sub.required = True
    run = sub.add_parser("run", help="execute every chapter with papermill, then build the HTML",
                         description="Execute the chapters in dependency order with papermill, "
                                     "then render the HTML with Jupyter Book. " + GPU_HINT + ".",
                         epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_arguments(run)
    run.set_defaults(func=_run_command)
    build = sub.add_parser("build", help="re-render the HTML from the executed chapters (no execution)")
    build.add_argument("--build-dir", type=Path, help="as for `book run` (default: _build/)")
    build.add_argument("--strict", action="store_true", help=f"warnings as errors ({STRICT_FLAGS})")
    build.add_argument("--root", type=Path, default=Path("."), help=argparse.SUPPRESS)
    build.set_defaults(func=_build_command)
    return book


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m leaklib.book run|build ...``: the same as ``leaklib book run|build ...``."""
    parser = argparse.ArgumentParser(prog="leaklib")
    sub = parser.add_subparsers(dest="command")
    book = add_subparser(sub)
    args = parser.parse_args(["book", *(argv if argv is not None else sys.argv[1:])])
    del book
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
