"""The README's results block, written from a finished book run (``leaklib report``), never typed.

:func:`collect` reads what a run of the book left on disk: the claims ledgers that chapters 07 and
08 wrote (``claims.json`` in each sweep's variant folder), Table 1 (``table1.csv``), the runs'
metrics and the executed chapters' timings (the staged notebooks ``_build/src/*.ipynb``). :func:`render` turns that
into markdown; :func:`update_readme` replaces the block between :data:`START` and :data:`END` and
stores the data it was rendered from inside the block, so :func:`check_readme` (and a test) can
re-render it and find a block that was edited by hand or written by another version of the code.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
from pathlib import Path
from typing import Any

__all__ = ["START", "END", "collect", "render", "update_readme", "check_readme", "readme_block",
           "SPEED_START", "SPEED_END", "speed_data", "render_speed", "update_speed", "check_speed",
           "speed_markers_problem", "goal_value"]

START = "<!-- results:start (written by `leaklib report` from a finished book run; do not edit by hand) -->"
END = "<!-- results:end -->"
_DATA = re.compile(r"<!-- results-data (\{.*?\}) -->", re.S)
_TAU_ORDER = ("inf", "100", "30")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: run the book first (`leaklib book run`)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rerun the chapter that writes it") from None


def _ledger_rows(ledger: dict) -> list[dict]:
    rows = []
    for claim in ledger["claims"]:
        rows.append({"id": claim["id"], "dataset": claim["dataset"], "claim": claim["claim"],
                     "evidence": claim["evidence"], "intervals": claim.get("intervals", ""),
                     "verdict": claim["verdict"]})
    return rows


def _check_profile(found: dict[str, Any], profile: str | None, where: str, how: str) -> None:
    """Raise if a chapter's timing was recorded for another profile than ``profile`` (or for none)."""
    if profile is None:
        return
    other = {stem: p for stem, p in found.items() if p != profile}
    if other:
        shown = ", ".join(f"{stem.split('_', 1)[0]}: {p or 'unknown'}" for stem, p in other.items())
        raise ValueError(f"{where}: chapters executed with another profile than {profile} ({shown}); "
                         f"{how.format(profile=profile)} first")


def _chapter_times(build_dir: Path, profile: str | None = None) -> dict[str, float]:
    """Seconds per executed chapter from the runner's record in each staged notebook (``leaklib book run``).

    Only the book's chapters (``leaklib.book.CHAPTERS``) count. With ``profile``, every record must be of that
    profile: the staging folder is shared by all profiles, so a later run of another profile overwrites it."""
    import nbformat

    from .book import CHAPTERS, stage_dir

    times, profiles = {}, {}
    for path in sorted(stage_dir(build_dir).glob("[0-9][0-9]_*.ipynb")):
        if path.stem not in CHAPTERS:
            continue
        record = nbformat.read(path, as_version=4).metadata.get("leaklib_book") or {}
        if "seconds" in record:
            times[path.stem] = float(record["seconds"])
            profiles[path.stem] = record.get("profile")
    _check_profile(profiles, profile, str(stage_dir(build_dir)), "run `leaklib book run --profile {profile}`")
    return times


def _jupyter_book_times(cache_dir: Path, profile: str | None = None) -> dict[str, float]:
    """Seconds per chapter as ``jupyter-book build book/`` executed it: myst-nb stores each execution's
    time in its jupyter-cache record (``data["execution_seconds"]``); the latest record of a chapter counts.

    Only the book's chapters count (``leaklib.book.CHAPTERS``), not other notebooks in the cache. With
    ``profile``, leaklib's record of each execution (``<cache>/leaklib/<chapter>.json``,
    :mod:`leaklib.sphinx_book`) must name that profile: ``LEAKLIB_PROFILE=smoke jupyter-book build book/``
    executes into the same cache."""
    from jupyter_cache import get_cache

    from .book import CHAPTERS
    from .sphinx_book import record_path

    if not cache_dir.is_dir():
        raise FileNotFoundError(f"{cache_dir}: no jupyter-cache here (run `jupyter-book build book/` first)")
    latest: dict[str, tuple[Any, float]] = {}
    for record in get_cache(str(cache_dir)).list_cache_records():
        stem = Path(record.uri).stem
        seconds = (record.data or {}).get("execution_seconds")
        if stem in CHAPTERS and seconds is not None:
            if stem not in latest or record.created > latest[stem][0]:
                latest[stem] = (record.created, float(seconds))
    if profile is not None:
        profiles = {}
        for stem in latest:
            try:
                profiles[stem] = json.loads(record_path(cache_dir, stem).read_text(encoding="utf-8")).get("profile")
            except (OSError, ValueError):
                profiles[stem] = None
        _check_profile(profiles, profile, str(cache_dir), "run `LEAKLIB_PROFILE={profile} jupyter-book build book/`")
    return {stem: latest[stem][1] for stem in sorted(latest)}


