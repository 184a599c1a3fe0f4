"""Where the book's chapters read and write, wherever their kernel runs.

Jupyter Book executes a chapter with ``book/`` as its working directory, papermill in whatever folder
the user stands in, ``leaklib book run`` in its staged copy under ``_build/src``. So a chapter does not
take ``results_dir`` and ``figures_dir`` relative to its working directory but to the repository root
(the folder holding ``_toc.yml`` and ``book/``): every route reads and writes the same ``results/``
and ``figures/<profile>/``, and finished training runs and analyses are shared between them.

This module is imported by every chapter's ``parameters`` cell: keep it free of heavy imports.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PROFILE_ENV", "ROOT_ENV", "is_repo_root", "repo_root", "chapter_dirs"]

#: Overrides the chapters' default profile (``quick``) where no parameters are injected, i.e. in
#: ``jupyter-book build book/``; ``leaklib book run --profile`` and papermill's ``-p`` inject theirs.
PROFILE_ENV = "LEAKLIB_PROFILE"
#: The repository root, when it cannot be found from the working directory or the package.
ROOT_ENV = "LEAKLIB_ROOT"


def is_repo_root(path: Path) -> bool:
    """A folder with ``_toc.yml`` and ``book/``: the top of a clone."""
    return (path / "_toc.yml").is_file() and (path / "book").is_dir()


def repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The repository root: ``$LEAKLIB_ROOT``, else the first folder at or above ``start`` (default:
    the working directory) that holds ``_toc.yml`` and ``book/``, else the folder above the ``leaklib``
    package when it is such a folder (an editable install)."""
    given = os.environ.get(ROOT_ENV)
    if given:
        return Path(given).expanduser().resolve()
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if is_repo_root(folder):
            return folder
    package_parent = Path(__file__).resolve().parents[1]
    if is_repo_root(package_parent):
        return package_parent
    raise FileNotFoundError(
        f"no repository root (a folder with _toc.yml and book/) at or above {here}, nor above the "
        f"leaklib package; set {ROOT_ENV} or pass absolute results_dir and figures_dir")


def chapter_dirs(results_dir: str | os.PathLike[str], figures_dir: str | os.PathLike[str] | None,
                 profile: str) -> tuple[str, str]:
    """Absolute ``(results_dir, figures_dir)`` for a chapter's parameters.

    A relative path is taken from the repository root; an empty ``figures_dir`` means
    ``figures/<profile>``. Absolute paths (what ``leaklib book run`` injects) are returned as they are.
    """
    results = Path(results_dir or "results").expanduser()
    figures = Path(figures_dir).expanduser() if figures_dir else Path("figures") / profile
    if not (results.is_absolute() and figures.is_absolute()):
        root = repo_root()
        results, figures = root / results, root / figures  # an absolute right side wins in pathlib
    return str(results), str(figures)
