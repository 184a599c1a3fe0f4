"""The claims chapter renders whatever the data say: a diverged tau_m and train-SSE ranges that do not overlap
give 'cannot decide' rows with their reasons, never an exception that stops the book."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill as pm

from leaklib.runs import atomic_write_json, read_json, read_jsonl, jsonl_text
from leaklib.sweep import open_sweep

REPO = Path(__file__).resolve().parents[1]
#: A smoke sweep of two seeds (an interval needs two) on three tau_m, small enough for seconds.
OVERRIDES = {"taus": "30,100,inf", "seeds": "1,2", "epochs": "2", "train_subset": "80", "test_subset": "30",
             "train_eval_subset": "30", "analysis_images": "20", "robustness_images": "20"}


def _outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            for value in out.get("data", {}).values():
                text.append(value if isinstance(value, str) else json.dumps(value))
    return "\n".join(text)


def test_claims_chapter_renders_cannot_decide_rows_for_a_diverged_tau_and_disjoint_ranges(tmp_path):
    results = tmp_path / "results"
    sweep = open_sweep("smoke", OVERRIDES, results, "cpu", jobs=1, log=lambda s: None)
    by = {(c.tau_m, c.seed): c for c in sweep.configs}
    # tau_m = 100, seed 2 diverged: its metrics say so (the trainer writes exactly this on a silent layer)
    folder = by[100.0, 2].folder(results)
    metrics = read_json(folder / "metrics.json")
    atomic_write_json(folder / "metrics.json", {**metrics, "status": "diverged", "diverged_epoch": 2,
                                                "reason": "digits tau_m=100 seed=2: no spikes reached hidden layer 2"})
    # tau_m = 30 trained on a train-SSE range far below everyone else's: the ranges do not overlap
    for seed in (1, 2):
        path = by[30.0, seed].folder(results) / "history.jsonl"
        history = [{**h, "train_sse_eval": h["train_sse_eval"] * 1e-4} for h in read_jsonl(path)]
        path.write_text(jsonl_text(history))
    out = tmp_path / "07_claims.ipynb"
    pm.execute_notebook(str(REPO / "book" / "07_claims.ipynb"), str(out), kernel_name="python3", progress_bar=False,
                        parameters={"profile": "smoke", "device": "cpu", "results_dir": str(results),
                                    "figures_dir": str(tmp_path / "figures"), "overrides": OVERRIDES},
                        cwd=str(tmp_path))
    text = _outputs(nbformat.read(out, as_version=4))
    claims = json.loads((sweep.ledger_dir() / "claims.json").read_text())["claims"]
    verdicts = {c["id"]: c for c in claims}
    assert verdicts["5"]["verdict"] == "cannot decide" and "do not overlap" in verdicts["5"]["reason"]
    assert verdicts["6"]["verdict"] == "cannot decide" and "diverged" in verdicts["6"]["reason"]
    assert "1 diverged" in text and "cannot decide" in text and "do not overlap" in text
    # claim 14 (Fig. 4) is decided from the input spectra the sweep cached, one reading at a time
    assert [c["id"] for c in claims] == [str(i) for i in range(1, 15)]
    assert "no spectra" not in verdicts["14"]["reason"] and "pixel, scenario 1" in verdicts["14"]["intervals"]
    assert (sweep.ledger_dir() / "digits" / "analysis" / "input_spectra.json").is_file()
    assert (tmp_path / "figures" / "table1.png").is_file() and (tmp_path / "figures" / "fig7_measures_vs_tau.png").is_file()
