"""The README's results block: written by `leaklib report` from a finished run, checked for hand edits."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from leaklib import cli, report
from leaklib.claims import claims_ledger, write_ledger
from leaklib.profiles import ABLATIONS, get_profile
from leaklib.sweep import open_sweep

REPO = Path(__file__).resolve().parents[1]


def _data(**extra):
    data = {"profile": "quick", "variant": "abcd1234", "description": "default",
            "settings": {"T": 100, "epochs": 12, "batch": 32, "lr": 1.0, "seeds": 5, "taus": ["30", "100", "inf"],
                         "leak_grad": "detached", "correction": "lee2020", "pooling": "spiking", "dropout": 0.2},
            "runs": 15, "train_seconds": 600.0,
            "accuracy": {"digits": {"inf": {"mean": 96.5, "std": 0.4, "n": 5, "min": 96.0}}},
            "diverged": {"digits/10": 5, "digits/30": 0},
            "summary": {"digits": {"reproduced": 2, "inconclusive": 1}},
            "claims": [{"id": "1", "dataset": "digits", "claim": "a | b", "evidence": "IF 1", "intervals": "x",
                        "verdict": "reproduced"}],
            "ablation": {"summary": {"digits": {"reproduced": 1}},
                         "claims": [{"id": "1", "dataset": "digits", "verdict": "inconclusive"}]},
            "chapter_seconds": {"01_neurons": 40.0, "02_training": 300.0}, "commit": "abc1234",
            "machine": "2 CPU cores", "date": "2026-01-01"}
    data.update(extra)
    return data


def test_the_readme_block_is_exactly_what_the_generator_renders():
    assert report.check_readme(REPO / "README.md") == []


def test_render_shows_settings_claims_ablation_and_times():
    text = report.render(_data())
    assert "T=100, 12 epochs" in text and "**5.7 min** of chapter execution" in text
    assert "| 1 | a \\| b | IF 1 | x | **reproduced** | inconclusive |" in text  # pipes escaped, ablation beside
    assert "Diverged runs: digits/10 5." in text
    assert "96.50 ± 0.40 % (n=5, lowest 96.00)" in text


def test_update_and_check_round_trip_and_catch_hand_edits(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{report.START}\nold\n{report.END}\n\nafter\n")
    assert report.check_readme(readme)  # no stored data yet
    assert report.update_readme(readme, _data()) is True
    assert report.update_readme(readme, _data()) is False  # unchanged
    text = readme.read_text()
    assert text.startswith("# title\n\n") and text.endswith("\n\nafter\n")
    assert report.check_readme(readme) == []
    readme.write_text(text.replace("**reproduced**", "**not reproduced**"))  # a hand edit
    assert "edited by hand" in report.check_readme(readme)[0]
    readme.write_text("no markers")
    assert "markers" in report.check_readme(readme)[0]
    # stored data never closes the comment early, whatever the text holds
    tricky = _data(description="a --> b -- c")
    readme.write_text(f"{report.START}\n{report.END}\n")
    report.update_readme(readme, tricky)
    assert report.check_readme(readme) == []


def test_collect_reads_what_a_book_run_wrote(tmp_path, capsys):
    tiny = replace(get_profile("smoke"), taus=(30.0, math.inf), epochs=1, train_subset=60, test_subset=20,
                   train_eval_subset=20, analysis_images=10)
    results = tmp_path / "results"
    sweeps = {}
    for name, overrides in (("default", {}), ("exact", {**ABLATIONS["exact-gradient"], "taus": "30,100,inf"})):
        sweep = open_sweep(tiny, overrides, results, "cpu", log=lambda s: None)
        write_ledger(claims_ledger(sweep.history, None, None, runs=sweep.runs), sweep.ledger_dir(), "smoke")
        sweeps[name] = sweep
    # collect() opens the profile by name: the same settings through overrides
    overrides = {"taus": "30,inf", "epochs": "1", "train_subset": "60", "test_subset": "20",
                 "train_eval_subset": "20", "analysis_images": "10"}
    data = report.collect("smoke", results, tmp_path / "_build", overrides)
    assert data["variant"] == sweeps["default"].ledger_dir().name and data["runs"] == 2
    assert set(data["accuracy"]["digits"]) == {"30", "inf"}
    assert [c["id"] for c in data["claims"]] == [str(i) for i in range(1, 15)]
    assert json.loads(json.dumps(data)) == data  # JSON-ready
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.START}\n{report.END}\n")
    argv = ["report", "--profile", "smoke", "--results-dir", str(results), "--build-dir", str(tmp_path / "_build"),
            "--readme", str(readme), "--set"] + [f"{k}={v}" for k, v in overrides.items()]
    assert cli.main(argv) == 0 and "updated" in capsys.readouterr().out
    assert cli.main(["report", "--readme", str(readme), "--check"]) == 0
    assert cli.main(["report", "--readme", str(readme), "--check", "--results-dir", str(results)]) == 0
    # a verdict changed in the text and in the stored data alike passes the form check, not the ledger's
    text = readme.read_text()
    first = data["claims"][0]["verdict"]
    edited = text.replace(f"**{first}**", "**reproduced**" if first != "reproduced" else "**inconclusive**", 1)
    edited = edited.replace(f'"verdict":"{first}"', '"verdict":"reproduced"' if first != "reproduced"
                            else '"verdict":"inconclusive"', 1)
    readme.write_text(edited)
    assert report.check_readme(readme) == []
    assert "differ from" in report.check_readme(readme, results)[0]
    assert cli.main(["report", "--readme", str(readme), "--check", "--results-dir", str(results)]) == 1
    # the same for the exact-gradient column, checked against the ablation's ledger
    stored = json.loads(report._DATA.search(text).group(1))
    stored["ablation"]["claims"][0]["verdict"] = "a verdict the ablation's ledger does not hold"
    report.update_readme(readme, stored)
    assert report.check_readme(readme) == []
    assert "differ from" in report.check_readme(readme, results)[0]
    readme.write_text(text)
    with pytest.raises(SystemExit):
        cli.main(["report", "--profile", "nope"])
    assert cli.main(argv[:-len(overrides) - 1] + ["--set", "epochs=2"]) == 2  # no such finished run: one line
    assert "run" in capsys.readouterr().err


def test_chapter_times_are_read_where_book_run_stages_the_chapters(tmp_path):
    """The staged notebooks lie flat under <build>/src (leaklib.book.stage_dir), each with the runner's record."""
    import nbformat

    from leaklib.book import stage_dir

    stage = stage_dir(tmp_path / "_build")
    stage.mkdir(parents=True)
    for stem, seconds in (("01_neurons_and_coherence", 20.5), ("02_training", 338.25)):
        nb = nbformat.v4.new_notebook()
        nb.metadata["leaklib_book"] = {"seconds": seconds, "profile": "quick"}
        nbformat.write(nb, stage / f"{stem}.ipynb")
    nbformat.write(nbformat.v4.new_notebook(), stage / "03_robustness.ipynb")  # not executed by the runner
    assert report._chapter_times(tmp_path / "_build") == {"01_neurons_and_coherence": 20.5, "02_training": 338.25}
    text = report.render(_data(chapter_seconds=report._chapter_times(tmp_path / "_build")))
    assert "**6.0 min** of chapter execution (01 20 s, 02 338 s)" in text


