"""Run folders that cannot lose or mislabel a run: locks, checkpoint and JSON checks, device checks,
one-line errors (offline download, Ctrl-C, read-only folder). Each test sets up the failure the
review reproduced, then shows one line of error (or the right reuse) and intact files."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from leaklib import cli
from leaklib.locks import STALE_AFTER_S, Lock, LockHeld
from leaklib.profiles import get_profile
from leaklib.runs import RunFileError, atomic_write_json, read_json, read_jsonl
from leaklib.train import RunConfig, load_model, load_run, train_run

TINY = replace(get_profile("smoke"), train_subset=64, test_subset=20, train_eval_subset=20)
SET = ["--set", "train_subset=64", "test_subset=20", "train_eval_subset=20"]
QUIET = dict(progress=False, log=lambda s: None)


def _config(tau: float = 30.0, seed: int = 1, profile=TINY) -> RunConfig:
    return RunConfig(profile, "digits", tau, seed)


def _snapshot(folder: Path) -> dict[str, bytes]:
    """The run's files (not its logs/, where a failed attempt is recorded for `leaklib status`)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != "logs"}


def _no_temporary_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".running." in p.name]


def _train(results: Path, *extra: str, tau: str = "30") -> list[str]:
    return ["train", "--profile", "smoke", "--dataset", "digits", "--tau", tau, "--seeds", "1", "--results-dir",
            str(results), "--quiet", *SET, *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, RunConfig]:
    """One finished run (the reference for every damaged copy below)."""
    results = tmp_path_factory.mktemp("finished")
    config = _config()
    train_run(config, results, device="cpu", **QUIET)
    return results, config


def _copy(finished, tmp_path: Path) -> tuple[Path, Path, RunConfig]:
    results, config = finished
    shutil.copytree(results, tmp_path / "r")
    return tmp_path / "r", config.folder(tmp_path / "r"), config


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- one process per run folder

def test_second_process_on_a_live_run_names_the_holder_and_moves_on(finished, tmp_path, capsys):
    """Two `leaklib train` on one run: the second used to rename the first's live folder away."""
    results, folder, config = _copy(finished, tmp_path)
    (folder / "metrics.json").unlink()  # the run is mid-training ...
    before = _snapshot(folder)
    with Lock(folder, "trained", folder=True):  # ... by this (live) process
        code = cli.main(_train(results, "--threads", "1"))
        out, err = capsys.readouterr()
        assert code == 0
        assert f"being trained by {socket.gethostname()} pid {os.getpid()}" in out
        assert "skipped" in err and len(err.strip().splitlines()) == 1
        assert {k: v for k, v in _snapshot(folder).items() if "owner" not in k} == \
            {k: v for k, v in before.items() if "owner" not in k}
    assert not (folder / ".run.owner.json").exists()  # released


def test_lock_of_a_dead_process_is_taken_over_with_one_line(tmp_path):
    target = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom leaklib.locks import Lock\n"
                               f"Lock({str(target)!r}, 'trained', folder=True).acquire()\nprint('held', flush=True)\n"
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockHeld, match=f"pid {holder.pid}"):
        Lock(target, "trained", folder=True).acquire()
    holder.kill()
    holder.wait()
    lines: list[str] = []
    t0 = time.monotonic()
    with Lock(target, "trained", folder=True, log=lines.append):
        assert time.monotonic() - t0 < 2
    assert len(lines) == 1 and f"stale lock of {socket.gethostname()} pid {holder.pid}" in lines[0]


def test_lock_record_of_another_host(tmp_path):
    """flock may not reach across hosts: a fresh record of another host counts as held, a silent one is stale."""
    target = tmp_path / "run"
    lock = Lock(target, "trained", folder=True)
    target.mkdir()
    record = {"host": "node-b", "pid": 4711, "since": "earlier", "heartbeat": time.time(), "job": "88_1"}
    atomic_write_json(lock.owner_path, record)
    with pytest.raises(LockHeld, match="node-b pid 4711, job 88_1"):
        Lock(target, "trained", folder=True).acquire()
    atomic_write_json(lock.owner_path, {**record, "heartbeat": time.time() - STALE_AFTER_S - 1})
    lines: list[str] = []
    with Lock(target, "trained", folder=True, log=lines.append):
        assert read_json(lock.owner_path)["pid"] == os.getpid()
    assert len(lines) == 1 and "no heartbeat" in lines[0]


