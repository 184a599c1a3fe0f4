"""A profile's sweep (datasets x tau_m x seeds) as tidy tables, and cached per-run analyses.

Chapters call these; every number they show comes from the run folders under ``results_dir``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from .locks import Lock
from .profiles import Profile, get_profile
from .runs import RunFileError, _jsonable, atomic_write_json, config_hash, read_json, remove_stale_temporaries
from .train import RunConfig, load_run

__all__ = [
    "sweep_configs",
    "ensure_sweep",
    "history_table",
    "metrics_table",
    "summarize",
    "cached",
    "input_spectrum_verdicts",
    "analysis_path",
    "tau_sort_key",
    "ANALYSIS_SEED",
    "analysis_images",
    "robustness_images",
    "severity_table",
    "severity_tables",
    "robustness_table",
    "clean_table",
    "Sweep",
    "open_sweep",
    "default_jobs",
    "ANALYSES",
    "analysis_task",
    "prepare_analyses",
    "SweepIncomplete",
]


def _profile(profile: Profile | str) -> Profile:
    return get_profile(profile) if isinstance(profile, str) else profile


def sweep_configs(profile: Profile | str, datasets: Iterable[str] | None = None) -> list[RunConfig]:
    """All runs of a profile in a fixed order: dataset, then tau_m as the profile lists it, then seed."""
    prof = _profile(profile)
    return [RunConfig(prof, dataset, float(tau), int(seed))
            for dataset in (datasets or prof.datasets) for tau in prof.taus for seed in prof.seeds]


class SweepIncomplete(RuntimeError):
    """Some runs of a sweep did not finish (failed, or held by another process); one line."""


def ensure_sweep(profile: Profile | str, results_dir: str | os.PathLike[str] = "results", device: str = "auto",
                 progress: bool = True, executor: str = "inline", jobs: int | None = None,
                 lock_wait: float | None = None, **kwargs: Any) -> list[RunConfig]:
    """Train what is missing (resuming interrupted runs), reuse what is finished; return the configs.

    ``executor``/``jobs`` as :func:`leaklib.executors.run_sweep` (e.g. ``executor="local", jobs=2``
    trains two runs at once); other keywords (``log``, ``data_root``, Slurm options) go there too.
    A run that another process is training (a second chapter on the same results) is waited for
    and then reused: ``lock_wait`` seconds at most (None: as long as it takes). Raises
    :class:`SweepIncomplete` (one line) when a run failed, or is still held after ``lock_wait``.
    """
    from .executors import run_sweep

    configs = sweep_configs(profile)
    results = run_sweep(configs, executor=executor, jobs=jobs, results_dir=results_dir, device=device,
                        progress=progress, lock_wait=lock_wait, **kwargs)
    problems = [(c, m) for c, m in results if m.get("status") not in ("finished", "diverged")]
    if problems:
        config, metrics = problems[0]
        more = f" (and {len(problems) - 1} more run(s))" if len(problems) > 1 else ""
        raise SweepIncomplete(f"{config.label()}: {metrics.get('status')}: {metrics.get('error')}{more}")
    return configs


def _keys(config: RunConfig) -> dict[str, Any]:
    return {"dataset": config.dataset, "tau_m": config.tau_m, "seed": config.seed}


def history_table(configs: Iterable[RunConfig], results_dir: str | os.PathLike[str] = "results") -> pd.DataFrame:
    """One row per (run, epoch): dataset, tau_m, seed, epoch, train/test SSE and accuracy, spike rate, seconds."""
    rows = []
    for config in configs:
        for record in load_run(config, results_dir)["history"]:
            rows.append({**_keys(config), **{k: v for k, v in record.items() if not isinstance(v, list)}})
    return pd.DataFrame(rows)


def metrics_table(configs: Iterable[RunConfig], results_dir: str | os.PathLike[str] = "results") -> pd.DataFrame:
    """One row per run with its final metrics (``metrics.json``), its ``status`` (finished | diverged) and test-set size."""
    rows = []
    for c in configs:
        run = load_run(c, results_dir)
        rows.append({**_keys(c), "status": "finished", **run["metrics"],
                     "test_size": run["config"].get("test_size"), "train_size": run["config"].get("train_size")})
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame, value: str, by: tuple[str, ...] = ("dataset", "tau_m")) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; NaN for one seed) and count of ``value`` over seeds."""
    if value not in table.columns:
        raise KeyError(f"column {value!r} not in table (has {', '.join(table.columns)})")
    grouped = table.groupby(list(by), sort=False)[value]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def analysis_path(config: RunConfig, results_dir: str | os.PathLike[str], name: str) -> Path:
    """``<run folder>/analysis/<name>.json``: where a run's cached analysis lives."""
    return Path(load_run(config, results_dir)["folder"]) / "analysis" / f"{name}.json"


