"""The book pipeline (leaklib.book) on tiny notebooks written into tmp_path."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from leaklib import book

REPO = Path(__file__).resolve().parents[1]
PARAMS = 'profile = "quick"\ndevice = "auto"\nresults_dir = "results"\nfigures_dir = "figures"'
FIGURE_CELL = (
    "import matplotlib.pyplot as plt\n"
    "from leaklib.plotting import save_figure\n"
    "fig, ax = plt.subplots(figsize=(3, 2))\n"
    "ax.plot([0, 1, 2], [2, 0, 1])\n"
    "save_figure(fig, {name!r}, figures_dir)\n"
    "plt.show()"
)


def make_notebook(path: Path, *cells: str, title: str = "A chapter", cite: str = "lindner2014") -> Path:
    """A chapter: a title, a `parameters` cell, then the given code cells."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nAs in {{cite:p}}`{cite}`, with $\\tau_m = 30$."),
                params]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def make_root(tmp_path: Path) -> Path:
    """A book with the real _config.yml, _toc.yml (and book/'s symlinks to them), intro and
    bibliography, and no chapters."""
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    for name in book.CONFIG_FILES:
        shutil.copy2(REPO / name, root / name)
        (root / "book" / name).symlink_to(Path("..") / name)
    for name in ("intro.md", "references.bib", "references.md"):
        shutil.copy2(REPO / "book" / name, root / "book" / name)
    return root


# ----------------------------------------------------------------------------- selection

def test_normalize_chapter_accepts_number_stem_path_and_rejects_unknown() -> None:
    assert book.normalize_chapter("3") == "03_robustness"
    assert book.normalize_chapter("03") == "03_robustness"
    assert book.normalize_chapter("robustness") == "03_robustness"
    assert book.normalize_chapter("book/07_claims.ipynb") == "07_claims"
    assert book.normalize_chapter("8") == "08_training_semantics"
    with pytest.raises(ValueError, match="unknown chapter"):
        book.normalize_chapter("09")


def test_select_chapters_skips_missing_with_a_line_and_orders_by_dependency(tmp_path: Path) -> None:
    for stem in ("06_sparsity", "01_neurons_and_coherence"):
        make_notebook(tmp_path / f"{stem}.ipynb")
    lines: list[str] = []
    assert book.select_chapters(tmp_path, None, lines.append) == ["01_neurons_and_coherence", "06_sparsity"]
    assert len(lines) == len(book.CHAPTERS) - 2 and all("does not exist" in line for line in lines)
    assert book.select_chapters(tmp_path, ["06", "01"]) == ["01_neurons_and_coherence", "06_sparsity"]


def test_select_chapters_named_missing_chapter_is_an_error(tmp_path: Path) -> None:
    make_notebook(tmp_path / "01_neurons_and_coherence.ipynb")
    with pytest.raises(FileNotFoundError, match="02_training"):
        book.select_chapters(tmp_path, ["01", "02"])


# ----------------------------------------------------------------------------- staging

