"""The ``leaklib`` command: ``train``, ``status``, ``analyze``, ``profiles`` and ``book`` (run/build the book)."""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
from typing import Sequence

from .models import POOLINGS
from .neurons import CORRECTIONS, LEAK_GRADS
from .profiles import DEFAULT_PROFILE, PROFILES, format_tau, get_profile, parse_overrides, parse_tau

__all__ = ["main", "build_parser"]

DATASETS = ("digits", "cifar10", "svhn")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2) instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _tau(text: str) -> float:
    try:
        return parse_tau(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _integer(text: str, minimum: int, message: str) -> int:
    """``int(text)`` if it is at least ``minimum``, else an argparse error '<message>, got <text>'."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"{message}, got {text!r}")
    return value


def _seed(text: str) -> int:
    return _integer(text, 0, "seeds must be integers >= 0")


def _positive_int(text: str) -> int:
    return _integer(text, 1, "expected a positive integer")


def add_common_run_options(parser: argparse.ArgumentParser) -> None:
    """--profile, --device, --results-dir, --threads (shared by `train` and `book run`)."""
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES),
                        help=f"run profile (default {DEFAULT_PROFILE}); 'paper' is the full protocol for a GPU")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    parser.add_argument("--results-dir", default="results", help="where runs are written (default results/)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override profile settings, e.g. --set num_steps=12 epochs=1 train_subset=24 "
                             "(`leaklib profiles` lists them); recorded in the config hash")
    parser.add_argument("--leak-grad", choices=LEAK_GRADS, default=None,
                        help="backward pass of the leak: detached ([21], the profiles' default) or exact")
    parser.add_argument("--correction", choices=CORRECTIONS, default=None,
                        help="Eq. 5's epsilon: lee2020 ([21]'s leak correction, default) or none")
    parser.add_argument("--pooling", choices=POOLINGS, default=None,
                        help="after 2x2 average pooling: spiking neurons ([21], default) or the average itself")


EXECUTOR_HELP = """\
executors:
  local (default)   --jobs N runs at once on this machine, one worker process each (CPU threads split:
                    cores // N per run unless --threads; one GPU each where there are GPUs)
  slurm             one Slurm job per run (a job array; --jobs caps how many run at once); a job that
                    hits its --time or is pre-empted is requeued and resumes from the run's checkpoint.
                    Returns once submitted (--wait to wait); follow with `leaklib status`.
  submitit-local    the Slurm code path on this machine (one subprocess per run, requeue on SIGUSR2)
Finished runs are never trained again; a run another process is training is skipped (who holds it is
printed). Every run logs to <run folder>/logs/.
"""


def _time(text: str) -> int:
    from .executors import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """--executor, --jobs and the Slurm job options (shared by `train` and `analyze`)."""
    from .executors import EXECUTORS

    group = parser.add_argument_group("executor")
    group.add_argument("--executor", choices=[e for e in EXECUTORS if e != "inline"] + ["inline"], default="local",
                       help="where runs execute (default local; see below)")
    group.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                       help="runs at once (local default 1; slurm: array parallelism, default all)")
    slurm = parser.add_argument_group("slurm jobs (--executor slurm; --time and --gpus-per-job also for "
                                      "submitit-local)")
    slurm.add_argument("--partition", default=None, help="Slurm partition")
    slurm.add_argument("--time", type=_time, default=24 * 60, metavar="LIMIT",
                       help="time limit per job: minutes or [D-]HH:MM[:SS] (default 24:00:00); longer runs are "
                            "requeued and resume")
    slurm.add_argument("--gpus-per-job", type=int, default=1, metavar="N", help="GPUs per job (default 1)")
    slurm.add_argument("--cpus-per-job", type=_positive_int, default=None, metavar="N",
                       help="CPUs per job (default: the partition's); also the job's torch threads")
    slurm.add_argument("--mem", type=_positive_float, default=None, metavar="GB", help="memory per job in GB")
    slurm.add_argument("--account", default=None, help="Slurm account to charge")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="FLAG",
                       help="extra sbatch flag, repeatable: --sbatch qos=high --sbatch constraint=a100")
    slurm.add_argument("--setup", action="append", default=[], metavar="LINE",
                       help="shell line run before each job, repeatable (module load ..., source venv/bin/activate)")
    slurm.add_argument("--max-requeues", type=int, default=30, metavar="N",
                       help="time-limit requeues per run (pre-emptions are not counted; default 30)")
    slurm.add_argument("--log-dir", default=None,
                       help="submitit's job files and logs (default <results>/<profile>/<variant>/jobs)")
    slurm.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                       help="wait for the jobs and print the results (default: wait except for slurm)")


def executor_kwargs(args: argparse.Namespace) -> dict:
    """map_runs keywords from the executor options."""
    from .executors import SlurmOptions

    slurm = SlurmOptions(partition=args.partition, time=args.time, gpus_per_job=args.gpus_per_job,
                         cpus_per_job=args.cpus_per_job, mem_gb=args.mem, account=args.account,
                         sbatch=tuple(args.sbatch), setup=tuple(args.setup), max_requeues=args.max_requeues,
                         log_dir=args.log_dir)
    wait = args.wait if args.wait is not None else args.executor != "slurm"
    return {"executor": args.executor, "jobs": args.jobs, "threads": args.threads, "slurm": slurm, "wait": wait}


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", nargs="+", choices=DATASETS, default=None,
                        help="datasets (default: the profile's)")
    parser.add_argument("--tau", nargs="+", type=_tau, default=None, metavar="TAU_M",
                        help="membrane time constants in time steps, 'inf' = IF (default: the profile's)")
    parser.add_argument("--seeds", nargs="+", type=_seed, default=None, help="seeds (default: the profile's)")
    parser.add_argument("--epochs", type=_positive_int, default=None, help="override the profile's epochs")


def configs_from_args(args: argparse.Namespace) -> list:
    from .train import RunConfig

    profile = profile_from_args(args)
    return [RunConfig(profile, dataset, float(tau_m), int(seed)) for dataset in args.dataset or profile.datasets
            for tau_m in args.tau or profile.taus for seed in args.seeds or profile.seeds]


def profile_from_args(args: argparse.Namespace):
    """The profile named by --profile with --set, --leak-grad, --correction, --pooling (and --epochs) applied."""
    overrides = parse_overrides(args.overrides)
    for name in ("leak_grad", "correction", "pooling", "epochs"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return get_profile(args.profile, **overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="leaklib", description="Companion to 'Towards Understanding the Effect of Leak in "
                     "Spiking Neural Networks' (Chowdhury, Lee, Roy 2020).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train (or resume, or reuse) the tau_m x seed sweep of a profile",
                           description="Train SNNs with spike-based BPTT (Algorithm 2). Finished runs with the "
                           "same settings are reused; interrupted runs resume from their last epoch.",
                           epilog=EXECUTOR_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_run_options(train)
    add_selection_options(train)
    train.add_argument("--data-root", default=None, help="folder with CIFAR-10/SVHN (default $LEAKLIB_DATA_ROOT "
                       "or ~/.cache/leaklib/data)")
    train.add_argument("--download", action="store_true", help="download CIFAR-10/SVHN into --data-root if missing")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_executor_options(train)
    train.set_defaults(func=_cmd_train)

    status = sub.add_parser("status", help="where every run of a sweep stands (done, running where, failed, ...)",
                            description="One row per run of the profile's sweep: done (test accuracy), running "
                            "(host, pid, job), queued, interrupted, failed (the last lines of its log), damaged "
                            "or not started. Reads the run folders only.")
    add_common_run_options(status)
    add_selection_options(status)
    status.add_argument("--lines", type=int, default=5, help="log lines shown per failed run (default 5)")
    status.set_defaults(func=_cmd_status)

    analyze = sub.add_parser("analyze", help="compute the per-run analyses of chapters 03-07 (cached in the runs)",
                             description="Compute the per-run analyses (noise robustness; clean-pass measurements) "
                             "of finished runs, one task per run through an executor; `leaklib book run` then "
                             "reuses them.", epilog=EXECUTOR_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_run_options(analyze)
    add_selection_options(analyze)
    analyze.add_argument("--analyses", nargs="+", choices=("robustness", "clean"), default=["robustness", "clean"])
    analyze.add_argument("--data-root", default=None, help="folder with CIFAR-10/SVHN")
    add_executor_options(analyze)
    analyze.set_defaults(func=_cmd_analyze)

    profiles = sub.add_parser("profiles", help="print the profiles and their settings")
    profiles.set_defaults(func=_cmd_profiles)

    standins = sub.add_parser("standins", help="write CIFAR-10/SVHN stand-in files for the paper-shaped dry run",
                              description="Write tiny files in the true CIFAR-10 and SVHN on-disk formats (random "
                              "images) and a marker under DIR, for `leaklib book run --profile paper-smoke` "
                              "where the real datasets cannot be had.")
    standins.add_argument("root", metavar="DIR")
    standins.add_argument("--train", type=_positive_int, default=40, help="train images per dataset (multiple of 5)")
    standins.add_argument("--test", type=_positive_int, default=20, help="test images per dataset")
    standins.set_defaults(func=_cmd_standins)

    report = sub.add_parser("report", help="write the README's results block from a finished book run",
                            description="Collect the claims ledgers, accuracies and chapter times a finished "
                            "`leaklib book run` left on disk and write them into README.md between the results "
                            "markers (or, with --check, verify the block matches what the code renders).")
    report.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES))
    report.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="the profile overrides the book was run with")
    report.add_argument("--results-dir", default="results")
    report.add_argument("--build-dir", default="_build", help="where `leaklib book run` staged the chapters")
    report.add_argument("--readme", default="README.md")
    report.add_argument("--jupyter-cache", default=None, metavar="DIR",
                        help="also show the chapter times of a first `jupyter-book build book/` of this profile, "
                             "from its cache (book/_build/.jupyter_cache)")
    report.add_argument("--check", action="store_true",
                        help="only check the README's block; exit 1 if stale in form, or if its claims differ from "
                             "the ledger of its run in --results-dir (where that run's files exist)")
    report.set_defaults(func=_cmd_report)

    try:
        from . import book
    except ImportError:  # the book extra is not installed
        book = None  # type: ignore[assignment]
    if book is not None and hasattr(book, "add_subparser"):
        book.add_subparser(sub)
    return parser


def _fail_line(outcomes: list, what: str) -> int:
    """One stderr line for the runs that did not end; the exit code (0, 1 failed, 2 user error)."""
    failed = [o for o in outcomes if o["status"] == "failed"]
    held = [o for o in outcomes if o["status"] == "held"]
    if held:
        print(f"leaklib: {len(held)} {what}(s) skipped: running or queued elsewhere (see `leaklib status`)",
              file=sys.stderr)
    if not failed:
        return 0
    messages = sorted({o["error"] for o in failed})
    if len(messages) == 1:
        print(f"leaklib: error: {messages[0]}" + (f" ({len(failed)} {what}s)" if len(failed) > 1 else ""),
              file=sys.stderr)
    else:
        print(f"leaklib: error: {len(failed)} {what}(s) failed (see the lines above and `leaklib status`)",
              file=sys.stderr)
    return 2 if all(o.get("user_error", True) for o in failed) else 1


def _cmd_train(args: argparse.Namespace) -> int:
    from .executors import run_sweep

    if args.threads and args.executor in ("local", "inline") and (args.jobs or 1) == 1:
        import torch

        torch.set_num_threads(args.threads)
    try:
        configs = configs_from_args(args)
        options = executor_kwargs(args)
        results = run_sweep(configs, results_dir=args.results_dir, device=args.device, data_root=args.data_root,
                            download=args.download, progress=not args.quiet, **options)
    except ValueError as exc:
        print(f"leaklib: error: {exc}", file=sys.stderr)
        return 2
    done = [(c, m) for c, m in results if m.get("status") in ("finished", "diverged")]
    submitted = [(c, m) for c, m in results if m.get("status") == "submitted"]
    if done:
        print(f"{'dataset':<8} {'tau_m':>6} {'seed':>4} {'status':>9} {'test acc':>9} {'test SSE':>9} {'train s':>8}")
    for config, metrics in done:
        print(f"{config.dataset:<8} {format_tau(config.tau_m):>6} {config.seed:>4} "
              f"{metrics.get('status', 'finished'):>9} {metrics['test_acc']:>9.4f} "
              f"{metrics['test_sse']:>9.4f} {metrics['train_seconds']:>8.1f}")
    if submitted:
        print(f"{len(submitted)} job(s) submitted; follow them with `leaklib status --profile {args.profile}"
              f"{' --set ' + ' '.join(args.overrides) if args.overrides else ''} --results-dir {args.results_dir}`")
    diverged = [c for c, m in done if m.get("status") == "diverged"]
    if diverged:
        print(f"leaklib: {len(diverged)} run(s) diverged (kept as data: status 'diverged' in metrics.json)",
              file=sys.stderr)
    return _fail_line([m for _, m in results], "run")


def _cmd_status(args: argparse.Namespace) -> int:
    from .status import format_status, sweep_status

    try:
        configs = configs_from_args(args)
    except ValueError as exc:
        print(f"leaklib: error: {exc}", file=sys.stderr)
        return 2
    print(format_status(sweep_status(configs, args.results_dir, lines=args.lines), args.results_dir))
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .sweep import prepare_analyses

    try:
        configs = configs_from_args(args)
        outcomes = prepare_analyses(configs, analyses=args.analyses, results_dir=args.results_dir,
                                    device=args.device, data_root=args.data_root, **executor_kwargs(args))
    except ValueError as exc:
        print(f"leaklib: error: {exc}", file=sys.stderr)
        return 2
    return _fail_line([{"status": o.status, "error": o.error, "user_error": o.user_error} for o in outcomes],
                      "analysis")


def _cmd_profiles(args: argparse.Namespace) -> int:
    for profile in PROFILES.values():
        print(f"{profile.name}: {profile.description}")
        print(f"  datasets={','.join(profile.datasets)} tau_m={','.join(format_tau(t) for t in profile.taus)} "
              f"seeds={','.join(map(str, profile.seeds))} T={profile.num_steps} epochs={profile.epochs} "
              f"batch={profile.batch_size} lr={profile.lr:g} weight_decay={profile.weight_decay:.3g} "
              f"milestones={profile.milestone_epochs()} "
              f"dropout={profile.dropout} leak_grad={profile.leak_grad} correction={profile.correction} "
              f"pooling={profile.pooling}")
    return 0


def _cmd_standins(args: argparse.Namespace) -> int:
    from .data import write_standins

    try:
        root = write_standins(args.root, args.train, args.test)
    except (ValueError, OSError) as exc:
        print(f"leaklib: error: {exc}", file=sys.stderr)
        return 2
    print(f"stand-ins written to {root}; use them with LEAKLIB_DATA_ROOT={root} "
          f"leaklib book run --profile paper-smoke")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from . import report

    if args.check:
        problems = report.check_readme(args.readme, args.results_dir)
        for problem in problems:
            print(f"leaklib: {args.readme}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    try:
        data = report.collect(args.profile, args.results_dir, args.build_dir, parse_overrides(args.overrides),
                              args.jupyter_cache)
        changed = report.update_readme(args.readme, data)
    except (FileNotFoundError, ValueError) as exc:
        print(f"leaklib: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.readme}: results block {'updated' if changed else 'unchanged'} (profile {data['profile']}, "
          f"variant {data['variant']})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; user errors, Ctrl-C and unwritable folders end with one line, not a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("leaklib: interrupted; finished epochs and results are saved, the same command resumes",
              file=sys.stderr)
        return 130
    except OSError as exc:  # a read-only or full disk, a vanished folder, ...
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"leaklib: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


def run() -> None:
    """The ``leaklib`` command: :func:`main`, and after Ctrl-C an exit with status 130 that stays 130.

    Interrupted, the process runs its exit handlers (the kernels' socket folder is removed there) and
    leaves without the interpreter's finalization: that restores SIGINT's default action, so a late
    second Ctrl-C turned the clean exit into a death by signal (status -2 to a parent process) about
    once in twenty interrupted book runs.
    """
    code = main()
    if code == 130:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