def collect(profile: str = "quick", results_dir: str | os.PathLike[str] = "results",
            build_dir: str | os.PathLike[str] = "_build", overrides: Any = None,
            jupyter_cache: str | os.PathLike[str] | None = None) -> dict:
    """Everything the results block shows, from the files a finished book run wrote (nothing is recomputed).

    ``jupyter_cache``: the ``book/_build/.jupyter_cache`` of a first ``jupyter-book build book/`` of the
    same profile, whose chapter times are shown beside ``leaklib book run``'s."""
    from .profiles import ABLATIONS, format_tau
    from .sweep import open_sweep

    sweep = open_sweep(profile, overrides, results_dir, train=False)
    prof = sweep.profile
    ledger = _read_json(sweep.ledger_dir() / "claims.json")
    exact_overrides = {**dict(overrides or {}), **ABLATIONS["exact-gradient"], "taus": "30,100,inf"}
    exact = open_sweep(profile, exact_overrides, results_dir, train=False)
    ablation = _read_json(exact.ledger_dir() / "claims.json")
    runs = sweep.runs
    accuracy = {}
    for (dataset, tau), part in runs[runs["status"] == "finished"].groupby(["dataset", "tau_m"], sort=False):
        values = [100 * v for v in part["test_acc"]]
        mean = sum(values) / len(values)
        std = round(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), 2) if len(values) > 1 else None
        accuracy.setdefault(dataset, {})[format_tau(tau)] = {"mean": round(mean, 2), "std": std,
                                                             "n": len(values), "min": round(min(values), 2)}
    diverged = {f"{d}/{format_tau(t)}": int((part["status"] == "diverged").sum())
                for (d, t), part in runs.groupby(["dataset", "tau_m"], sort=False)}
    times = _chapter_times(Path(build_dir), prof.name)
    if jupyter_cache is not None and overrides:
        raise ValueError("--jupyter-cache: `jupyter-book build book/` runs the chapters without --set overrides, "
                         "so its times are not those of this run")
    return {
        "profile": prof.name, "variant": sweep.ledger_dir().name, "description": prof.description,
        "settings": {"T": prof.num_steps, "epochs": prof.epochs, "batch": prof.batch_size, "lr": prof.lr,
                     "seeds": len(prof.seeds), "taus": [format_tau(t) for t in prof.taus],
                     "leak_grad": prof.leak_grad, "correction": prof.correction, "pooling": prof.pooling,
                     "dropout": prof.dropout},
        "runs": len(runs), "train_seconds": round(float(runs["train_seconds"].sum()), 1),
        "accuracy": accuracy, "diverged": diverged,
        "summary": ledger["summary"], "claims": _ledger_rows(ledger),
        "ablation": {"summary": ablation["summary"], "claims": _ledger_rows(ablation),
                     "variant": exact.ledger_dir().name},
        "chapter_seconds": {k: round(v, 1) for k, v in times.items()},
        "jupyter_book_seconds": ({k: round(v, 1) for k, v in _jupyter_book_times(Path(jupyter_cache), prof.name).items()}
                                 if jupyter_cache is not None else {}),
        "commit": ledger.get("commit") or _commit(),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
        "date": _dt.date.today().isoformat(),
    }


def _commit() -> str:
    from .runs import git_commit

    return git_commit(short=True)