def test_jupyter_book_times_are_read_from_its_cache(tmp_path):
    """myst-nb stores each execution's seconds in the jupyter-cache record; the latest record of a chapter counts."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(str(tmp_path / ".jupyter_cache"))
    for stem, seconds, code in (("01_neurons_and_coherence", 20.5, "1"), ("02_training", 300.0, "2"),
                                ("02_training", 338.25, "3"), ("intro", 1.0, "4")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code, execution_count=1)])
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(tmp_path / f"{stem}.ipynb"),
                                                  data={"execution_seconds": seconds}), overwrite=True)
    times = report._jupyter_book_times(tmp_path / ".jupyter_cache")
    assert times == {"01_neurons_and_coherence": 20.5, "02_training": 338.25}
    text = report.render(_data(jupyter_book_seconds=times))
    assert "first build from a fresh clone: **6.0 min** of chapter execution (01 20 s, 02 338 s)" in text
    assert "jupyter-book" not in report.render(_data())  # nothing said where it was not measured
    with pytest.raises(FileNotFoundError, match="jupyter-book build"):
        report._jupyter_book_times(tmp_path / "nowhere")


def test_times_of_another_profile_or_of_other_notebooks_are_not_reported(tmp_path):
    """The staging folder and Jupyter Book's cache are shared by all profiles: a later run of another profile
    must not be reported as this profile's; notebooks outside the book (a scratch 99_*.ipynb) never count."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    from leaklib.book import stage_dir
    from leaklib.sphinx_book import record_path

    cache_dir = tmp_path / ".jupyter_cache"
    cache = get_cache(str(cache_dir))
    stage = stage_dir(tmp_path / "_build")
    stage.mkdir(parents=True)
    for stem, seconds, code in (("01_neurons_and_coherence", 3.0, "1"), ("02_training", 4.0, "2"),
                                ("99_scratch", 500.0, "3")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code, execution_count=1)])
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(tmp_path / f"{stem}.ipynb"),
                                                  data={"execution_seconds": seconds}), overwrite=True)
        record_path(cache_dir, stem).parent.mkdir(exist_ok=True)
        record_path(cache_dir, stem).write_text(json.dumps({"profile": "smoke", "seconds": seconds}))
        staged = nbformat.v4.new_notebook()
        staged.metadata["leaklib_book"] = {"seconds": seconds, "profile": "smoke"}
        nbformat.write(staged, stage / f"{stem}.ipynb")
    expected = {"01_neurons_and_coherence": 3.0, "02_training": 4.0}
    assert report._jupyter_book_times(cache_dir, "smoke") == expected
    assert report._chapter_times(tmp_path / "_build", "smoke") == expected
    with pytest.raises(ValueError, match="LEAKLIB_PROFILE=quick jupyter-book build"):
        report._jupyter_book_times(cache_dir, "quick")
    with pytest.raises(ValueError, match="leaklib book run --profile quick"):
        report._chapter_times(tmp_path / "_build", "quick")
    record_path(cache_dir, "02_training").unlink()  # no record of the profile: not taken on trust
    with pytest.raises(ValueError, match="02: unknown"):
        report._jupyter_book_times(cache_dir, "smoke")


