"""Figure functions of Sec. 4 on tiny synthetic tables: panel and line counts, colours, required columns."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.container import BarContainer, ErrorbarContainer

from leaklib.figures import fig3_robustness, fig4_spectrum, fig5_critical_frequency, fig5_sse, fig6_enwsi
from leaklib.plotting import plt, tau_color

TAUS = (30.0, 100.0, math.inf)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _robustness() -> pd.DataFrame:
    rows = [{"dataset": d, "tau_m": t, "seed": s, "scenario": sc, "noise": n, "severity": sev,
             "accuracy": max(0.0, 0.9 - 0.05 * sev * (1 if math.isinf(t) else 0.5)) + 0.01 * s}
            for d, t, s, sc, n, sev in itertools.product(("cifar10", "svhn"), TAUS, (1, 2), (1, 2),
                                                         ("gaussian", "impulse"), range(9))]
    return pd.DataFrame(rows)


def test_fig3_panels_lines_and_colours():
    fig = fig3_robustness(_robustness())
    assert len(fig.axes) == 2 * 2 * 2  # scenario x (dataset x noise)
    for ax in fig.axes:
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 3
        colours = {to_rgba(c.lines[0].get_color()) for c in bars}
        assert colours == {to_rgba(tau_color(t)) for t in TAUS}
        assert len(bars[0].lines[0].get_xdata()) == 9
    # IF is drawn first: mean over seeds 1, 2 at severity 0 is 0.9 + 0.015, in percent
    assert fig.axes[0].containers[0].lines[0].get_ydata()[0] == pytest.approx(91.5)


def test_fig3_rejects_missing_columns_and_percent_accuracies():
    table = _robustness()
    with pytest.raises(ValueError, match="severity"):
        fig3_robustness(table.drop(columns="severity"))
    with pytest.raises(ValueError, match="fraction"):
        fig3_robustness(table.assign(accuracy=table["accuracy"] * 100))


def test_fig4_bars_and_fitted_curves_per_condition():
    freqs = np.linspace(0, 1, 11)
    # white noise: equal power per bin, half of it in the Nyquist bin (single-sided spectrum)
    rows = [{"condition": c, "image": i, "frequency": f,
             "power": (0.5 if f == 1 else 1.0) * (1 + i) + (f if c == "noisy" else 0)}
            for c in ("clean", "noisy") for i in range(3) for f in freqs]
    fig = fig4_spectrum(pd.DataFrame(rows))
    (ax,) = fig.axes
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 2 and len(bars[0]) == 10 and len(ax.lines) == 2  # DC left out; one fit per condition
    # whatever each image's scale, a white spectrum becomes a uniform density on its bins' span [0.05, 1]
    assert [p.get_height() for p in bars[0]] == pytest.approx([1 / 0.95] * 10)
    assert bars[0][-1].get_width() == pytest.approx(0.05) and bars[0][0].get_x() == pytest.approx(0.05)
    with pytest.raises(ValueError, match="power"):
        fig4_spectrum(pd.DataFrame(rows).drop(columns="power"))


def test_fig5_critical_frequency_one_panel_per_tau_with_means():
    rng = np.random.default_rng(0)
    rows = [{"tau_m": t, "condition": c, "critical_frequency": v}
            for t in TAUS for c in ("clean", "noisy") for v in rng.integers(1, 50, 20) / 50]
    rows.append({"tau_m": 30.0, "condition": "clean", "critical_frequency": math.nan})
    table = pd.DataFrame(rows)
    fig = fig5_critical_frequency(table)
    assert len(fig.axes) == 3
    for ax, tau in zip(fig.axes, (math.inf, 100.0, 30.0)):
        assert len([c for c in ax.containers if isinstance(c, BarContainer)]) == 2 and len(ax.lines) == 2
        clean = table[(table["tau_m"] == tau) & (table["condition"] == "clean")]["critical_frequency"]
        assert ax.lines[0].get_xdata()[0] == pytest.approx(np.nanmean(clean))
    assert "1 NaN left out" in fig.axes[2].get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="condition"):
        fig5_critical_frequency(table.drop(columns="condition"))


def test_fig5_sse_lines_on_log_axes():
    rows = [{"dataset": d, "tau_m": t, "seed": s, "epoch": e, "train_sse": 1 / e, "test_sse": 2 / e + s}
            for d in ("cifar10", "svhn") for t in TAUS for s in (1, 2) for e in range(1, 6)]
    fig = fig5_sse(pd.DataFrame(rows))
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert len(ax.lines) == 3 and ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert list(ax.lines[0].get_ydata()) == pytest.approx([2 / e + 1.5 for e in range(1, 6)])
    with pytest.raises(ValueError, match="test_sse"):
        fig5_sse(pd.DataFrame(rows).drop(columns="test_sse"))


def test_fig6_grouped_bars_per_layer():
    rows = [{"dataset": "cifar10", "tau_m": t, "seed": s, "layer": layer, "enwsi": layer * (2 if t == 30.0 else 1) + s}
            for t in TAUS for s in (1, 2) for layer in range(1, 5)]
    fig = fig6_enwsi(pd.DataFrame(rows))
    (ax,) = fig.axes
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3 and all(len(b) == 4 for b in bars)
    assert [p.get_height() for p in bars[2]] == pytest.approx([2 * layer + 1.5 for layer in range(1, 5)])  # tau 30
    with pytest.raises(ValueError, match="layer"):
        fig6_enwsi(pd.DataFrame(rows).drop(columns="layer"))


# ---------------------------------------------------------------------------------------------- Algorithm 1 maps

from leaklib.figures import fig_spike_input_maps  # noqa: E402


def test_fig_spike_input_maps_panels_share_a_symmetric_scale():
    maps = {"clean": np.array([[0.0, 3.0], [-1.0, 2.0]]), "noisy": np.array([[-5.0, 1.0], [0.0, 0.0]]),
            "other": np.zeros((2, 2))}
    fig = fig_spike_input_maps(maps, columns=2)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert [ax.get_title() for ax in panels] == ["clean", "noisy", "other"]
    assert all(ax.images[0].get_clim() == (-5.0, 5.0) for ax in panels)
    np.testing.assert_array_equal(panels[1].images[0].get_array(), maps["noisy"])
    assert sum(1 for ax in fig.axes if not ax.get_visible()) == 1  # the empty fourth slot
    plt.close(fig)
    with pytest.raises(ValueError, match="2-D"):
        fig_spike_input_maps({"bad": np.zeros((1, 2, 2))})
    with pytest.raises(ValueError):
        fig_spike_input_maps({})


def test_fig1_rc_circuit_draws_the_leak_resistor_only_for_lif():
    from leaklib.figures import fig1_rc_circuit

    fig = fig1_rc_circuit()
    lif, if_ = fig.axes
    # the resistor is the only line with more than two vertices (a zigzag)
    assert sum(len(line.get_xdata()) > 2 for line in lif.lines) == 1
    assert sum(len(line.get_xdata()) > 2 for line in if_.lines) == 0
    assert any("open" in t.get_text() for t in if_.texts) and not any("open" in t.get_text() for t in lif.texts)
    plt.close(fig)


def test_fig_bptt_gradient_flat_when_detached_and_decaying_when_exact():
    import math

    from leaklib.figures import fig_bptt_gradient

    currents = [1.5, 0.3, 0.3, 0.3, 0.0, 0.5]  # spikes at t=0 and t=5 (membrane 0.3, 0.57, 0.82, 0.74, 1.17)
    tau = 10.0
    fig = fig_bptt_gradient(currents, tau)
    exact, detached = (line.get_ydata() for line in fig.axes[1].lines)
    beta = math.exp(-1 / tau)
    # steps 1..5 lead to the last spike at t=5; step 0 fired and cuts the chain
    assert exact[0] == 0 and detached[0] == 0
    for t in range(1, 6):
        assert exact[t] == pytest.approx(beta ** (5 - t))
    assert len(set(detached[1:6].round(12))) == 1 and detached[5] < 1  # flat, scaled by the correction (< 1)
    plt.close(fig)
    with pytest.raises(ValueError, match="never fires"):
        fig_bptt_gradient([0.1, 0.1], 30.0)


def test_fig_measures_vs_tau_places_if_right_and_marks_diverged_runs():
    import math

    from leaklib.figures import fig_measures_vs_tau

    rows = [dict(dataset="digits", tau_m=t, seed=s, status="finished", measure=m, value=v + s)
            for t, v in ((30.0, 1.0), (100.0, 2.0), (math.inf, 3.0)) for s in (1, 2) for m in ("accuracy", "spikes")]
    rows += [dict(dataset="digits", tau_m=10.0, seed=s, status="diverged", measure="accuracy", value=float("nan"))
             for s in (1, 2)]
    fig = fig_measures_vs_tau(pd.DataFrame(rows), {"accuracy": "acc"})
    first = [ax for ax in fig.axes if ax.get_visible()][0]
    assert [t.get_text() for t in first.get_xticklabels()] == ["10", "30", "100", "inf"]
    means = first.lines[0].get_ydata()
    assert list(means) == pytest.approx([2.5, 3.5, 4.5])  # mean over seeds, IF last (rightmost)
    assert any("2×diverged" in t.get_text() for t in first.texts)
    assert "acc" in first.get_title()
    plt.close(fig)
