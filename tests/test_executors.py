"""Sweeps on an executor: a local process pool, submitit's local executor (with a pre-empted and
requeued job), Slurm submission (a stand-in sbatch), `leaklib status`, and the per-run analyses."""

from __future__ import annotations

import math
import os
import shutil
import socket
import stat
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from leaklib import cli
from leaklib.executors import map_runs, parse_time, run_sweep
from leaklib.locks import Lock
from leaklib.profiles import get_profile
from leaklib.runs import atomic_write_json, read_json
from leaklib.sweep import sweep_configs

TINY = replace(get_profile("smoke"), train_subset=64, test_subset=20, train_eval_subset=20, analysis_images=12)
SET = ["--set", "train_subset=64", "test_subset=20", "train_eval_subset=20", "analysis_images=12"]
CONFIGS = sweep_configs(TINY)  # digits x tau_m 30, 100, inf x seed 1
KEYS = ("status", "epochs", "test_acc", "test_sse", "train_sse", "train_sse_eval", "test_sse_window", "config_hash")


@pytest.fixture()
def one_thread():
    """Bit-for-bit comparisons need the same threads per run in every executor (summation order)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The uninterrupted sequential sweep, one thread per run: the reference."""
    results = tmp_path_factory.mktemp("sequential")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = [m for _, m in run_sweep(CONFIGS, results_dir=results, device="cpu", log=lambda s: None)]
    finally:
        torch.set_num_threads(before)
    assert [m["status"] for m in metrics] == ["finished"] * 3
    return results, metrics


def _same(got: list[dict], want: list[dict]) -> None:
    assert [{k: m[k] for k in KEYS} for m in got] == [{k: m[k] for k in KEYS} for m in want]


def test_local_pool_with_two_jobs_equals_the_sequential_sweep(sequential, tmp_path):
    lines: list[str] = []
    results = run_sweep(CONFIGS, executor="local", jobs=2, threads=1, results_dir=tmp_path, device="cpu",
                        log=lines.append)
    _same([m for _, m in results], sequential[1])
    assert lines[0] == "[local] 2 worker process(es), 1 CPU thread(s) each"
    done = sorted(line for line in lines[1:])
    assert len(done) == 3 and all(line.startswith("[run ") and " done] digits tau_m=" in line and "test acc" in line
                                  for line in done)
    log = (CONFIGS[0].folder(tmp_path) / "logs" / "train.log").read_text()
    assert "epoch 2/2" in log and "== done in" in log
    again: list[str] = []
    run_sweep(CONFIGS, executor="local", jobs=2, results_dir=tmp_path, device="cpu", log=again.append)
    assert len(again) == 3 and all("reused" in line for line in again)  # finished runs never run again


def test_submitit_local_sweep_survives_a_preemption_and_requeue(sequential, tmp_path, monkeypatch):
    """Three real subprocess jobs; the tau_m=100 job gets SIGUSR2 (Slurm's pre-emption signal) at
    its epoch 2, is checkpointed and requeued by submitit, resumes from the run's checkpoint, and
    every run ends equal to the uninterrupted sequential sweep."""
    marker = tmp_path / "preempted"
    for key, value in {"LEAKLIB_KILL_AT": "2:0", "LEAKLIB_KILL_SIGNAL": "USR2", "LEAKLIB_KILL_ONCE": str(marker),
                       "LEAKLIB_KILL_RUN": "digits tau_m=100 seed=1"}.items():
        monkeypatch.setenv(key, value)
    lines: list[str] = []
    t0 = time.monotonic()
    results = run_sweep(CONFIGS, executor="submitit-local", jobs=3, results_dir=tmp_path / "r", device="cpu",
                        time=5, log=lines.append)  # time: each job is killed after 5 minutes at worst
    assert time.monotonic() - t0 < 300
    assert marker.exists()  # the pre-emption happened
    _same([m for _, m in results], sequential[1])
    assert sum(line.startswith("[submitted]") and "submitit-local job" in line for line in lines) == 3
    victim = CONFIGS[1].folder(tmp_path / "r")
    log = (victim / "logs" / "train.log").read_text()
    assert "[interrupted] train digits tau_m=100 seed=1: SystemExit" in log
    assert "[resume] digits tau_m=100 seed=1: from epoch 1 of 2" in log
    submitted = read_json(victim / "logs" / "train.submitted.json")
    assert "Requeued job" in Path(submitted["stdout"]).read_text() + Path(submitted["stderr"]).read_text()
    for config in (CONFIGS[0], CONFIGS[2]):
        assert "[resume]" not in (config.folder(tmp_path / "r") / "logs" / "train.log").read_text()


