"""The two routes to the executed book: where chapters read and write (leaklib.paths), what the
terminal shows while one runs and over which transport its kernel talks (leaklib.bookexec), and
``jupyter-book build book/`` executing and reusing chapters as ``leaklib book run`` does
(leaklib.sphinx_book)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from leaklib import book, bookexec, paths, sphinx_book
from test_book import make_notebook, make_root

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- leaklib.paths

def test_chapter_dirs_resolve_relative_paths_from_the_repository_root(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_root(tmp_path)
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    monkeypatch.chdir(root / "book")  # where Jupyter Book runs a chapter
    assert paths.repo_root() == root.resolve()
    assert paths.chapter_dirs("results", "", "smoke") == (str(root / "results"), str(root / "figures" / "smoke"))
    assert paths.chapter_dirs("out/r", "out/f", "quick") == (str(root / "out/r"), str(root / "out/f"))
    absolute = (str(tmp_path / "r"), str(tmp_path / "f"))
    assert paths.chapter_dirs(*absolute, "quick") == absolute  # what `leaklib book run` injects
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # papermill run from another folder: $LEAKLIB_ROOT or the package's clone
    monkeypatch.setenv(paths.ROOT_ENV, str(root))
    assert paths.chapter_dirs("results", "", "paper")[1] == str(root / "figures" / "paper")
    monkeypatch.delenv(paths.ROOT_ENV)
    assert paths.repo_root() == REPO  # leaklib is imported from this clone


def test_every_chapter_takes_its_folders_from_the_repository_root() -> None:
    """The parameters cell of each chapter: default profile quick ($LEAKLIB_PROFILE), folders
    resolved by the first code cell's first line."""
    for chapter in book.CHAPTERS:
        nb = nbformat.read(REPO / "book" / f"{chapter}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata["tags"] and book.HIDE_TAG in code[0].metadata["tags"], chapter
        assert code[1].source.splitlines()[0].startswith(
            "results_dir, figures_dir = chapter_dirs(results_dir, figures_dir, profile)"), chapter
        namespace: dict = {}
        env = dict(os.environ)
        try:
            os.environ.pop(paths.PROFILE_ENV, None)
            exec(code[0].source, namespace)  # noqa: S102
        finally:
            os.environ.clear()
            os.environ.update(env)
        assert (namespace["profile"], namespace["device"], namespace["results_dir"], namespace["figures_dir"]) == (
            "quick", "auto", "results", ""), chapter


# ----------------------------------------------------------------------------- leaklib.bookexec

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_prints_the_current_state_at_most_once_per_interval() -> None:
    out, clock = io.StringIO(), Clock()
    progress = bookexec.Progress("[book] 2/7 02_training", 3, out, interval=10, clock=clock)
    progress.cell_started(cell=None, cell_index=1)
    clock.now = 1
    progress.cell_started(cell=None, cell_index=2)  # held back: a line was printed 1 s ago
    progress.set_training("training run 1/9 (digits, tau_m=30, seed 1), epoch 1/12")
    clock.now = 12
    progress.tick()
    progress.tick()  # nothing new
    assert out.getvalue().splitlines() == [
        "[book] 2/7 02_training: cell 1/3 - 0 s",
        "[book] 2/7 02_training: cell 2/3, training run 1/9 (digits, tau_m=30, seed 1), epoch 1/12 - 12 s"]


def test_progress_on_a_terminal_redraws_one_line_and_erases_it() -> None:
    out, clock = Terminal(), Clock()
    progress = bookexec.Progress("[book] 1/7 01_neurons_and_coherence", 2, out, clock=clock)
    progress.cell_started()
    clock.now = 3
    progress.tick()
    progress.close()
    assert out.getvalue() == ("\r\x1b[K[book] 1/7 01_neurons_and_coherence: cell 1/2 - 0 s"
                              "\r\x1b[K[book] 1/7 01_neurons_and_coherence: cell 1/2 - 3 s\r\x1b[K")


def test_training_watcher_names_the_run_being_trained_and_its_epoch(tmp_path: Path) -> None:
    from leaklib.profiles import format_tau
    from leaklib.sweep import sweep_configs

    configs = sweep_configs("smoke")
    since = time.time()
    watcher = bookexec.TrainingWatcher(tmp_path, "smoke", since=since)
    assert watcher.status() is None  # nothing started
    folders = [c.folder(tmp_path) for c in configs]
    folders[0].mkdir(parents=True)
    (folders[0] / "metrics.json").write_text(json.dumps({"config_hash": configs[0].hash()}))
    folders[1].mkdir(parents=True)
    (folders[1] / "config.json").write_text("{}")
    (folders[1] / "history.jsonl").write_text('{"epoch": 1}\n')
    c = configs[1]
    assert watcher.status() == (f"training run 2/{len(configs)} ({c.dataset}, tau_m={c.tau_m:g}, seed {c.seed}), "
                                f"epoch 2/{c.profile.epochs}")
    folders[2].mkdir(parents=True)  # a second worker trains the next run at the same time: both named
    (folders[2] / "config.json").write_text("{}")
    d = configs[2]
    assert watcher.status() == (f"training runs 2/{len(configs)} ({c.dataset}, tau_m={c.tau_m:g}, seed {c.seed}) "
                                f"epoch 2/{c.profile.epochs}, 3/{len(configs)} ({d.dataset}, tau_m={format_tau(d.tau_m)}, "
                                f"seed {d.seed}) epoch 1/{d.profile.epochs}")
    old = since - 3600  # a run left unfinished earlier, in a chapter that does not train: not reported
    os.utime(folders[1] / "config.json", (old, old))
    os.utime(folders[2] / "config.json", (old, old))
    assert watcher.status() is None
    assert bookexec.TrainingWatcher(tmp_path, "no-such-profile").status() is None


def test_chapters_run_over_ipc_with_a_progress_line_and_no_tcp_warning(tmp_path: Path,
                                                                        capfd: pytest.CaptureFixture[str]) -> None:
    src = make_notebook(tmp_path / "02_training.ipynb",
                        "import ipykernel.connect, json\n"
                        "print('transport', json.load(open(ipykernel.connect.get_connection_file()))['transport'])",
                        "x = 2")
    stream = io.StringIO()
    book.execute_chapter("02_training", src, tmp_path / "out" / "02_training.ipynb",
                         {"profile": "smoke", "results_dir": str(tmp_path / "results")},
                         prefix="[book] 2/7 02_training", stream=stream)
    out = nbformat.read(tmp_path / "out" / "02_training.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in out.cells if c.cell_type == "code" for o in c.get("outputs", []))
    expected = "transport tcp" if os.name != "posix" else "transport ipc"
    assert expected in printed
    assert "[book] 2/7 02_training: cell 1/4" in stream.getvalue()  # the injected cell is one of them
    assert "without encryption" not in "".join(capfd.readouterr())


@pytest.mark.skipif(os.name != "posix", reason="the IPC kernel manager is POSIX only")
def test_a_kernel_shut_down_in_the_middle_of_a_cell_prints_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while a chapter runs: nbclient shuts the kernel down with a cell still running. A graceful
    shutdown (interrupt, then at once the shutdown request) made ipykernel print a ZMQError traceback
    when it sent the interrupted cell's reply on its closed sockets."""
    import asyncio

    progress = bookexec.Progress("[book] x", 2, stream=io.StringIO())
    km_class = bookexec.client_kwargs(progress)["kernel_manager_class"]

    async def run() -> None:
        km = km_class(kernel_name="python3")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            progress.cell_started()
            kc.execute("import time\nfor i in range(200):\n    time.sleep(0.1)")
            await asyncio.sleep(1.5)
            assert progress.busy()
            await km.shutdown_kernel()
            assert not await km.is_alive()
        finally:
            kc.stop_channels()

    asyncio.run(run())
    time.sleep(0.5)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ZMQError" not in err, err


# ----------------------------------------------------------------------------- jupyter-book build book/

def real_chapter_cells() -> tuple[str, str]:
    """The real chapters' parameters cell and the first code cell's first line."""
    nb = nbformat.read(REPO / "book" / "02_training.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    return code[0].source, code[1].source.splitlines()[0]


def write_chapter(path: Path, *cells: str, title: str) -> None:
    params, first_line = real_chapter_cells()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters", book.HIDE_TAG]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nWith $\\tau_m$."), cell,
                nbformat.v4.new_code_cell(first_line + "\nprint('dirs', results_dir, figures_dir, profile)")]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


FIGURE = ("import matplotlib.pyplot as plt\nfrom leaklib.plotting import save_figure\n"
          "fig, ax = plt.subplots(figsize=(3, 2))\nax.plot([0, 1], [1, {y}])\n"
          "save_figure(fig, {name!r}, figures_dir)\nplt.show()")


def jupyter_book(root: Path) -> tuple[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in (paths.ROOT_ENV,)}
    env.update({paths.PROFILE_ENV: "smoke", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])})
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
                             "build", str(root / "book")],
                            cwd=root.parent, env=env, capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    return out, time.perf_counter() - t0