def cached(path: str | os.PathLike[str], settings: dict[str, Any], compute: Callable[[], Any],
           log: Callable[[str], None] = print) -> Any:
    """Return the value stored at ``path`` for exactly these ``settings``, else compute, store atomically, return.

    The key is the hash of ``settings`` (which should include the run's config hash), so a changed
    analysis setting or a retrained run recomputes instead of reusing a stale number. The value
    returned is always the stored one, as read back from JSON. One process
    at a time computes a cache file (a lock beside it; a second process waits for the first and
    reuses its value); an unreadable cache file is recomputed, with one line saying so.
    """
    key = config_hash(settings)
    path = Path(path)
    stored = _stored(path, key, log)
    if stored is not None:
        return stored[0]
    with Lock(path, "computed", wait=None, log=log, folder=False):
        stored = _stored(path, key, lambda line: None)  # computed meanwhile by the process we waited for
        if stored is not None:
            return stored[0]
        remove_stale_temporaries(path.parent, path.name)  # a write of this cache cut short by kill -9
        value = compute()
        atomic_write_json(path, {"key": key, "settings": settings, "value": value})
    # what a later call reads back (JSON: sorted keys, non-finite floats as 'nan'/'inf'), so a value
    # computed here, in a pool worker or in a cluster job is the same
    return json.loads(json.dumps(_jsonable(value), sort_keys=True, allow_nan=False))


def _stored(path: Path, key: str, log: Callable[[str], None]) -> tuple[Any] | None:
    if not path.exists():
        return None
    try:
        stored = read_json(path, remedy="recomputing it")
    except RunFileError as exc:
        log(f"[cache] {exc}")
        return None
    if isinstance(stored, dict) and stored.get("key") == key and "value" in stored:
        return (stored["value"],)
    return None


def tau_sort_key(tau_m: float) -> float:
    """Order taus as the paper's figures do: IF (inf) first, then decreasing tau_m (more leak last)."""
    return -math.inf if math.isinf(tau_m) else -tau_m


# ----------------------------------------------------------------------------------------------
# per-run analyses of Sec. 4, cached in each run folder and shared by the chapters

#: Seed of the encoding randomness of every analysis (fixed, so chapters agree with each other).
ANALYSIS_SEED = 2020


def analysis_images(config: RunConfig, data_root: str | os.PathLike[str] | None = None):
    """The test images the analyses use: the run's test split, cut to ``profile.analysis_images``."""
    from .data import load_dataset, stratified_subset

    prof = config.profile
    test = load_dataset(config.dataset, "test", root=data_root)
    size = min(n for n in (prof.test_subset, prof.analysis_images, len(test)) if n is not None)
    return stratified_subset(test, size, seed=0) if size < len(test) else test


def robustness_images(config: RunConfig, data_root: str | os.PathLike[str] | None = None):
    """The images of the noise calibration and the robustness sweep: the analysis images, cut to a
    stratified subset of ``profile.robustness_images`` (None: all of them; then severity 0 is the clean
    pass of :func:`clean_table`)."""
    from .data import stratified_subset

    test = analysis_images(config, data_root)
    size = config.profile.robustness_images
    return stratified_subset(test, size, seed=0) if size is not None and size < len(test) else test


def _numerics() -> dict:
    """Cache-key entry for TF32 when ``LEAKLIB_TF32`` turns it on (the analyses then run in TF32 on a GPU);
    empty by default, so the keys of float32 analyses stay as they were."""
    from .gpu import tf32_requested

    return {"tf32": True} if tf32_requested() else {}


def _run_settings(config: RunConfig, results_dir: str | os.PathLike[str], what: str, **extra: Any) -> dict:
    return {"what": what, "run": load_run(config, results_dir)["metrics"]["config_hash"], "seed": ANALYSIS_SEED,
            "images": config.profile.analysis_images, **extra, **_numerics()}


def _diverged(config: RunConfig, results_dir: str | os.PathLike[str]) -> bool:
    return load_run(config, results_dir)["metrics"].get("status", "finished") == "diverged"