def _counts(summary: dict[str, int]) -> str:
    from .claims import VERDICTS

    order = list(VERDICTS) + sorted(set(summary) - set(VERDICTS))
    return ", ".join(f"**{summary[v]} {v}**" if v == "reproduced" else f"{summary[v]} {v}"
                     for v in order if summary.get(v))


def _chapter_minutes(times: dict[str, float]) -> str:
    """'**9.6 min** of chapter execution (01 20 s, 02 271 s, ...)': the total and each chapter by its number."""
    chapters = ", ".join(f"{name.split('_', 1)[0]} {seconds:.0f} s" for name, seconds in times.items())
    return f"**{sum(times.values()) / 60:.1f} min** of chapter execution ({chapters})"


def render(data: dict) -> str:
    """The markdown of the results block (without the markers and the stored data)."""
    s = data["settings"]
    lines = [f"Profile `{data['profile']}` (settings variant `{data['variant']}`): {data['description']}. "
             f"T={s['T']}, {s['epochs']} epochs, batch {s['batch']}, lr {s['lr']:g}, {s['seeds']} seeds, "
             f"tau_m {' / '.join(s['taus'])}; training semantics: leak gradient {s['leak_grad']}, correction "
             f"{s['correction']}, pooling {s['pooling']}, dropout {s['dropout']:g}. "
             f"Written {data['date']} from git commit `{data['commit']}` on {data['machine']}.", ""]
    times = data["chapter_seconds"]
    if times:
        lines.append(f"`leaklib book run` from a fresh clone: {_chapter_minutes(times)}; "
                     f"the default sweep's {data['runs']} training runs: {data['train_seconds'] / 60:.1f} min of "
                     f"training summed over runs (the local workers train several at once, so the sum can exceed "
                     f"the chapters' time).")
        lines.append("")
    jb = data.get("jupyter_book_seconds") or {}
    if jb:
        lines.append(f"`jupyter-book build book/`, first build from a fresh clone: {_chapter_minutes(jb)}.")
        lines.append("")
    for dataset, by_tau in data["accuracy"].items():
        cells = "; ".join(f"tau_m={t}: {v['mean']:.2f}" + ("" if v["std"] is None else f" ± {v['std']:.2f}")
                          + f" % (n={v['n']}, lowest {v['min']:.2f})" for t, v in by_tau.items())
        lines.append(f"Clean test accuracy, {dataset}: {cells}.")
    bad = {k: v for k, v in data["diverged"].items() if v}
    lines.append(f"Diverged runs: {', '.join(f'{k} {v}' for k, v in bad.items()) if bad else 'none'}.")
    lines.append("")
    for dataset, summary in data["summary"].items():
        ablation = data["ablation"]["summary"].get(dataset, {})
        lines.append(f"Claims ledger ({dataset}), [21]'s training: {_counts(summary)}; with the exact gradient: "
                     f"{_counts(ablation)}.")
    lines += ["", "| # | claim (Sec. 4) | evidence (mean ± sd over seeds, IF first) | intervals of the paired "
                  "differences (95%; 90% where stated) | verdict | exact gradient |", "|---|---|---|---|---|---|"]
    ablation = {(c["id"], c["dataset"]): c for c in data["ablation"]["claims"]}
    for c in data["claims"]:
        other = ablation.get((c["id"], c["dataset"]), {}).get("verdict", "–")
        cells = [c["id"], c["claim"], c["evidence"], c["intervals"], f"**{c['verdict']}**", other]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|").replace("\n", " ") for x in cells) + " |")
    return "\n".join(lines)


def _block(start: str, end: str, tag: str, markdown: str, data: dict) -> str:
    """Markers, the rendered markdown and the data it was rendered from (``--`` escaped: it never closes the comment)."""
    stored = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("--", "-\\u002d")
    return f"{start}\n{markdown}\n<!-- {tag} {stored} -->\n{end}"


def readme_block(data: dict) -> str:
    """The whole results block: markers, the rendered markdown and the data it was rendered from."""
    return _block(START, END, "results-data", render(data), data)