def test_analysis_cache_waits_for_its_holder_and_recomputes_corrupt_json(tmp_path):
    import threading

    from leaklib.sweep import cached

    path = tmp_path / "analysis" / "x.json"
    path.parent.mkdir()
    path.write_text("{not json")
    lines: list[str] = []
    assert cached(path, {"k": 1}, lambda: [1, 2], log=lines.append) == [1, 2]
    assert lines == [f"[cache] {path} is not valid JSON (Expecting property name enclosed in double quotes at line 1, "
                     f"column 2); recomputing it"]
    assert read_json(path)["value"] == [1, 2]
    # a second process computing the same cache waits for the first and reuses its value
    holder = Lock(path, "computed", folder=False)
    holder.acquire()

    def finish() -> None:
        time.sleep(0.5)
        atomic_write_json(path, {"key": __import__("leaklib.runs").runs.config_hash({"k": 2}), "value": "theirs"})
        holder.release()

    thread = threading.Thread(target=finish)
    thread.start()
    lines.clear()
    assert cached(path, {"k": 2}, lambda: "mine", log=lines.append) == "theirs"
    thread.join()
    assert len(lines) == 1 and "waiting" in lines[0] and f"being computed by {socket.gethostname()}" in lines[0]
    assert holder.lock_path == tmp_path / "analysis" / ".x.json.lock"


# --------------------------------------------------------------------------- checkpoints and JSON

def test_cuda_checkpoint_resumes_on_cpu_with_a_clear_reseed(finished, tmp_path):
    """A checkpoint written on CUDA (16-byte Philox generator state) died on the CPU with
    'Expected a CPUGeneratorImplState of size 5056'; it now resumes, says so, and records it."""
    results, folder, config = _copy(finished, tmp_path)
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    cuda_state = torch.zeros(16, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="CPUGeneratorImplState"):  # the failure as it was
        torch.Generator().set_state(cuda_state)
    torch.save({**state, "epoch": 1, "generator": cuda_state}, folder / "checkpoint.pt")
    history = read_jsonl(folder / "history.jsonl")
    (folder / "history.jsonl").write_text(json.dumps(history[0]) + "\n")
    (folder / "metrics.json").unlink()
    record = read_json(folder / "config.json")
    atomic_write_json(folder / "config.json", {**record, "device": "cuda:0"})
    lines: list[str] = []
    metrics = train_run(config, results, device="cpu", progress=False, log=lines.append)
    assert metrics["status"] == "finished" and metrics["epochs"] == TINY.epochs
    note = [line for line in lines if "random-generator state is from another device (cuda:0)" in line]
    assert len(note) == 1 and "bit for bit" in note[0]
    assert read_json(folder / "config.json")["rng_reseeded"] == [
        {"epoch": 1, "checkpoint_device": "cuda:0", "device": "cpu"}]