def severity_table(profile: Profile | str, dataset: str, results_dir: str | os.PathLike[str] = "results",
                   device: str = "auto", data_root: str | os.PathLike[str] | None = None,
                   progress: bool = True):
    """The severity table of ``dataset`` calibrated on the profile's IF networks (every seed that finished).

    Rule: :func:`leaklib.robustness.calibrate_table` (on :func:`robustness_images`, encoding seed
    :data:`ANALYSIS_SEED`). Cached in ``<results>/<profile>/<variant>/<dataset>/analysis/severity_table.json``
    under a key made of the IF runs' config hashes and statuses and the calibration settings: no LIF run
    enters it. Without IF runs in the profile, or if all of them diverged, the a-priori table.
    """
    from .encoding import SeverityTable
    from .robustness import CALIBRATION, calibrate_table
    from .train import load_model

    prof = _profile(profile)
    configs = sweep_configs(prof, [dataset])
    if_runs = [c for c in configs if math.isinf(c.tau_m)]
    if not if_runs:
        return SeverityTable.apriori("the sweep has no IF networks (tau_m = inf) to calibrate on")
    finished = [c for c in if_runs if not _diverged(c, results_dir)]
    folder = configs[0].folder(results_dir).parents[1] / "analysis" / "severity_table.json"
    settings = {"what": "severity_table", "dataset": dataset, "seed": ANALYSIS_SEED,
                "if_runs": {str(c.seed): [load_run(c, results_dir)["metrics"]["config_hash"],
                                          "diverged" if c not in finished else "finished"] for c in if_runs},
                "images": [prof.test_subset, prof.analysis_images, prof.robustness_images],
                "num_steps": prof.num_steps, "batch_size": prof.eval_batch_size, "calibration": CALIBRATION,
                **_numerics()}

    def compute() -> dict:
        if not finished:
            why = f"all {len(if_runs)} IF runs diverged: no IF network to calibrate on"
            return SeverityTable.apriori(why).to_dict()
        test = robustness_images(finished[0], data_root)
        networks = [(c.tau_m, load_model(c, results_dir, device)) for c in finished]
        return calibrate_table(networks, test.images, test.labels, num_steps=prof.num_steps,
                               num_classes=test.num_classes, batch_size=prof.eval_batch_size, seed=ANALYSIS_SEED,
                               device=None, progress=progress).to_dict()

    return SeverityTable.from_dict(cached(folder, settings, compute))


def input_spectrum_verdicts(profile: Profile | str, dataset: str, results_dir: str | os.PathLike[str] = "results",
                            device: str = "auto", data_root: str | os.PathLike[str] | None = None,
                            progress: bool = True) -> pd.DataFrame:
    """Fig. 4's test (Sec. 4.3) on ``dataset``: :func:`leaklib.spectra.fig4_verdicts` of the input spectra, every reading.

    The spike inputs of :func:`analysis_images` under :func:`leaklib.spectra.fig4_conditions`, at the
    levels of :func:`severity_table` (encoding seed :data:`ANALYSIS_SEED`); no network enters. Cached
    in ``<results>/<profile>/<variant>/<dataset>/analysis/input_spectra.json`` under the settings and
    the severity table, so chapter 04 and the ledger read the same verdicts.
    """
    from .spectra import FIG4_TOLERANCE, READINGS, fig4_conditions, fig4_verdicts, input_spectrum_readings
    from .train import resolve_device

    prof = _profile(profile)
    configs = sweep_configs(prof, [dataset])
    table = severity_table(prof, dataset, results_dir, device, data_root, progress)
    conditions = fig4_conditions()
    folder = configs[0].folder(results_dir).parents[1] / "analysis" / "input_spectra.json"
    settings = {"what": "input_spectra", "dataset": dataset, "seed": ANALYSIS_SEED,
                "images": [prof.test_subset, prof.analysis_images], "num_steps": prof.num_steps,
                "conditions": {k: list(v) for k, v in conditions.items()}, "readings": list(READINGS),
                "relative_tolerance": FIG4_TOLERANCE, "table": _table_settings(table)}

    def compute() -> list[dict]:
        images = analysis_images(configs[0], data_root).images
        result = input_spectrum_readings(images, num_steps=prof.num_steps, conditions=conditions, seed=ANALYSIS_SEED,
                                         device=resolve_device(device), table=table)
        verdicts = fig4_verdicts(result.summary.assign(dataset=dataset), "clean", FIG4_TOLERANCE)
        return verdicts.to_dict("records")

    frame = pd.DataFrame(cached(folder, settings, compute))
    text = {"dataset", "reading", "condition", "mean_verdict", "band_verdict", "verdict", "reason", "band beyond shift"}
    for column in set(frame.columns) - text:  # JSON stores non-finite numbers as 'nan' / 'inf'
        frame[column] = pd.to_numeric(frame[column].map(lambda v: float(v) if isinstance(v, str) else v))
    return frame