def _speed_results(trainer_ms: float = 36.7) -> dict:
    rows = [{"name": n, "median_s": ms / 1e3, "ratio_to_limit": ms / 33.7, "error": e, "samples_s": [ms / 1e3]}
            for n, ms, e in (("trainer step (train_run's own)", trainer_ms, None), ("leaklib", 35.3, None),
                             ("snnTorch (per-step loop)", 255.3, None), ("SpikingJelly (multi-step)", 0.0, "no module"),
                             ("limit (network without neurons)", 33.7, None))]
    net = {"label": "digits net (quick profile)", "dataset": "digits", "spec": "x", "num_steps": 100, "batch": 32,
           "tau_m": 30.0, "dropout": 0.2, "device": "cpu", "threads": 1, "clock": "thread CPU time",
           "load_average": 1.04, "rows": rows}
    goals = [{"ratio": "trainer / limit", "value": trainer_ms / 33.7, "goal": "<= 1.15", "met": trainer_ms / 33.7 <= 1.15},
             {"ratio": "SpikingJelly / leaklib", "value": float("nan"), "goal": ">= 2", "met": None}]
    return {"versions": {"cpu_count": 2, "processor": "x86_64", "torch": "2.14.1"}, "argv": ["--steps", "11"],
            "networks": [net], "goals": goals, "date": "2026-01-01", "commit": "abc1234"}