def _split(text: str, start: str = START, end: str = END) -> tuple[str, str, str]:
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"README must contain the markers {start[:start.index(':') + 1]}start/end exactly once, "
                         "start before end")
    head, rest = text.split(start, 1)
    body, tail = rest.split(end, 1)
    return head, body, tail


def _replace_block(path: str | os.PathLike[str], start: str, end: str, block: str) -> bool:
    from .runs import atomic_write_text

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, _, tail = _split(text, start, end)
    new = head + block + tail
    if new == text:
        return False
    atomic_write_text(path, new)
    return True


def update_readme(path: str | os.PathLike[str], data: dict) -> bool:
    """Replace the results block of the README at ``path`` (atomically); True if it changed."""
    return _replace_block(path, START, END, readme_block(data))


# The README's speed block, written by ``python benchmarks/train_step.py --readme README.md`` from its
# own measurement (the JSON it writes), checked like the results block.
SPEED_START = ("<!-- speed:start (written by `python benchmarks/train_step.py --readme README.md`; "
               "do not edit by hand) -->")
SPEED_END = "<!-- speed:end -->"
_SPEED_DATA = re.compile(r"<!-- speed-data (\{.*?\}) -->", re.S)


def speed_data(results: dict) -> dict:
    """What the speed block shows, from the benchmark's results (rows without their raw samples)."""
    keep = ("name", "median_s", "ratio_to_limit", "peak_mib", "error")
    nets = [{**{k: n[k] for k in ("label", "dataset", "num_steps", "batch", "tau_m", "dropout", "threads",
                                  "clock", "load_average")},
             "rows": [{k: r.get(k) for k in keep} for r in n["rows"]]} for n in results["networks"]]
    v = results["versions"]
    return _finite({"argv": results["argv"], "networks": nets, "goals": results.get("goals", []),
                    "machine": f"{v.get('cpu_count')} CPU cores, {v.get('processor') or v.get('machine')}",
                    "torch": v.get("torch"), "date": results.get("date"), "commit": results.get("commit")})


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None: json.dumps would write them as ``NaN``/``Infinity``, which
    is not JSON (strict parsers reject the stored data). A failed row's median and a missing goal ratio are NaN."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _number(value: Any, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _error_cell(error: Any) -> str:
    """A failed row's error on one table line: newlines folded (they would end the table), pipes escaped."""
    return " ".join(str(error).split())[:60].replace("|", "\\|")


def goal_value(value: float | None, goal: str) -> str:
    """A goal ratio with 3 decimals, or with as many more as it takes for the shown number to get the
    value's own verdict against ``goal`` (``"<= 1.15"`` or ``">= 4"``): 1.1504 is shown as 1.1504, not as
    1.150 (or 1.15) next to "not met"."""
    if value is None or not math.isfinite(value):
        return "n/a"
    op, _, bound_text = goal.partition(" ")
    try:
        bound = float(bound_text)
    except ValueError:
        return f"{value:.3f}"
    if op not in ("<=", ">="):
        return f"{value:.3f}"
    holds = (lambda x: x <= bound) if op == "<=" else (lambda x: x >= bound)
    for decimals in range(3, 16):
        shown = f"{value:.{decimals}f}"
        if holds(float(shown)) == holds(value):
            return shown
    return repr(value)


def render_speed(data: dict) -> str:
    """The markdown of the speed block: each network's rows and the three goal ratios."""
    lines = [f"`python benchmarks/train_step.py {' '.join(data['argv'])}`, written {data['date']} from git commit "
             f"`{data['commit']}` on {data['machine']} (torch {data['torch']}).", ""]
    for net in data["networks"]:
        memory = any(r.get("peak_mib") is not None for r in net["rows"])
        lines += [f"**{net['label']}**: T={net['num_steps']}, batch {net['batch']}, tau_m={net['tau_m']:g}, dropout "
                  f"{net['dropout']:g}, {net['threads']} thread(s), {net['clock']}, load average "
                  f"{net['load_average']:.1f} at the start.", "",
                  "| row | median step (ms) | x limit |" + (" peak memory (MiB) |" if memory else ""),
                  "|---|---:|---:|" + ("---:|" if memory else "")]
        for r in net["rows"]:
            cells = (f"failed: {_error_cell(r['error'])}", "") if r["error"] else (
                _number(None if r["median_s"] is None else 1e3 * r["median_s"], ".1f"),
                _number(r["ratio_to_limit"], ".2f"))
            if memory:
                cells += ("" if r["error"] or r.get("peak_mib") is None else f"{r['peak_mib']:.1f}",)
            lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    if data["goals"]:
        verdicts = {True: "met", False: "**not met**", None: "not measured"}
        lines.append("Goals (digits net): " + "; ".join(
            f"{g['ratio']} = **{goal_value(g['value'], g['goal'])}** (goal {g['goal']}: {verdicts[g['met']]})"
            for g in data["goals"]) + ".")
    return "\n".join(lines).rstrip()