def severity_tables(configs: Iterable[RunConfig], results_dir: str | os.PathLike[str] = "results",
                    device: str = "auto", data_root: str | os.PathLike[str] | None = None,
                    progress: bool = True) -> dict:
    """``{dataset: SeverityTable}`` for the datasets of ``configs`` (:func:`severity_table` of their profile)."""
    first: dict[str, RunConfig] = {}
    for config in configs:
        first.setdefault(config.dataset, config)
    return {d: severity_table(c.profile, d, results_dir, device, data_root, progress) for d, c in first.items()}


def _table_settings(table) -> dict:
    return {"levels": {k: list(v) for k, v in table.levels.items()}, "rules": dict(table.rules)}


def robustness_table(configs: Iterable[RunConfig], results_dir: str | os.PathLike[str] = "results",
                     device: str = "auto", data_root: str | os.PathLike[str] | None = None,
                     progress: bool = True, tables: dict | None = None) -> pd.DataFrame:
    """Fig. 3's data: accuracy per (dataset, tau_m, seed, scenario, noise, severity), cached per run.

    Levels come from ``tables`` (``{dataset: SeverityTable}``; default :func:`severity_tables`, the
    calibrated ones), on :func:`robustness_images`; the cache key holds the table. Diverged runs have
    no network to test: they are skipped, and listed in the result's ``attrs["skipped"]``.
    """
    from .robustness import evaluate
    from .train import load_model

    configs = list(configs)
    tables = dict(tables) if tables is not None else severity_tables(configs, results_dir, device, data_root, progress)
    frames, skipped = [], []
    for config in configs:
        if _diverged(config, results_dir):
            skipped.append(config.label())
            continue
        table = tables[config.dataset]

        def compute(config: RunConfig = config, table=table) -> list[dict]:
            test = robustness_images(config, data_root)
            model = load_model(config, results_dir, device)
            return evaluate(model, test.images, test.labels, num_steps=config.profile.num_steps, table=table,
                            batch_size=config.profile.eval_batch_size, seed=ANALYSIS_SEED,
                            progress=progress).to_dict("records")

        settings = _run_settings(config, results_dir, "robustness", robustness_images=config.profile.robustness_images,
                                 table=_table_settings(table))
        rows = cached(analysis_path(config, results_dir, "robustness"), settings, compute)
        frames.append(pd.DataFrame(rows).assign(**_keys(config)))
    columns = ["dataset", "tau_m", "seed", "scenario", "noise", "severity", "level", "accuracy", "n"]
    out = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    out.attrs["skipped"] = skipped
    return out


#: The noisy condition of :func:`clean_table` (the paper's severity five, scenario 1, Gaussian).
CLEAN_TABLE_NOISY: tuple[int, str, int] = (1, "gaussian", 5)


def clean_table(configs: Iterable[RunConfig], results_dir: str | os.PathLike[str] = "results",
                device: str = "auto", data_root: str | os.PathLike[str] | None = None,
                progress: bool = True, tables: dict | None = None) -> pd.DataFrame:
    """Table 1 / Fig. 5a-c / Fig. 6 measurements (analysis.measure_clean), one row per run, cached per run.

    The noisy pass (scenario 1, Gaussian, severity 5) takes its level from ``tables`` (default
    :func:`severity_tables`, the calibrated tables of chapter 03); the level enters the cache key.
    """
    from .analysis import measure_clean
    from .train import load_model

    configs = list(configs)
    tables = dict(tables) if tables is not None else severity_tables(configs, results_dir, device, data_root, progress)
    rows = []
    for config in configs:
        table = tables[config.dataset]

        def compute(config: RunConfig = config, table=table) -> dict:
            test = analysis_images(config, data_root)
            model = load_model(config, results_dir, device)
            return measure_clean(model, test.images, test.labels, num_steps=config.profile.num_steps,
                                 batch_size=config.profile.eval_batch_size, seed=ANALYSIS_SEED, noisy=CLEAN_TABLE_NOISY,
                                 table=table, progress=progress)

        settings = _run_settings(config, results_dir, "clean", noisy=list(CLEAN_TABLE_NOISY),
                                 noisy_level=table.level(*CLEAN_TABLE_NOISY))
        value = cached(analysis_path(config, results_dir, "clean"), settings, compute)
        for key in ("critical_frequency", "critical_frequency_noisy"):
            value[key] = [float(v) for v in value[key]]  # NaN is stored as the string 'nan'
        rows.append({**value, "analysis_seed": value["seed"], **_keys(config)})  # the run's seed, not the encoding's
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# the per-run analyses as tasks for leaklib.executors (cluster jobs, or local workers)