def test_speed_block_renders_the_benchmark_and_catches_hand_edits(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# speed\n\n{report.SPEED_START}\n{report.SPEED_END}\n\nafter\n")
    assert "no stored data" in report.check_speed(readme)[0]
    assert report.update_speed(readme, _speed_results()) is True
    assert report.update_speed(readme, _speed_results()) is False
    text = readme.read_text()
    assert text.startswith("# speed\n\n") and text.endswith("\n\nafter\n") and report.check_speed(readme) == []
    assert "| trainer step (train_run's own) | 36.7 | 1.09 |" in text  # ms and the ratio to the limit
    assert "| SpikingJelly (multi-step) | failed: no module |  |" in text
    assert "trainer / limit = **1.089** (goal <= 1.15: met)" in text and "(goal >= 2: not measured)" in text
    assert "samples_s" not in text  # raw samples are not stored in the README
    with_memory = _speed_results()
    with_memory["networks"][0]["rows"][0]["peak_mib"] = 12.34
    assert "| trainer step (train_run's own) | 36.7 | 1.09 | 12.3 |" in report.render_speed(report.speed_data(with_memory))
    readme.write_text(text.replace("| 36.7 |", "| 30.1 |"))
    assert "edited by hand" in report.check_speed(readme)[0]
    report.update_speed(readme, _speed_results(40.0))
    assert "**1.187** (goal <= 1.15: **not met**)" in readme.read_text()
    readme.write_text("nothing")
    assert "speed:start/end" in report.check_speed(readme)[0]


def test_the_readme_speed_block_is_what_its_data_renders():
    assert report.check_speed(REPO / "README.md") == []


def _strict_json(text: str):
    def reject(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=reject)


def test_speed_block_stores_strict_json_and_keeps_failed_rows_on_one_line(tmp_path):
    results = _speed_results()
    rows = results["networks"][0]["rows"]
    # what bench_network stores for a row that failed in warmup: no times, so NaN median and ratio
    rows[3].update(median_s=float("nan"), ratio_to_limit=float("nan"),
                   error="RuntimeError: shape mismatch\n  a | b\nsecond line")
    rows.insert(0, {"name": "no limit", "median_s": 0.01, "ratio_to_limit": float("inf"), "error": None})
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.SPEED_START}\n{report.SPEED_END}\n")
    report.update_speed(readme, results)
    text = readme.read_text()
    assert "NaN" not in text and "Infinity" not in text
    stored = _strict_json(report._SPEED_DATA.search(text).group(1))  # a strict parser reads the stored data
    assert stored["goals"][1]["value"] is None and stored["networks"][0]["rows"][4]["median_s"] is None
    assert report.check_speed(readme) == []
    assert "| SpikingJelly (multi-step) | failed: RuntimeError: shape mismatch a \\| b second line |  |" in text
    assert "| no limit | 10.0 | n/a |" in text
    assert "SpikingJelly / leaklib = **n/a** (goal >= 2: not measured)" in text


def test_speed_markers_problem_says_why_the_readme_cannot_be_written(tmp_path):
    readme = tmp_path / "README.md"
    assert "cannot read it" in report.speed_markers_problem(tmp_path / "missing.md")
    assert "cannot read it" in report.check_speed(tmp_path / "missing.md")[0]
    assert "cannot read it" in report.speed_markers_problem(tmp_path)  # a folder
    readme.write_text("no markers\n")
    assert "speed:start/end exactly once" in report.speed_markers_problem(readme)
    readme.write_text(f"{report.SPEED_START}\n{report.SPEED_END}\n" * 2)
    assert "speed:start/end exactly once" in report.speed_markers_problem(readme)
    readme.write_text(f"{report.SPEED_END}\n{report.SPEED_START}\n")
    assert "start before end" in report.speed_markers_problem(readme)
    readme.write_text(f"{report.SPEED_START}\n{report.SPEED_END}\n")
    assert report.speed_markers_problem(readme) is None  # markers without data: the benchmark may write it
    readme.write_text(f"{report.SPEED_START}\n<!-- speed-data {{\"argv\": 1}} -->\n{report.SPEED_END}\n")
    assert "cannot be rendered" in report.check_speed(readme)[0]  # not a traceback


def test_the_benchmark_fails_before_measuring_with_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("train_step_bench", REPO / "benchmarks" / "train_step.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    (tmp_path / "README.md").write_text("no markers\n")
    for path in (tmp_path / "missing.md", tmp_path / "README.md"):
        assert bench.main(["--readme", str(path), "--device", "no-such-device"]) == 2  # before the device is parsed
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"python benchmarks/train_step.py: error: --readme {path}")


@pytest.mark.parametrize("value, goal, shown", [
    (1.1504, "<= 1.15", "1.1504"),  # 1.15 (or 1.150) next to "not met" would read as a wrong verdict
    (1.1511025012836509, "<= 1.15", "1.151"),
    (1.15, "<= 1.15", "1.150"), (1.1496, "<= 1.15", "1.150"),  # met, and 1.150 is
    (1.15000001, "<= 1.15", "1.15000001"),
    (3.9996, ">= 4", "3.9996"), (4.0004, ">= 4", "4.000"), (7.108670936010686, ">= 4", "7.109"),
    (float("nan"), ">= 2", "n/a"), (None, ">= 2", "n/a"), (1.23456, "~ 1", "1.235"),
])
def test_goal_ratios_show_enough_decimals_for_their_verdict(value, goal, shown):
    assert report.goal_value(value, goal) == shown


def test_the_boundary_verdict_is_readable_in_the_block():
    results = _speed_results(1.1504 * 33.7)
    results["goals"][0]["value"] = 1.1504
    text = report.render_speed(report.speed_data(results))
    assert "trainer / limit = **1.1504** (goal <= 1.15: **not met**)" in text