def executed(out: str) -> list[str]:
    return [line.split("/")[-1].split(".ipynb")[0] for line in out.splitlines() if "Executing notebook" in line]


def test_jupyter_book_build_executes_chapters_like_book_run_and_reuses_them(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    write_chapter(root / "book" / "01_neurons_and_coherence.ipynb", FIGURE.format(y=0, name="fig2_coherence"),
                  title="Neurons")
    write_chapter(root / "book" / "03_robustness.ipynb", FIGURE.format(y=2, name="fig3_robustness"),
                  title="Robustness")
    html = root / "book" / "_build" / "html"

    out, _ = jupyter_book(root)
    assert executed(out) == ["01_neurons_and_coherence", "03_robustness"]
    assert f"[book] 1/{len(book.CHAPTERS)} 01_neurons_and_coherence: cell 1/" in out  # the progress line
    assert "without encryption" not in out
    page = (html / "01_neurons_and_coherence.html").read_text()
    assert f"dirs {root / 'results'} {root / 'figures' / 'smoke'} smoke" in page  # from the root, not book/
    assert "This page was executed with" in page and "profile <strong>smoke</strong>" in page
    assert "<img" in page and "_static/mathjax/tex-chtml.js" in page
    assert (root / "figures" / "smoke" / "fig2_coherence.png").is_file() and not (root / "book" / "figures").exists()
    cache = root / "book" / "_build" / ".jupyter_cache"
    record = json.loads((cache / "leaklib" / "01_neurons_and_coherence.json").read_text())
    assert record["profile"] == "smoke" and any(f.endswith("fig2_coherence.png") for f in record["figures"])

    out, _ = jupyter_book(root)  # nothing changed: nothing executed
    assert executed(out) == []
    # Sphinx reads a page again when its file is newer (a checkout, an edited markdown cell): the
    # cached execution must still match the notebook's code cells
    os.utime(root / "book" / "03_robustness.ipynb")
    out, _ = jupyter_book(root)
    assert executed(out) == []
    assert "This page was executed with" in (html / "03_robustness.html").read_text()

    (root / "figures" / "smoke" / "fig3_robustness.png").unlink()  # its figure is gone: that chapter only
    out, _ = jupyter_book(root)
    assert executed(out) == ["03_robustness"]
    assert (root / "figures" / "smoke" / "fig3_robustness.png").is_file()

    write_chapter(root / "book" / "01_neurons_and_coherence.ipynb", FIGURE.format(y=5, name="fig2_coherence"),
                  title="Neurons")  # an upstream chapter changed: it and everything after it
    out, _ = jupyter_book(root)
    assert executed(out) == ["01_neurons_and_coherence", "03_robustness"]
    assert "This page was executed with" in (html / "03_robustness.html").read_text()


def test_plan_keys_chain_upstream_chapters_and_follow_the_profile(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_root(tmp_path)
    write_chapter(root / "book" / "01_neurons_and_coherence.ipynb", "x = 1", title="Neurons")
    write_chapter(root / "book" / "03_robustness.ipynb", "y = 1", title="Robustness")
    make_notebook(root / "book" / "05_generalization.ipynb", "z = 1")  # no chapter_dirs: still planned
    monkeypatch.setenv(paths.ROOT_ENV, str(root))
    monkeypatch.delenv(paths.PROFILE_ENV, raising=False)
    first = sphinx_book.plan_chapters(root / "book", code="c")
    assert [p.docname for p in first] == ["01_neurons_and_coherence", "03_robustness", "05_generalization"]
    assert first[0].parameters["profile"] == "quick"
    assert first[0].parameters["figures_dir"] == str(root / "figures" / "quick")
    assert first[2].parameters["figures_dir"] == str(root / "figures")  # PARAMS says "figures"
    write_chapter(root / "book" / "01_neurons_and_coherence.ipynb", "x = 2", title="Neurons")
    second = sphinx_book.plan_chapters(root / "book", code="c")
    assert all(a.key != b.key for a, b in zip(first, second))  # upstream change reaches every chapter
    monkeypatch.setenv(paths.PROFILE_ENV, "smoke")
    third = sphinx_book.plan_chapters(root / "book", code="c")
    assert third[0].parameters["profile"] == "smoke" and third[0].key != second[0].key
    assert sphinx_book.plan_chapters(root / "book", code="d")[0].key != third[0].key  # leaklib changed


def test_the_note_leaves_jupyter_caches_key_of_every_chapter_unchanged() -> None:
    """myst-nb caches the executed notebook under jupyter-cache's hash of its code cells (sources and
    metadata): the note must not change it, or a page that Sphinx reads again never matches its cache
    and is executed again."""
    from jupyter_cache.cache.main import JupyterCacheBase

    hashed = JupyterCacheBase.create_hashed_notebook
    note = book.executed_note("smoke", "auto", "cpu", "2020-06-17 12:00 UTC", "abc1234", "0.1.0", 1.0)
    for chapter in book.CHAPTERS:
        nb = nbformat.read(REPO / "book" / f"{chapter}.ipynb", as_version=4)
        before = hashed(None, nb)[1]
        sphinx_book.attach_note_keeping_key(nb, note)
        assert hashed(None, nb)[1] == before, chapter
        params = next(c for c in nb.cells if c.cell_type == "code")
        assert [o["data"]["text/markdown"] for o in params.outputs] == [note], chapter
