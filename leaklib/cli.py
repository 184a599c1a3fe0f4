"""The ``leaklib`` command: ``train``, ``profiles`` and ``book`` (run/build the executable book)."""

from __future__ import annotations

import argparse
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
                           "same settings are reused; interrupted runs resume from their last epoch.")
    add_common_run_options(train)
    train.add_argument("--dataset", nargs="+", choices=DATASETS, default=None,
                       help="datasets (default: the profile's)")
    train.add_argument("--tau", nargs="+", type=_tau, default=None, metavar="TAU_M",
                       help="membrane time constants in time steps, 'inf' = IF (default: 30 100 inf)")
    train.add_argument("--seeds", nargs="+", type=_seed, default=None, help="seeds (default: the profile's)")
    train.add_argument("--epochs", type=_positive_int, default=None, help="override the profile's epochs")
    train.add_argument("--data-root", default=None, help="folder with CIFAR-10/SVHN (default $LEAKLIB_DATA_ROOT "
                       "or ~/.cache/leaklib/data)")
    train.add_argument("--download", action="store_true", help="download CIFAR-10/SVHN into --data-root if missing")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_cmd_train)

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
    report.add_argument("--check", action="store_true", help="only check the README's block; exit 1 if stale in form")
    report.set_defaults(func=_cmd_report)

    try:
        from . import book
    except ImportError:  # the book extra is not installed
        book = None  # type: ignore[assignment]
    if book is not None and hasattr(book, "add_subparser"):
        book.add_subparser(sub)
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .train import train_sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        profile = profile_from_args(args)
        results = train_sweep(profile, datasets=args.dataset, taus=args.tau, seeds=args.seeds,
                              results_dir=args.results_dir, device=args.device, data_root=args.data_root,
                              download=args.download, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as exc:
        print(f"leaklib: error: {exc}", file=sys.stderr)
        return 2
    print(f"{'dataset':<8} {'tau_m':>6} {'seed':>4} {'status':>9} {'test acc':>9} {'test SSE':>9} {'train s':>8}")
    for config, metrics in results:
        print(f"{config.dataset:<8} {format_tau(config.tau_m):>6} {config.seed:>4} "
              f"{metrics.get('status', 'finished'):>9} {metrics['test_acc']:>9.4f} "
              f"{metrics['test_sse']:>9.4f} {metrics['train_seconds']:>8.1f}")
    diverged = [c for c, m in results if m.get("status") == "diverged"]
    if diverged:
        print(f"leaklib: {len(diverged)} run(s) diverged (kept as data: status 'diverged' in metrics.json)",
              file=sys.stderr)
    return 0


def _cmd_profiles(args: argparse.Namespace) -> int:
    for profile in PROFILES.values():
        print(f"{profile.name}: {profile.description}")
        print(f"  datasets={','.join(profile.datasets)} tau_m={','.join(format_tau(t) for t in profile.taus)} "
              f"seeds={','.join(map(str, profile.seeds))} T={profile.num_steps} epochs={profile.epochs} "
              f"batch={profile.batch_size} lr={profile.lr:g} milestones={profile.milestone_epochs()} "
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
        problems = report.check_readme(args.readme)
        for problem in problems:
            print(f"leaklib: {args.readme}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    try:
        data = report.collect(args.profile, args.results_dir, args.build_dir, parse_overrides(args.overrides))
        changed = report.update_readme(args.readme, data)
    except (FileNotFoundError, ValueError) as exc:
        print(f"leaklib: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.readme}: results block {'updated' if changed else 'unchanged'} (profile {data['profile']}, "
          f"variant {data['variant']})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