@pytest.mark.parametrize("damage, message", [
    ("short_history", "history.jsonl has 1 epoch(s) but the run's checkpoint/metrics count 2; restore it, or "
                      "delete checkpoint.pt to retrain this run from scratch"),
    ("epoch_beyond", "checkpoint.pt is at epoch 7 but this run has 2 epoch(s); delete it to retrain"),
    ("truncated", "checkpoint.pt is unreadable (truncated?"),
    ("other_settings", "checkpoint.pt belongs to other settings"),
])
def test_damaged_interrupted_run_is_one_line_and_untouched(finished, tmp_path, capsys, damage, message):
    """Used to give a wrong epoch count with exit 0, accept an epoch past the end, or a 23-line traceback."""
    results, folder, config = _copy(finished, tmp_path)
    (folder / "metrics.json").unlink()  # interrupted: it will resume from the checkpoint
    if damage == "short_history":
        (folder / "history.jsonl").write_text(json.dumps(read_jsonl(folder / "history.jsonl")[0]) + "\n")
    elif damage == "truncated":
        data = (folder / "checkpoint.pt").read_bytes()
        (folder / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    else:
        state = torch.load(folder / "checkpoint.pt", weights_only=False)
        state.update({"epoch": 7} if damage == "epoch_beyond" else {"config_hash": "0" * 16})
        torch.save(state, folder / "checkpoint.pt")
    before = _snapshot(folder)
    assert cli.main(_train(results)) == 2
    err = _one_error_line(capsys)
    assert message in err and str(folder) in err
    assert _snapshot(folder) == before and _no_temporary_files(results)


def test_finished_run_with_corrupt_checkpoint_is_not_reused(finished, tmp_path, capsys):
    """It used to be reused, and the chapters then crashed in load_model."""
    results, folder, config = _copy(finished, tmp_path)
    (folder / "checkpoint.pt").write_bytes((folder / "checkpoint.pt").read_bytes()[:100])
    assert cli.main(_train(results)) == 2
    err = _one_error_line(capsys)
    assert f"{folder / 'checkpoint.pt'} of this finished run is unreadable (truncated?); restore it, or delete " \
           f"{folder} to retrain this run" in err
    with pytest.raises(RunFileError, match="checkpoint.pt is unreadable") as exc:
        load_model(config, results)
    assert len(str(exc.value).splitlines()) == 1


@pytest.mark.parametrize("name, content", [("metrics.json", "{\"config_hash\": "), ("history.jsonl", "{]\n"),
                                           ("metrics.json", "")])
def test_corrupt_json_names_the_file(finished, tmp_path, capsys, name, content):
    results, folder, config = _copy(finished, tmp_path)
    (folder / name).write_text(content)
    assert cli.main(_train(results)) == 2
    err = _one_error_line(capsys)
    assert str(folder / name) in err and ("delete it" in err or "restore it" in err)
    with pytest.raises(RunFileError, match=name.replace(".", r"\.")):
        load_run(config, results)


def test_every_load_checks_the_config_hash(finished, tmp_path):
    """load_run/load_model returned a 3-epoch run when asked for a 2-epoch config."""
    results, folder, config = _copy(finished, tmp_path)
    record = read_json(folder / "config.json")
    atomic_write_json(folder / "config.json", {**record, "config_hash": "f" * 16})
    with pytest.raises(RunFileError, match="config.json belongs to other settings"):
        load_run(config, results)
    atomic_write_json(folder / "config.json", record)
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    torch.save({**state, "epoch": 1}, folder / "checkpoint.pt")
    with pytest.raises(RunFileError, match="does not match"):
        load_model(config, results)
    other = _config(profile=replace(TINY, epochs=3))
    assert other.folder(results) != folder  # another epoch count is another folder
    with pytest.raises(FileNotFoundError, match="has not finished"):
        load_run(other, results)


def test_exact_tau_is_its_own_run(finished, tmp_path, capsys):
    """--tau 30.000001 used to reuse the tau_m=30 run."""
    results, folder, config = _copy(finished, tmp_path)
    assert cli.main(_train(results, "--epochs", "1", tau="30.000001")) == 0
    out = capsys.readouterr().out
    assert "reused" not in out and "finished" in out
    assert (results / "smoke" / RunConfig(replace(TINY, epochs=1), "digits", 30.000001, 1).variant() / "digits" /
            "tau-30.000001" / "seed-1" / "metrics.json").exists()


# --------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("device, message", [("mps", "device must be auto, cpu or cuda[:N], got 'mps'"),
                                             ("foo", "got 'foo'"), ("cuda:7", "cuda:7")])
def test_bad_device_is_one_line_before_anything_is_written(tmp_path, capsys, device, message):
    assert cli.main(_train(tmp_path / "r", "--device", device)) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_offline_download_is_one_line_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data = tmp_path / "data"
    code = cli.main(["train", "--profile", "smoke", "--dataset", "cifar10", "--tau", "30", "--seeds", "1",
                     "--results-dir", str(tmp_path / "r"), "--data-root", str(data), "--download", "--quiet"])
    assert code == 2
    err = _one_error_line(capsys)
    assert "could not be downloaded" in err and "name resolution" in err and str(data) in err
    assert not [p for p in data.rglob("*") if p.is_file()]