def speed_block(data: dict) -> str:
    return _block(SPEED_START, SPEED_END, "speed-data", render_speed(data), data)


def update_speed(path: str | os.PathLike[str], results: dict) -> bool:
    """Replace the speed block of the README at ``path`` with the benchmark's ``results``; True if it changed."""
    return _replace_block(path, SPEED_START, SPEED_END, speed_block(speed_data(results)))


def speed_markers_problem(path: str | os.PathLike[str]) -> str | None:
    """Why :func:`update_speed` could not write the README at ``path`` (unreadable, or its speed markers
    missing, repeated or out of order), or None: what the benchmark checks before it measures."""
    try:
        _split(Path(path).read_text(encoding="utf-8"), SPEED_START, SPEED_END)
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read it ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})"
    except ValueError as exc:
        return str(exc)
    return None


def check_speed(path: str | os.PathLike[str]) -> list[str]:
    """Problems with the README's speed block: missing markers or data, or text other than the stored data's."""
    problem = speed_markers_problem(path)
    if problem is not None:
        return [problem]
    _, body, _ = _split(Path(path).read_text(encoding="utf-8"), SPEED_START, SPEED_END)
    match = _SPEED_DATA.search(body)
    if not match:
        return ["the speed block has no stored data: regenerate it with `python benchmarks/train_step.py --readme "
                "README.md`"]
    try:
        expected = speed_block(json.loads(match.group(1)))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"the speed block's stored data cannot be rendered ({type(exc).__name__}: {exc}); regenerate it "
                "with `python benchmarks/train_step.py --readme README.md`"]
    if SPEED_START + body + SPEED_END != expected:
        return ["the speed block differs from what its stored data renders: it was edited by hand or written by "
                "another version; regenerate it with `python benchmarks/train_step.py --readme README.md`"]
    return []


def check_readme(path: str | os.PathLike[str], results_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Problems with the README's results block: missing markers or data, or text that is not what
    :func:`render` makes of the stored data (edited by hand, or rendered by other code).

    With ``results_dir`` holding the ledgers of the block's run (``<profile>/<variant>/claims.json``, the
    default sweep's and the ablation's), the stored verdicts and evidence must also be those ledgers'
    (so an edit of text and stored data together is caught where the run's files are at hand).
    """
    try:
        _, body, _ = _split(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        return [str(exc)]
    match = _DATA.search(body)
    if not match:
        return ["the results block has no stored data (`<!-- results-data {...} -->`): regenerate it with "
                "`leaklib report`"]
    data = json.loads(match.group(1))
    expected = readme_block(data)
    if START + body + END != expected:
        return ["the results block differs from what `leaklib report` renders from its own data: it was edited "
                "by hand or written by another version; regenerate it with `leaklib report`"]
    if results_dir is not None:
        ablation = data.get("ablation", {})
        for variant, claims, summary in ((data.get("variant"), data["claims"], data["summary"]),
                                         (ablation.get("variant"), ablation.get("claims"), ablation.get("summary"))):
            if variant is None:  # a block written before the ablation's variant was stored
                continue
            ledger = Path(results_dir) / str(data.get("profile")) / str(variant) / "claims.json"
            if ledger.is_file():
                stored = _read_json(ledger)
                if _ledger_rows(stored) != claims or stored["summary"] != summary:
                    return [f"the results block's claims differ from {ledger}: regenerate it with `leaklib report`"]
    return []