def test_stage_sources_copies_book_files_and_drops_stale_notebooks(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    stage = tmp_path / "stage"
    (stage / "book").mkdir(parents=True)
    (stage / "book" / "intro.md").write_text("old layout")  # a stage of the older layout: removed
    (stage / "02_training.ipynb").write_text("{}")  # its source is gone
    make_notebook(root / "book" / "01_neurons_and_coherence.ipynb")
    (stage / "01_neurons_and_coherence.ipynb").write_text("{}")  # executed earlier: kept
    book.stage_sources(root, stage)
    assert (stage / "_config.yml").read_text() == (root / "_config.yml").read_text()
    assert not (stage / "_config.yml").is_symlink() and not (stage / "book").exists()
    assert (stage / "intro.md").is_file() and (stage / "references.bib").is_file()
    assert not (stage / "02_training.ipynb").exists()
    assert (stage / "01_neurons_and_coherence.ipynb").read_text() == "{}"


def test_stage_sources_requires_config(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "_config.yml").unlink()
    with pytest.raises(FileNotFoundError, match="_config.yml"):
        book.stage_sources(root, tmp_path / "stage")


def test_write_staged_toc_drops_missing_chapters_and_empty_parts(tmp_path: Path) -> None:
    import yaml

    root = make_root(tmp_path)
    stage = tmp_path / "stage"
    book.stage_sources(root, stage)
    (stage / "03_robustness.ipynb").write_text("{}")
    dropped = book.write_staged_toc(root, stage, lambda _: None)
    toc = yaml.safe_load((stage / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert files == ["03_robustness", "references"]
    assert [p["caption"] for p in toc["parts"]] == ["Experiments", "Summary"]
    assert set(dropped) == set(book.CHAPTERS) - {"03_robustness"}
    assert toc["root"] == "intro"


def test_unlink_dropped_rewrites_only_links_to_dropped_chapters(tmp_path: Path) -> None:
    (tmp_path / "book").mkdir()
    page = tmp_path / "book" / "intro.md"
    page.write_text("{doc}`03_robustness` and {doc}`Fig. 3 <03_robustness>` but {doc}`01_neurons_and_coherence`")
    assert book.unlink_dropped(tmp_path, ["03_robustness"]) == 2
    assert page.read_text() == ("`03_robustness` (not in this build) and `03_robustness` (not in this build)"
                                " but {doc}`01_neurons_and_coherence`")


def test_unlink_dropped_also_rewrites_notebook_markdown_cells(tmp_path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    (tmp_path / "book").mkdir()
    path = tmp_path / "book" / "03_robustness.ipynb"
    code = "print('{doc}`01_neurons_and_coherence`')"
    nbformat.write(new_notebook(cells=[new_markdown_cell("see {doc}`01_neurons_and_coherence` and {doc}`02_training`"),
                                       new_code_cell(code)]), path)
    assert book.unlink_dropped(tmp_path, ["01_neurons_and_coherence"]) == 1
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].source == "see `01_neurons_and_coherence` (not in this build) and {doc}`02_training`"
    assert cells[1].source == code  # code is left alone


def test_top_level_toc_lists_every_chapter_in_dependency_order() -> None:
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert [f for f in files if f in book.CHAPTERS] == list(book.CHAPTERS)
    assert all((REPO / "book" / f"{f}.ipynb").is_file() or (REPO / "book" / f"{f}.md").is_file()
               for f in [toc["root"], *files])  # relative to book/, the source folder
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "cache" and config["execute"]["timeout"] == -1
    assert all((REPO / "book" / bib).is_file() for bib in config["bibtex_bibfiles"])
    assert {"sphinx-mathjax-offline", "leaklib.sphinx_book"} <= set(config["sphinx"]["extra_extensions"])


def test_book_folder_links_to_the_one_configuration() -> None:
    for name in book.CONFIG_FILES:
        link = REPO / "book" / name
        assert link.is_symlink() and os.readlink(link) == f"../{name}", name
        assert link.resolve() == (REPO / name).resolve()


# ----------------------------------------------------------------------------- provenance

def test_git_commit_reports_sha_and_dirty_state(tmp_path: Path) -> None:
    assert book.git_commit(tmp_path) == "unknown"
    run = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    run("add", "f.txt")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    sha = book.git_commit(tmp_path)
    assert len(sha) >= 7 and not sha.endswith("-dirty")
    (tmp_path / "f.txt").write_text("b")
    assert book.git_commit(tmp_path) == sha + "-dirty"


def test_package_hash_is_stable_hex() -> None:
    h = book.package_hash()
    assert h == book.package_hash() and len(h) == 64 and int(h, 16) >= 0


def test_resolve_device_passes_explicit_devices_and_resolves_auto() -> None:
    import torch

    assert book.resolve_device("cpu") == "cpu" and book.resolve_device("cuda") == "cuda"
    assert book.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_execution_key_changes_with_source_parameters_and_upstream(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "a.ipynb", "x = 1")
    base = book.execution_key(nb, {"profile": "smoke"}, [], "code", "python3")
    assert base == book.execution_key(nb, {"profile": "smoke"}, [], "code", "python3")
    assert base != book.execution_key(nb, {"profile": "quick"}, [], "code", "python3")
    assert base != book.execution_key(nb, {"profile": "smoke"}, ["up"], "code", "python3")
    assert base != book.execution_key(nb, {"profile": "smoke"}, [], "code2", "python3")
    make_notebook(nb, "x = 2")
    assert base != book.execution_key(nb, {"profile": "smoke"}, [], "code", "python3")


def test_cached_record_needs_matching_key_and_existing_figures(tmp_path: Path) -> None:
    fig = tmp_path / "fig2_coherence.png"
    fig.write_bytes(b"png")
    nb = nbformat.v4.new_notebook()
    nb.metadata[book.META_KEY] = {"key": "k1", "figures": [str(fig)]}
    path = tmp_path / "c.ipynb"
    nbformat.write(nb, path)
    assert book.cached_record(path, "k1")["key"] == "k1"
    assert book.cached_record(path, "k2") is None
    assert book.cached_record(tmp_path / "absent.ipynb", "k1") is None
    fig.unlink()
    assert book.cached_record(path, "k1") is None


# ----------------------------------------------------------------------------- notebook surgery

def test_attach_note_shows_it_under_the_folded_parameters_cell_and_drops_the_injected_one() -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters", "hide-cell"]
    injected = nbformat.v4.new_code_cell('profile = "smoke"\n')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells = [params, injected, nbformat.v4.new_code_cell("print(1)")]
    note = book.executed_note("smoke", "auto", "cpu", "2020-06-17 12:00 UTC", "abc1234", "0.1.0", 12.3)
    assert book.attach_note(nb, note)
    assert len(nb.cells) == 2 and nb.cells[0] is params and nb.cells[1].source == "print(1)"
    assert params.metadata["tags"] == ["parameters", book.HIDE_TAG, book.NOTE_TAG]
    assert [o["data"]["text/markdown"] for o in params.outputs] == [note]
    assert "This page was executed with" not in params.outputs[0]["data"]["text/plain"]
    assert "profile **smoke**" in params.outputs[0]["data"]["text/plain"]
    assert not book.attach_note(nb, note)  # no injected cell (as under jupyter-book build): note only
    assert len(params.outputs) == 1
    for text in ("smoke", "auto → cpu", "2020-06-17 12:00 UTC", "abc1234", "0.1.0", "12 s", "{admonition}",
                 "jupyter-book build book/", "leaklib book run --profile"):
        assert text in note
    assert "settings changed" not in note
    # every profile of leaklib.profiles is offered, and a page run with --set says which settings it changed
    from leaklib.profiles import PROFILES

    assert all(name in note for name in PROFILES) and "paper-smoke" in note
    changed = book.executed_note("quick", "cpu", "cpu", "now", "abc1234", "0.1.0", None, {"epochs": "2", "seeds": "1,2"})
    assert "profile **quick** with settings changed (`--set epochs=2 seeds=1,2`)" in changed
    assert all(f"  {name}" in book.RUN_EPILOG for name in PROFILES)


def test_attach_note_without_a_parameters_cell_puts_it_where_papermill_injected() -> None:
    nb = nbformat.v4.new_notebook()
    injected = nbformat.v4.new_code_cell('profile = "smoke"\n')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells = [injected, nbformat.v4.new_code_cell("print(1)")]
    assert book.attach_note(nb, "the note")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source == "the note"
    assert nb.cells[0].metadata["tags"] == [book.NOTE_TAG]


def test_check_figures_wants_paper_names_and_a_vector_twin(tmp_path: Path) -> None:
    for name in ("fig2_coherence.png", "fig2_coherence.svg", "fig3_robustness.png",
                 "fig5d_sse.png", "fig5d_sse.pdf", "my_plot.png", "my_plot.svg"):
        (tmp_path / name).write_bytes(b"x")
    problems = book.check_figures(tmp_path)
    assert len(problems) == 2
    assert any(p.startswith("fig3_robustness.png: no") for p in problems)
    assert any(p.startswith("my_plot.png: name") for p in problems)
    assert book.check_figures(tmp_path / "absent") == []


def test_execute_chapter_reports_chapter_cell_and_error(tmp_path: Path) -> None:
    src = make_notebook(tmp_path / "03_robustness.ipynb", "x = 1", "raise ValueError('noise too loud')")
    target = tmp_path / "stage" / "03_robustness.ipynb"
    with pytest.raises(book.ChapterError) as info:
        book.execute_chapter("03_robustness", src, target, {"profile": "smoke"})
    err = info.value
    assert err.message() == "chapter 03_robustness failed in cell 4 (In [4]): ValueError: noise too loud"
    assert err.notebook is not None and err.notebook.is_file() and not target.exists()


# ----------------------------------------------------------------------------- the whole run

def test_run_book_executes_reuses_and_builds_strict_html(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(book, "package_hash", lambda: "fixed")  # others may edit leaklib meanwhile
    root = make_root(tmp_path)
    make_notebook(root / "book" / "01_neurons_and_coherence.ipynb",
                  "print('ran with', profile, device, figures_dir)", FIGURE_CELL.format(name="fig2_coherence"),
                  title="Neurons")
    make_notebook(root / "book" / "03_robustness.ipynb", FIGURE_CELL.format(name="fig3_robustness"),
                  title="Robustness", cite="hendrycks2019benchmarking")
    opts = book.RunOptions(root=root, profile="smoke", device="cpu", strict=True)
    lines: list[str] = []
    env_before = os.environ.get("LEAKLIB_FIGURES_DIR")
    first = book.run_book(opts, lines.append)
    assert os.environ.get("LEAKLIB_FIGURES_DIR") == env_before  # only the kernels saw it
    assert [(r.chapter, r.status) for r in first] == [("01_neurons_and_coherence", "executed"),
                                                       ("03_robustness", "executed")]
    assert any(line.startswith(f"[book] 1/{len(book.CHAPTERS)} 01_neurons_and_coherence: done in") for line in lines)
    figures = root / "figures" / "smoke"
    assert sorted(p.name for p in figures.iterdir()) == [
        "fig2_coherence.png", "fig2_coherence.svg", "fig3_robustness.png", "fig3_robustness.svg"]
    executed = nbformat.read(root / "_build" / "src" / "01_neurons_and_coherence.ipynb", 4)
    out = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert f"ran with smoke cpu {figures}" in out
    assert executed.metadata[book.META_KEY]["profile"] == "smoke"
    assert nbformat.read(root / "book" / "01_neurons_and_coherence.ipynb", 4).cells[1].get("outputs") == []

    page = (root / "_build" / "html" / "01_neurons_and_coherence.html").read_text()
    assert "This page was executed with" in page and "injected-parameters" not in page
    assert "tag_hide-input" in page and "profile <strong>smoke</strong>" in page
    assert "<img" in page and (root / "_build" / "html" / "references.html").is_file()
    assert '_static/mathjax/tex-chtml.js' in page and "cdn.jsdelivr" not in page  # maths offline
    assert (root / "_build" / "html" / "_static" / "mathjax" / "tex-chtml.js").is_file()
    intro = (root / "_build" / "html" / "intro.html").read_text()
    assert 'href="01_neurons_and_coherence.html"' in intro and "02_training</span></code> (not in this build)" in intro
    assert not (root / "_build" / "html" / "02_training.html").exists()
    assert not (root / "_build" / ".jupyter_cache").exists()  # Jupyter Book executed nothing itself

    lines.clear()
    second = book.run_book(opts, lines.append)
    assert [r.status for r in second] == ["reused", "reused"]
    make_notebook(root / "book" / "01_neurons_and_coherence.ipynb", "print('changed')", title="Neurons")
    third = book.run_book(book.RunOptions(root=root, profile="smoke", device="cpu", html=False))
    assert [r.status for r in third] == ["executed", "executed"]  # 03 depends on 01


def test_cli_stops_at_the_failing_chapter_with_exit_code_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path)
    make_notebook(root / "book" / "02_training.ipynb", "1 / 0")
    make_notebook(root / "book" / "03_robustness.ipynb", "open('ran', 'w').write('yes')")
    code = book.main(["run", "--root", str(root), "--profile", "smoke", "--no-html"])
    err = capsys.readouterr().err
    assert code == 1
    assert "chapter 02_training failed in cell 3 (In [3]): ZeroDivisionError: division by zero" in err
    assert not (root / "_build" / "src" / "ran").exists()
    assert book.main(["run", "--root", str(root), "--chapters", "05", "--no-html"]) == 2


def test_add_subparser_registers_run_and_build_with_gpu_help() -> None:
    parser = argparse.ArgumentParser(prog="leaklib")
    book.add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["book", "run"])
    assert (args.profile, args.device, args.html, args.func) == ("quick", "auto", True, book._run_command)
    args = parser.parse_args(["book", "run", "--profile", "paper", "--device", "cuda", "--chapters", "01", "03"])
    assert (args.profile, args.device, args.chapters) == ("paper", "cuda", ["01", "03"])
    assert parser.parse_args(["book", "run", "--device", "cuda:1", "--threads", "2"]).threads == 2
    for bad in (["--device", "gpu"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["book", "run", *bad])
    assert parser.parse_args(["book", "build"]).func is book._build_command
    run_parser = parser._subparsers._group_actions[0].choices["book"]._subparsers._group_actions[0].choices["run"]
    assert "leaklib book run --profile paper --device cuda" in run_parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["book", "run", "--profile", "huge"])


def test_build_command_needs_a_staged_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_root(tmp_path)
    assert book.main(["build", "--root", str(root)]) == 2
    assert "run `leaklib book run` first" in capsys.readouterr().err