def _tables() -> dict[str, Callable[..., pd.DataFrame]]:
    return {"robustness": robustness_table, "clean": clean_table}


#: The per-run analyses behind chapters 03-07, by cache name.
ANALYSES: tuple[str, ...] = ("robustness", "clean")


def analysis_task(config: RunConfig, results_dir: str | os.PathLike[str], device: str,
                  analyses: tuple[str, ...] = ANALYSES, data_root: str | None = None) -> dict[str, str]:
    """Compute (or find) the cached analyses of one finished run; returns {name: cache file}.

    Each analysis is its table function on this one run, so the cache it writes is the one the
    chapters read: submitting this per run (:func:`prepare_analyses`) is what the book reuses.
    """
    tables = _tables()
    unknown = [a for a in analyses if a not in tables]
    if unknown:
        raise ValueError(f"unknown analysis {', '.join(unknown)}; choose from {', '.join(tables)}")
    for name in analyses:
        tables[name]([config], results_dir, device=device, data_root=data_root, progress=False)
    return {name: str(analysis_path(config, results_dir, name)) for name in analyses}


analysis_task.task_name = "analyses"  # type: ignore[attr-defined]


def prepare_analyses(configs: Iterable[RunConfig], analyses: Iterable[str] = ANALYSES, executor: str = "inline",
                     jobs: int | None = None, results_dir: str | os.PathLike[str] = "results", device: str = "auto",
                     data_root: str | os.PathLike[str] | None = None, log: Callable[[str], None] = print,
                     wait: bool = True, **options: Any) -> list:
    """Compute the per-run analyses of finished runs through an executor (:func:`leaklib.executors.map_runs`).

    Afterwards :func:`robustness_table` and :func:`clean_table` (and the chapters) read the caches.
    Returns the executor's Outcomes (status ``done``, ``failed``, ``held`` or ``submitted``).
    """
    from .executors import map_runs

    names = tuple(analyses)
    return map_runs(analysis_task, list(configs), executor=executor, jobs=jobs, results_dir=results_dir,
                    device=device, task_kwargs={"analyses": names,
                                                "data_root": None if data_root is None else str(data_root)},
                    describe=lambda o: "cached " + ", ".join(names), log=log, wait=wait, what="analysis",
                    **options)


# ----------------------------------------------------------------------------------------------
# a profile's sweep as the chapters use it


