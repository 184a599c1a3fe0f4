"""Training spine: resume after kill -9, reuse, determinism, divergence, run folders, profiles and CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from leaklib import cli
from leaklib.profiles import PROFILES, format_tau, get_profile, parse_tau
from leaklib.runs import atomic_write_json, config_hash, read_json, read_jsonl, run_dir
from leaklib.train import RunConfig, evaluate_clean, load_model, load_run, resolve_device, sse_loss, train_run

SMOKE = get_profile("smoke")


def _strip_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("seconds", "eval_seconds")} for h in history]


def _train_cli(results: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LEAKLIB_KILL_AT"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "leaklib.cli", "train", "--profile", "smoke", "--tau", "30",
                           "--seeds", "1", "--results-dir", results, "--quiet", "--threads", "1", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    results = str(tmp_path_factory.mktemp("clean"))
    done = _train_cli(results)
    assert done.returncode == 0, done.stderr
    return RunConfig(SMOKE, "digits", 30.0, 1).folder(results)


@pytest.mark.parametrize("kill_at", ["2:1", "1"])
def test_kill_9_then_same_command_resumes_to_identical_metrics(tmp_path, uninterrupted, kill_at):
    """kill -9 mid-epoch (or right after a checkpoint), rerun: same history and metrics as without the kill."""
    results = str(tmp_path)
    killed = _train_cli(results, {"LEAKLIB_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL
    folder = RunConfig(SMOKE, "digits", 30.0, 1).folder(results)
    assert not (folder / "metrics.json").exists()
    assert read_jsonl(folder / "history.jsonl")  # epoch 1 was saved before the kill
    resumed = _train_cli(results)
    assert resumed.returncode == 0, resumed.stderr
    assert "[resume]" in resumed.stdout
    assert _strip_times(read_jsonl(folder / "history.jsonl")) == _strip_times(
        read_jsonl(uninterrupted / "history.jsonl"))
    got, want = read_json(folder / "metrics.json"), read_json(uninterrupted / "metrics.json")
    for key in ("test_acc", "test_sse", "train_sse", "train_sse_eval", "test_sse_window", "config_hash", "epochs"):
        assert got[key] == want[key]


def test_finished_run_is_reused_not_retrained(uninterrupted):
    before = {p.name: p.stat().st_mtime_ns for p in uninterrupted.iterdir()}
    done = _train_cli(str(uninterrupted.parents[4]))
    assert done.returncode == 0 and "[run 1/1 reused]" in done.stdout
    assert before == {p.name: p.stat().st_mtime_ns for p in uninterrupted.iterdir()}


def test_run_folder_holds_config_versions_commit_and_history(uninterrupted):
    config = read_json(uninterrupted / "config.json")
    expected = RunConfig(SMOKE, "digits", 30.0, 1)
    assert config["config_hash"] == expected.hash() == read_json(uninterrupted / "metrics.json")["config_hash"]
    assert config["seed"] == 1 and config["tau_m"] == "30" and config["num_steps"] == SMOKE.num_steps
    assert {"torch", "numpy", "python", "git_commit", "leaklib"} <= set(config["environment"])
    history = read_jsonl(uninterrupted / "history.jsonl")
    assert [h["epoch"] for h in history] == list(range(1, SMOKE.epochs + 1))
    assert all(0 <= h["test_acc"] <= 1 and h["train_sse"] >= 0 and h["train_sse_eval"] >= 0 for h in history)
    assert read_json(uninterrupted / "metrics.json")["status"] == "finished"
    # the sweep's settings beside its runs, for people browsing results/
    settings = read_json(uninterrupted.parents[2] / "settings.json")
    assert settings["variant"] == uninterrupted.parents[2].name == expected.variant()
    assert settings["leak_grad"] == "detached" and settings["pooling"] == "spiking"


def test_run_files_have_the_mode_a_plain_open_gives(uninterrupted, tmp_path):
    """The atomic writes went through mkstemp (mode 0600): a results folder shared with a group (a
    cluster project directory) held runs nobody else could read."""
    import stat

    (tmp_path / "plain").write_text("x")
    want = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert want & 0o600 == 0o600
    for name in ("config.json", "history.jsonl", "checkpoint.pt", "metrics.json"):
        assert stat.S_IMODE((uninterrupted / name).stat().st_mode) == want, name


def test_trained_model_reloads_and_reproduces_last_test_accuracy(uninterrupted):
    config = RunConfig(SMOKE, "digits", 30.0, 1)
    model = load_model(config, uninterrupted.parents[4])
    from leaklib.data import load_dataset, stratified_subset

    test = stratified_subset(load_dataset("digits", "test"), SMOKE.test_subset, seed=0)
    # the trainer evaluates epoch e (0-based) with seed 10000*seed + e
    again = evaluate_clean(model, test, SMOKE.num_steps, SMOKE.eval_batch_size, seed=10_000 + SMOKE.epochs - 1,
                           device=torch.device("cpu"))
    last = read_jsonl(uninterrupted / "history.jsonl")[-1]
    assert again["accuracy"] == pytest.approx(last["test_acc"])
    assert again["sse"] == pytest.approx(last["test_sse"], rel=1e-5)
    # the eval-mode train SSE: the fixed train subset, seed 20000*seed + e
    train = stratified_subset(stratified_subset(load_dataset("digits", "train"), SMOKE.train_subset, seed=0),
                              SMOKE.train_eval_subset, seed=1)
    on_train = evaluate_clean(model, train, SMOKE.num_steps, SMOKE.eval_batch_size,
                              seed=20_000 + SMOKE.epochs - 1, device=torch.device("cpu"))
    assert on_train["sse"] == pytest.approx(last["train_sse_eval"], rel=1e-5)


def test_changed_settings_get_their_own_folder_and_switching_back_reuses(tmp_path):
    profile = replace(SMOKE, epochs=1)
    first = RunConfig(profile, "digits", math.inf, 3)
    changed = RunConfig(replace(profile, lr=0.05), "digits", math.inf, 3)
    assert first.folder(tmp_path) != changed.folder(tmp_path)
    train_run(first, tmp_path, progress=False, log=lambda s: None)
    train_run(changed, tmp_path, progress=False, log=lambda s: None)
    messages: list[str] = []
    train_run(first, tmp_path, progress=False, log=messages.append)
    assert any("[reuse]" in m for m in messages)
    assert read_json(first.folder(tmp_path) / "metrics.json")["config_hash"] == first.hash()
    assert read_json(changed.folder(tmp_path) / "metrics.json")["config_hash"] == changed.hash()
    # a run's files are only ever read for its own settings
    (changed.folder(tmp_path) / "metrics.json").write_text(json.dumps({"config_hash": "0" * 16}))
    with pytest.raises(ValueError, match="other settings"):
        load_run(changed, tmp_path)


def test_divergence_is_data_naming_tau_epoch_and_layer(tmp_path):
    silent = RunConfig(replace(SMOKE, v_th=1e6, epochs=2), "digits", 100.0, 1)
    metrics = train_run(silent, tmp_path, progress=False, log=lambda s: None)
    assert metrics["status"] == "diverged" and metrics["diverged_epoch"] == 1 and metrics["epochs"] == 0
    assert "hidden layer 1 " in metrics["reason"] and "epoch 1 (tau_m=100)" in metrics["reason"]
    assert read_json(silent.folder(tmp_path) / "metrics.json")["status"] == "diverged"
    exploding = RunConfig(replace(SMOKE, lr=1e30, epochs=2), "digits", math.inf, 1)
    metrics = train_run(exploding, tmp_path, progress=False, log=lambda s: None)
    assert metrics["status"] == "diverged" and "tau_m=inf" in metrics["reason"]
    assert "loss is nan" in metrics["reason"] or "loss is inf" in metrics["reason"]
    assert metrics["epochs"] == len(read_jsonl(exploding.folder(tmp_path) / "history.jsonl"))
    # a diverged run is finished: the same command reuses it
    messages: list[str] = []
    assert train_run(exploding, tmp_path, progress=False, log=messages.append)["status"] == "diverged"
    assert any("[reuse]" in m and "diverged" in m for m in messages)


def test_sse_loss_by_hand():
    prediction = torch.tensor([[0.5, 0.2, 0.0], [0.1, 0.1, 0.9]])
    labels = torch.tensor([0, 2])
    # (0.5-1)^2 + 0.2^2 = 0.29 ; 0.1^2 + 0.1^2 + (0.9-1)^2 = 0.03
    assert torch.allclose(sse_loss(prediction, labels, 3), torch.tensor([0.29, 0.03]))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            resolve_device("cuda")


def test_profiles_scale_the_papers_lr_schedule():
    assert get_profile("paper").milestone_epochs() == [70, 100]
    assert get_profile("paper", epochs=15).milestone_epochs() == [7, 10]
    # a 1-epoch run has no drop to make (round(0.47) = 0 was lifted to 1, a milestone that never acts)
    assert get_profile("paper", epochs=1).milestone_epochs() == []
    assert get_profile("paper", epochs=2).milestone_epochs() == [1]
    assert get_profile("paper").num_steps == 100 and get_profile("paper").batch_size == 64
    assert set(PROFILES) == {"smoke", "quick", "paper-smoke", "paper"}
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("fast")


def test_parse_and_format_tau():
    assert parse_tau("inf") == math.inf and parse_tau("30") == 30.0
    for bad in ("0", "-5", "nan", "abc"):
        with pytest.raises(ValueError):
            parse_tau(bad)
    assert [format_tau(t) for t in (30.0, 100.0, math.inf, 2.5)] == ["30", "100", "inf", "2.5"]
    assert format_tau(30.000001) == "30.000001" and parse_tau(format_tau(30.000001)) == 30.000001
    assert RunConfig(SMOKE, "digits", 30.000001, 1).hash() != RunConfig(SMOKE, "digits", 30.0, 1).hash()


def test_run_dir_layout_and_atomic_json(tmp_path):
    assert run_dir("r", "quick", "digits", math.inf, 2, "ab12cd34").as_posix() == "r/quick/ab12cd34/digits/tau-inf/seed-2"
    assert run_dir("r", "quick", "digits", 30.000001, 2, "v").name == "seed-2"
    assert run_dir("r", "quick", "digits", 30.000001, 2, "v").parent.name == "tau-30.000001"
    for bad in ("", "../x", ".hidden"):
        with pytest.raises(ValueError):
            run_dir("r", "quick", "digits", 30.0, 1, bad)
    path = atomic_write_json(tmp_path / "a" / "m.json", {"tau": math.inf, "x": [1, 2.5]})
    assert json.loads(path.read_text()) == {"tau": "inf", "x": [1, 2.5]}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temporary file left behind


def test_config_hash_is_canonical_and_sensitive():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert RunConfig(SMOKE, "digits", 30.0, 1).hash() != RunConfig(SMOKE, "digits", 30.0, 2).hash()


@pytest.mark.parametrize("argv, message", [
    (["train", "--tau", "0"], "tau_m must be a positive number"),
    (["train", "--tau", "-3"], "tau_m must be a positive number"),
    (["train", "--seeds", "1.5"], "seeds must be integers"),
    (["train", "--dataset", "mnist"], "invalid choice"),
    (["train", "--profile", "fast"], "invalid choice"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_missing_cifar_root_is_one_clear_line(tmp_path, capsys):
    code = cli.main(["train", "--profile", "smoke", "--dataset", "cifar10", "--tau", "30", "--seeds", "1",
                     "--results-dir", str(tmp_path / "r"), "--data-root", str(tmp_path / "nodata"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "download" in err and str(tmp_path / "nodata") in err


@pytest.mark.parametrize("dataset", ["cifar10", "svhn"])
def test_paper_profile_trains_the_papers_networks_on_true_format_files(tmp_path, monkeypatch, dataset):
    """The paper profile's code path (its networks, init gain, dropout, CIFAR-10 augmentation)
    trains end to end on tiny files in the real on-disk formats, shrunk to seconds."""
    from functools import partial

    import leaklib.train as train_module
    from fixtures_data import write_cifar10, write_svhn
    from leaklib.data import load_dataset

    if dataset == "cifar10":
        write_cifar10(tmp_path / "data", n_per_batch=4, n_test=6)
    else:
        write_svhn(tmp_path / "data", "train", n=20)
        write_svhn(tmp_path / "data", "test", n=6)
    # the fixtures are not the real files: skip only the md5 comparison, keep torchvision's loading code
    monkeypatch.setattr(train_module, "load_dataset", partial(load_dataset, verify_checksums=False))
    paper = get_profile("paper")
    # T = 48: the deep layers of the CIFAR-10 net first fire after 25-40 steps (each pooling and IF layer delays)
    tiny = replace(paper, epochs=1, num_steps=48, batch_size=4, train_subset=4, test_subset=2, train_eval_subset=2,
                   eval_batch_size=2)
    config = RunConfig(tiny, dataset, 30.0, 1)
    assert config.spec == paper.architectures[dataset] and tiny.dropout == 0.2 and tiny.init_gain == math.sqrt(2)
    assert (tiny.leak_grad, tiny.correction, tiny.pooling, tiny.momentum) == ("detached", "lee2020", "spiking", 0.0)
    metrics = train_run(config, tmp_path / "r", device="cpu", data_root=tmp_path / "data", progress=False,
                        log=lambda s: None)
    history = read_jsonl(config.folder(tmp_path / "r") / "history.jsonl")
    assert metrics["status"] == "finished", metrics.get("reason")
    assert metrics["epochs"] == 1 and len(history) == 1
    assert read_json(config.folder(tmp_path / "r") / "config.json")["augment"] == (dataset == "cifar10")
    assert all(rate > 0 for rate in history[0]["train_spike_rate_per_layer"])  # every layer spiked