def test_read_only_results_folder_is_one_line_and_loses_nothing(finished, tmp_path, capsys, monkeypatch):
    results, folder, config = _copy(finished, tmp_path)
    (folder / "metrics.json").unlink()  # interrupted: resuming it has to write
    before = _snapshot(folder)
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path, *args, **kwargs):  # a read-only filesystem (chmod does not stop root)
        if str(path).startswith(str(results)) and (args and args[0] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    def refuse_mkdir(path, *args, **kwargs):
        if str(path).startswith(str(results)) and not os.path.exists(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    monkeypatch.setattr(os, "mkdir", refuse_mkdir)
    code = cli.main(_train(results))
    monkeypatch.undo()
    assert code == 2
    err = _one_error_line(capsys)
    assert "Read-only file system" in err and str(results) in err
    assert _snapshot(folder) == before and _no_temporary_files(results)


def test_ctrl_c_in_train_is_one_line_exit_130_and_resumes(finished, tmp_path, capsys, monkeypatch):
    """Ctrl-C mid-epoch (SIGINT from the test hook, deterministic): one line, 130, no temporary file."""
    results = tmp_path / "r"
    for key, value in {"LEAKLIB_KILL_AT": "2:0", "LEAKLIB_KILL_SIGNAL": "INT"}.items():
        monkeypatch.setenv(key, value)
    assert cli.main(_train(results)) == 130
    assert _one_error_line(capsys) == "leaklib: interrupted; finished epochs and results are saved, the same " \
                                      "command resumes"
    folder = _config().folder(results)
    assert len(read_jsonl(folder / "history.jsonl")) == 1 and not (folder / "metrics.json").exists()
    assert _no_temporary_files(results) and not (folder / ".run.owner.json").exists()
    monkeypatch.delenv("LEAKLIB_KILL_AT")
    assert cli.main(_train(results)) == 0 and "[resume]" in capsys.readouterr().out
    want = read_json(finished[1].folder(finished[0]) / "metrics.json")
    got = read_json(folder / "metrics.json")
    assert {k: got[k] for k in ("test_acc", "test_sse", "train_sse", "epochs")} == \
        {k: want[k] for k in ("test_acc", "test_sse", "train_sse", "epochs")}


def test_ctrl_c_in_book_run_is_one_line_exit_130_and_no_running_notebook(tmp_path):
    from test_book import make_notebook, make_root

    root = make_root(tmp_path)
    make_notebook(root / "book" / "01_neurons_and_coherence.ipynb", "print('started', flush=True)\n"
                  "import time\ntime.sleep(120)")
    build = tmp_path / "build"
    proc = subprocess.Popen([sys.executable, "-m", "leaklib.cli", "book", "run", "--root", str(root), "--no-html",
                             "--build-dir", str(build), "--results-dir", str(tmp_path / "r"), "--figures-dir",
                             str(tmp_path / "f")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    running = build / "src" / ".01_neurons_and_coherence.running.ipynb"  # the staged copy is flat, as book/
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (running.exists() and "started" in running.read_text()):
        time.sleep(0.2)
    assert running.exists(), proc.communicate(timeout=5)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["[book] interrupted; chapters executed so far are kept and reused by the "
                                        "same command"]
    assert not running.exists() and _no_temporary_files(build)


def _status_row(results: Path, capsys) -> str:
    capsys.readouterr()
    assert cli.main(["status", "--profile", "smoke", "--dataset", "digits", "--tau", "30", "--seeds", "1",
                     "--results-dir", str(results), *SET]) == 0
    return capsys.readouterr().out.splitlines()[2]


def _with(folder: Path, name: str, **changes) -> None:
    atomic_write_json(folder / name, {**read_json(folder / name), **changes})


@pytest.mark.parametrize("name, damage, message", [
    ("config.json", lambda f: (f / "config.json").write_text("{\"config_hash\": "), "config.json is not valid JSON"),
    ("config.json", lambda f: _with(f, "config.json", config_hash="f" * 16), "config.json belongs to other settings"),
    ("config.json", lambda f: (f / "config.json").unlink(), "config.json is missing"),
    ("metrics.json", lambda f: _with(f, "metrics.json", epochs="2"), "metrics.json is damaged"),
    ("metrics.json", lambda f: (f / "metrics.json").write_text("[1, 2]\n"), "metrics.json is damaged"),
])
def test_a_finished_run_with_a_damaged_record_is_not_reused_and_status_says_so(finished, tmp_path, capsys, name,
                                                                              damage, message):
    """`leaklib train` reused a finished run whose config.json was corrupt or of other settings (the
    chapters then failed in load_run); metrics.json with a non-integer epoch count was a ValueError
    without a file name in `train` and a traceback in `status`."""
    results, folder, config = _copy(finished, tmp_path)
    damage(folder)
    before = _snapshot(folder)
    assert cli.main(_train(results)) == 2
    err = _one_error_line(capsys)
    assert message in err and str(folder / name) in err
    assert _snapshot(folder) == before
    with pytest.raises(RunFileError, match=message.replace(".", r"\.")):
        load_run(config, results)
    row = _status_row(results, capsys)
    assert " damaged " in row and name in row, row


def test_status_gives_the_remedies_train_gives(finished, tmp_path, capsys):
    """`leaklib status` told to delete a damaged history.jsonl 'to recompute it': nothing recomputes it."""
    results, folder, config = _copy(finished, tmp_path)
    (folder / "history.jsonl").write_text("{]\n")
    row = _status_row(results, capsys)
    assert " damaged " in row and f"restore it, or delete {folder} to retrain this run" in row, row


def test_kill_9_inside_an_atomic_write_leaves_no_temporary_file_after_the_resume(finished, tmp_path):
    """kill -9 while checkpoint.pt was being written left its .tmp in the run folder for good (the
    resume wrote new ones beside it); a cut analysis-cache write likewise."""
    results = tmp_path / "r"
    config = _config()
    script = (
        "import os, signal, sys\n"
        "from leaklib import runs\n"
        "real = os.replace\n"
        "def replace(src, dst):\n"
        "    if str(dst).endswith('checkpoint.pt'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)  # the data is written, the rename not yet\n"
        "    return real(src, dst)\n"
        "os.replace = replace\n"
        "from tests.test_run_folders import _config, QUIET\n"
        "from leaklib.train import train_run\n"
        f"train_run(_config(), {str(results)!r}, device='cpu', **QUIET)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    folder = config.folder(results)
    assert [p.name for p in folder.glob(".checkpoint.pt.*.tmp")]  # what the kill left
    assert train_run(config, results, device="cpu", **QUIET)["status"] == "finished"
    assert _no_temporary_files(results)
    assert read_json(folder / "metrics.json")["test_acc"] == read_json(finished[1].folder(finished[0]) /
                                                                       "metrics.json")["test_acc"]
    from leaklib.sweep import cached

    cache = folder / "analysis" / "x.json"
    cache.parent.mkdir()
    (cache.parent / ".x.json.abc123.tmp").write_bytes(b"{\"key\": ")  # a cut write of this cache
    assert cached(cache, {"k": 1}, lambda: 5, log=lambda s: None) == 5
    assert _no_temporary_files(results)


def test_the_leaklib_command_exits_130_after_ctrl_c_whatever_arrives_during_exit(tmp_path):
    # cli.run after main() returned 130: the exit handlers run (the kernels' socket folder is removed there)
    # with a second SIGINT ignored, and no interpreter finalization can turn the status into a signal death
    marker = tmp_path / "exit-handler-ran"
    script = (
        "import atexit, os, signal, sys\n"
        "import leaklib.cli as cli\n"
        "def late():\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while the process winds down\n"
        f"    open({str(marker)!r}, 'w').write(str(signal.getsignal(signal.SIGINT) == signal.SIG_IGN))\n"
        "atexit.register(late)\n"
        "cli.main = lambda argv=None: 130\n"
        "cli.run()\n"
        "print('not reached')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert marker.read_text() == "True" and "not reached" not in proc.stdout and proc.stderr == ""