@dataclass
class Sweep:
    """A profile's trained sweep and its tables, shared by the chapters (train or reuse once, read many times).

    ``runs`` is :func:`metrics_table` (one row per run with ``status``: finished | diverged);
    ``history`` every epoch of every run (a diverged run's epochs before it diverged). The per-run
    analyses (:meth:`robustness`, :meth:`clean`) cover the finished runs only and are cached in the
    run folders, so every chapter that asks gets the same numbers.
    """

    profile: Profile
    results_dir: Path
    device: str
    configs: list[RunConfig]
    history: pd.DataFrame
    runs: pd.DataFrame
    jobs: int = 1
    _tables: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(c.dataset for c in self.configs))

    @property
    def finished(self) -> list[RunConfig]:
        """The configs of the runs that finished training (not diverged)."""
        status = {(r.dataset, float(r.tau_m), int(r.seed)): r.status for r in self.runs.itertuples()}
        return [c for c in self.configs if status.get((c.dataset, c.tau_m, c.seed)) != "diverged"]

    @property
    def diverged(self) -> list[RunConfig]:
        done = set(map(id, self.finished))
        return [c for c in self.configs if id(c) not in done]

    @property
    def n_test(self) -> dict[str, int]:
        """Test-set size per dataset (what the runs were evaluated on)."""
        return {d: int(part["test_size"].iloc[0]) for d, part in self.runs.groupby("dataset", sort=False)
                if part["test_size"].notna().all()}

    def prepare(self, analyses: Iterable[str] = ANALYSES) -> None:
        """Compute the per-run analyses of every finished run, ``jobs`` runs at a time in local workers.

        The severity table is calibrated first, here (once, on the IF runs), so that the workers only
        read it. Afterwards :meth:`robustness` and :meth:`clean` read the caches.
        """
        runs = self.finished
        if self.jobs > 1 and len(runs) > 1 and not self._tables.get("_prepared"):
            if "robustness" in analyses or "clean" in analyses:
                severity_tables(runs, self.results_dir, self.device, progress=False)
            outcomes = prepare_analyses(runs, tuple(analyses), executor="local", jobs=self.jobs,
                                        results_dir=self.results_dir, device=self.device, log=lambda line: None)
            failed = [o for o in outcomes if getattr(o, "status", "done") not in ("done", "reused")]
            if failed:
                raise SweepIncomplete(f"{len(failed)} analysis task(s) did not finish: "
                                      f"{getattr(failed[0], 'error', None) or failed[0]}")
            self._tables["_prepared"] = True  # type: ignore[assignment]

    def robustness(self, progress: bool = False) -> pd.DataFrame:
        """Fig. 3's accuracies of every finished run (:func:`robustness_table`)."""
        if "robustness" not in self._tables:
            self.prepare()
            self._tables["robustness"] = robustness_table(self.finished, self.results_dir, self.device,
                                                          progress=progress)
        return self._tables["robustness"]

    def clean(self, progress: bool = False) -> pd.DataFrame:
        """Table 1 / Fig. 5a-c / Fig. 6 measurements of every finished run (:func:`clean_table`)."""
        if "clean" not in self._tables:
            self.prepare()
            self._tables["clean"] = clean_table(self.finished, self.results_dir, self.device, progress=progress)
        return self._tables["clean"]

    def input_spectra(self) -> pd.DataFrame:
        """Fig. 4's verdicts per dataset, reading and noisy condition (:func:`input_spectrum_verdicts`, cached)."""
        if "input_spectra" not in self._tables:
            frames = [input_spectrum_verdicts(self.profile, d, self.results_dir, self.device, progress=False)
                      for d in self.datasets]
            self._tables["input_spectra"] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return self._tables["input_spectra"]

    def ledger(self, robustness: bool = True, clean: bool = True, spectra: bool = True) -> list:
        """Every claim of Sec. 4 on this sweep (:func:`leaklib.claims.claims_ledger`)."""
        from .claims import claims_ledger

        return claims_ledger(self.history, self.robustness() if robustness else None,
                             self.clean() if clean else None, sse_window=self.profile.sse_window, runs=self.runs,
                             n_test=self.n_test, spectra=self.input_spectra() if spectra else None)

    def ledger_dir(self) -> Path:
        """``<results>/<profile>/<variant>``: where this sweep's claims ledger and Table 1 are written."""
        return self.configs[0].folder(self.results_dir).parents[2]


def default_jobs(device: str = "auto") -> int:
    """Runs trained at once on this machine: one per GPU on CUDA, else one per CPU core (each with one thread).

    On the CPU two processes of one thread each were faster than one process of two threads
    whenever anything else ran (benchmarks/README.md); ``LEAKLIB_JOBS`` overrides the choice.
    """
    from .executors import cpu_count
    from .train import resolve_device

    if os.environ.get("LEAKLIB_JOBS"):
        return max(1, int(os.environ["LEAKLIB_JOBS"]))
    dev = resolve_device(device)
    if dev.type == "cuda":
        import torch

        return 1 if dev.index is not None else max(1, torch.cuda.device_count())
    return max(1, cpu_count())


def open_sweep(profile: Profile | str, overrides: Any = None, results_dir: str | os.PathLike[str] = "results",
               device: str = "auto", train: bool = True, progress: bool = False, jobs: int | None = None,
               **kwargs: Any) -> Sweep:
    """The profile's sweep (``overrides``: ``--set``-style strings or a mapping), trained or reused; see :class:`Sweep`.

    Missing runs are trained ``jobs`` at a time (default :func:`default_jobs`) in local worker
    processes; ``jobs=1`` trains them one after another in this process.
    """
    from dataclasses import replace

    from .profiles import parse_overrides

    prof = _profile(profile)
    if overrides:
        prof = replace(prof, **parse_overrides(overrides))
    if train:
        jobs = default_jobs(device) if jobs is None else jobs
        executor = "local" if jobs > 1 else "inline"
        configs = ensure_sweep(prof, results_dir, device, progress, executor=executor, jobs=jobs, **kwargs)
    else:
        configs = sweep_configs(prof)
    return Sweep(prof, Path(results_dir), device, configs, history_table(configs, results_dir),
                 metrics_table(configs, results_dir), jobs=jobs or 1)