def test_slurm_submission_one_job_per_run_and_finished_runs_skipped(sequential, tmp_path, monkeypatch, capsys):
    """A stand-in sbatch records the submission: resources, extra flags, the requeue signal, the array."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"sbatch": f'cp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"',
                       "srun": "exit 0"}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    results = tmp_path / "r"
    finished = CONFIGS[0].folder(sequential[0])
    shutil.copytree(finished, CONFIGS[0].folder(results))
    code = cli.main(["train", "--profile", "smoke", *SET, "--results-dir", str(results), "--executor", "slurm",
                     "--partition", "gpu", "--time", "1-12:00:00", "--gpus-per-job", "1", "--cpus-per-job", "8",
                     "--mem", "32", "--account", "proj42", "--sbatch", "qos=high", "--sbatch", "exclusive",
                     "--setup", "module load cuda", "--jobs", "2", "--device", "cuda"])
    out = capsys.readouterr().out
    assert code == 0
    assert "[run 1/3 reused] digits tau_m=30 seed=1" in out
    for k, tau in ((0, "100"), (1, "inf")):
        assert f"[submitted] digits tau_m={tau} seed=1: slurm job 4242_{k}, log " in out
    assert "2 job(s) submitted; follow them with `leaklib status --profile smoke" in out
    script = (tmp_path / "submitted.sh").read_text()
    for flag in ("--partition=gpu", "--time=2160", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB",
                 "--account=proj42", "--qos=high", "--exclusive", "--requeue", "--signal=USR2@120", "--array=0-1%2",
                 "--job-name=leaklib-train"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "module load cuda" in script
    record = read_json(CONFIGS[1].folder(results) / "logs" / "train.submitted.json")
    assert record["job"] == "4242_0" and record["executor"] == "slurm"
    # `leaklib status` without sacct: done, queued (with the job id)
    assert cli.main(["status", "--profile", "smoke", *SET, "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "done" in out.splitlines()[2] and "queued" in out.splitlines()[3] and "slurm job 4242_0" in out
    # submitting again while the jobs are queued submits nothing
    (bin_dir / "sacct").write_text("#!/bin/sh\necho PENDING\n")
    (bin_dir / "sacct").chmod(stat.S_IRWXU)
    (tmp_path / "submitted.sh").unlink()
    assert cli.main(["train", "--profile", "smoke", *SET, "--results-dir", str(results), "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "skipped] digits tau_m=100 seed=1: already submitted as slurm job 4242_0 (PENDING)" in out
    assert not (tmp_path / "submitted.sh").exists()
    assert parse_time("90") == 90 and parse_time("1:30:00") == 90 and parse_time("2-00:00:00") == 2880


def test_slurm_refusal_or_no_slurm_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no sbatch, no srun
    argv = ["train", "--profile", "smoke", *SET, "--results-dir", str(tmp_path / "r"), "--executor", "slurm"]
    assert cli.main(argv) == 2
    assert "needs Slurm's sbatch and srun on PATH" in capsys.readouterr().err
    for name, body in {"sbatch": 'echo "sbatch: error: invalid partition specified: gpux" >&2\nexit 1',
                       "srun": "exit 0"}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert cli.main([*argv, "--partition", "gpux"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "leaklib: error: sbatch refused the jobs: sbatch: error: invalid partition specified: gpux"
    assert not (tmp_path / "r").exists()


def _fails(config, results_dir, device):
    raise RuntimeError("out of cheese")


_fails.task_name = "train"


def test_status_shows_every_run_done_running_failed_interrupted_queued_not_started(sequential, tmp_path, capsys):
    results = tmp_path / "r"
    shutil.copytree(sequential[0], results)
    profile = replace(TINY, seeds=(1, 2))
    configs = sweep_configs(profile)  # same settings folder, seeds 1 and 2
    by = {(c.tau_m, c.seed): c for c in configs}
    (by[100.0, 1].folder(results) / "metrics.json").unlink()  # running ...
    (by[math.inf, 1].folder(results) / "metrics.json").unlink()  # failed ...
    outcome = map_runs(_fails, [by[math.inf, 1]], results_dir=results, device="cpu", log=lambda s: None)[0]
    assert outcome.status == "failed" and "RuntimeError: out of cheese (traceback in" in outcome.error
    interrupted = by[30.0, 2].folder(results)
    interrupted.mkdir(parents=True)
    shutil.copy(by[30.0, 1].folder(results) / "history.jsonl", interrupted)
    (interrupted / "history.jsonl").write_text((interrupted / "history.jsonl").read_text().splitlines()[0] + "\n")
    atomic_write_json(by[100.0, 2].folder(results) / "logs" / "train.submitted.json",
                      {"executor": "slurm", "job": "77_1", "stderr": "x.err", "submitted": "now"})
    with Lock(by[100.0, 1].folder(results), "trained", folder=True):
        assert cli.main(["status", "--profile", "smoke", *SET, "--seeds", "1", "2", "--results-dir",
                         str(results)]) == 0
    rows = {tuple(line.split()[:3]): line for line in capsys.readouterr().out.splitlines()
            if line.startswith("digits")}
    assert rows["digits", "30", "1"].split()[3] == "done" and "2/2" in rows["digits", "30", "1"]
    assert rows["digits", "100", "1"].split()[3:5] == ["running", "2/2"]  # its history is the finished one's
    assert f"on {socket.gethostname()} pid {os.getpid()}" in rows["digits", "100", "1"]
    assert "failed" in rows["digits", "inf", "1"] and "out of cheese" in rows["digits", "inf", "1"]
    assert "interrupted" in rows["digits", "30", "2"] and "1/2 epochs saved" in rows["digits", "30", "2"]
    assert "queued" in rows["digits", "100", "2"] and "slurm job 77_1" in rows["digits", "100", "2"]
    assert "not started" in rows["digits", "inf", "2"]
    log = by[math.inf, 1].folder(results) / "logs" / "train.log"
    assert "RuntimeError: out of cheese" in log.read_text()


def test_per_run_analyses_through_the_pool_are_what_the_tables_reuse(sequential, tmp_path, one_thread):
    from leaklib.sweep import analysis_path, clean_table, prepare_analyses, robustness_table

    pooled, inline = tmp_path / "pooled", tmp_path / "inline"
    shutil.copytree(sequential[0], pooled)
    shutil.copytree(sequential[0], inline)
    outcomes = prepare_analyses(CONFIGS, executor="local", jobs=2, threads=1, results_dir=pooled, device="cpu",
                                log=lambda s: None)
    assert [o.status for o in outcomes] == ["done"] * 3
    stamps = [analysis_path(c, pooled, name).stat().st_mtime_ns for c in CONFIGS for name in ("robustness", "clean")]
    robust = robustness_table(CONFIGS, pooled, device="cpu", progress=False)
    clean = clean_table(CONFIGS, pooled, device="cpu", progress=False)
    assert stamps == [analysis_path(c, pooled, n).stat().st_mtime_ns for c in CONFIGS for n in ("robustness", "clean")]
    pd.testing.assert_frame_equal(robust, robustness_table(CONFIGS, inline, device="cpu", progress=False))
    pd.testing.assert_frame_equal(clean, clean_table(CONFIGS, inline, device="cpu", progress=False))


def _group_processes(pgid: int) -> dict[int, str]:
    """{pid: command line} of the live processes in process group ``pgid``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return found


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_while_the_pool_starts_is_one_line_and_leaves_no_process(tmp_path):
    """Ctrl-C while the worker pool starts (the forkserver importing torch, seconds): the forkserver, in
    the terminal's process group, died with a KeyboardInterrupt traceback of the import it was in."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "LEAKLIB_START_METHOD": "forkserver", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "leaklib.cli", "train", "--profile", "smoke", "--device", "cpu",
                             "--results-dir", str(tmp_path / "r"), "--quiet", "--jobs", "2", *SET],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            servers = [pid for pid, cmd in _group_processes(proc.pid).items() if "multiprocessing.forkserver" in cmd]
            if servers and "libtorch" in _maps(servers[0]):  # importing torch (Python's SIGINT handler is in place)
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C, while the forkserver imports
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["leaklib: interrupted; finished epochs and results are saved, the same "
                                        "command resumes"], err
    deadline = time.monotonic() + 30
    while _group_processes(proc.pid) and time.monotonic() < deadline:  # the forkserver exits with its parent
        time.sleep(0.1)
    assert not _group_processes(proc.pid)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
