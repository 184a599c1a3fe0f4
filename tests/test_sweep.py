"""Sweep tables and the per-run analysis cache."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest

from leaklib.profiles import get_profile
from leaklib.runs import read_json
from leaklib.sweep import cached, ensure_sweep, history_table, metrics_table, summarize, sweep_configs, tau_sort_key

TINY = replace(get_profile("smoke"), epochs=1, taus=(30.0, math.inf), seeds=(1, 2), train_subset=60, test_subset=20)


def test_sweep_configs_cover_the_grid_in_order():
    configs = sweep_configs(TINY)
    assert [(c.dataset, c.tau_m, c.seed) for c in configs] == [
        ("digits", 30.0, 1), ("digits", 30.0, 2), ("digits", math.inf, 1), ("digits", math.inf, 2)]


def test_tables_read_what_the_runs_wrote(tmp_path):
    configs = ensure_sweep(TINY, results_dir=tmp_path, device="cpu", progress=False, log=lambda s: None)
    history = history_table(configs, tmp_path)
    metrics = metrics_table(configs, tmp_path)
    assert len(history) == len(configs) * TINY.epochs and len(metrics) == len(configs)
    assert set(history.columns) >= {"dataset", "tau_m", "seed", "epoch", "test_acc", "train_sse", "test_sse"}
    for config, row in zip(configs, metrics.itertuples()):
        tau = "inf" if math.isinf(config.tau_m) else "30"
        folder = tmp_path / "smoke" / config.variant() / "digits" / f"tau-{tau}" / f"seed-{config.seed}"
        assert row.test_acc == read_json(folder / "metrics.json")["test_acc"]


def test_summarize_mean_and_sample_std_by_hand():
    table = pd.DataFrame({"dataset": ["d"] * 3 + ["e"], "tau_m": [30.0] * 3 + [math.inf], "x": [1.0, 2.0, 6.0, 5.0]})
    out = summarize(table, "x")
    first = out.iloc[0]
    assert first["mean"] == 3.0 and first["std"] == pytest.approx(math.sqrt(((1 - 3) ** 2 + 1 + 9) / 2))
    assert first["n"] == 3 and math.isnan(out.iloc[1]["std"]) and out.iloc[1]["n"] == 1
    with pytest.raises(KeyError, match="not in table"):
        summarize(table, "y")


def test_cached_computes_once_per_settings(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    path = tmp_path / "a" / "x.json"
    assert cached(path, {"k": 1}, compute) == {"value": 1}
    assert cached(path, {"k": 1}, compute) == {"value": 1} and len(calls) == 1
    assert cached(path, {"k": 2}, compute) == {"value": 2} and len(calls) == 2


def test_tau_order_is_if_first_then_more_leak():
    assert sorted([30.0, math.inf, 100.0], key=tau_sort_key) == [math.inf, 100.0, 30.0]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    results = tmp_path_factory.mktemp("sweep")
    profile = replace(TINY, analysis_images=12, seeds=(1,))
    return profile, ensure_sweep(profile, results_dir=results, device="cpu", progress=False, log=lambda s: None), results


def test_robustness_and_clean_tables_agree_and_are_cached(tiny_sweep):
    from leaklib.sweep import analysis_path, clean_table, robustness_table

    profile, configs, results = tiny_sweep
    robust = robustness_table(configs, results, device="cpu", progress=False)
    assert len(robust) == len(configs) * 2 * 2 * 9 and set(robust.tau_m) == {30.0, math.inf}
    clean = clean_table(configs, results, device="cpu", progress=False)
    for row in clean.itertuples():
        zero = robust[(robust.tau_m == row.tau_m) & (robust.severity == 0)].accuracy.unique()
        assert list(zero) == [row.accuracy]  # the clean pass and severity 0 encode identically
        assert row.n == 12 and len(row.critical_frequency) == 12
    stamp = analysis_path(configs[0], results, "robustness").stat().st_mtime_ns
    again = robustness_table(configs, results, device="cpu", progress=False)
    assert analysis_path(configs[0], results, "robustness").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(robust, again)


def test_learning_curve_figure_has_three_panels_per_dataset_and_a_line_per_tau(tiny_sweep):
    from leaklib.figures import fig_learning_curves

    profile, configs, results = tiny_sweep
    fig = fig_learning_curves(history_table(configs, results))
    # one line per tau_m in each panel; the train-SSE panel draws the eval-mode value as a second (dashed) line
    assert len(fig.axes) == 3 and [len(ax.lines) for ax in fig.axes] == [len(profile.taus), 2 * len(profile.taus),
                                                                        len(profile.taus)]
    assert {line.get_linestyle() for line in fig.axes[1].lines} == {"-", "--"}
    with pytest.raises(ValueError, match="lacks column"):
        fig_learning_curves(history_table(configs, results).drop(columns="test_sse"))


def test_clean_table_keeps_the_runs_seed(tiny_sweep):
    from leaklib.sweep import ANALYSIS_SEED, clean_table

    profile, configs, results = tiny_sweep
    clean = clean_table(configs, results, device="cpu", progress=False)
    assert list(clean.seed) == [c.seed for c in configs] and set(clean.analysis_seed) == {ANALYSIS_SEED}


def test_a_run_held_by_another_process_is_waited_for_not_a_failed_sweep(tmp_path):
    """Two chapters on one results folder: the second used to fail (SweepIncomplete: 'held') on every
    run the first was training; it waits for the holder and then reuses or trains the run."""
    import subprocess
    import sys
    import time

    profile = replace(TINY, taus=(30.0,), seeds=(1,))
    folder = sweep_configs(profile)[0].folder(tmp_path)
    marker = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, pathlib\n"
        "from leaklib.locks import Lock\n"
        f"with Lock({str(folder)!r}, 'trained', folder=True):\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        "    time.sleep(3)\n")])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and holder.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the lock holder did not start"
        lines: list[str] = []
        configs = ensure_sweep(profile, results_dir=tmp_path, device="cpu", progress=False, log=lines.append)
        assert holder.poll() == 0  # it was waited for: the holder had ended when the run was trained
        assert any("[lock] waiting" in line for line in lines), lines
        assert read_json(configs[0].folder(tmp_path) / "metrics.json")["status"] == "finished"
    finally:
        holder.kill()
        holder.wait()
