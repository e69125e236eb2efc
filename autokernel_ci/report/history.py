"""The gate's history: a folder of gate JSONs rendered as per-task trend charts and a table, and numerics tracked.

Each gate run's JSON (`gate --json`) is one point per task: the head's median (of the shape that
decided the verdict, else the first), the verdict, and the worst error against float64 over the
head's correctness cases. Points are grouped by hardware fingerprint: a trend line never joins
measurements from different machines (GPU, driver, clocks, power limit), and the table says which
runs were kept apart and why.

`numerics_changes` compares a gate run's worst errors with the base's, taken from the history (the
latest earlier run whose head was this run's base, else the latest earlier run on the same
hardware, named as such): a task whose error grew by more than the configured factor gets a
`numerics-changed` note.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autokernel_ci.errors import AutokernelError
from autokernel_ci.gate import GateReport, TaskVerdict
from autokernel_ci.harness.device import fingerprint_label, fingerprint_mismatch

TINY_ERROR = 1e-12  # an exact base (error 0) is compared as if it were this
SERIES_FILE = "history.json"  # render_history's data, beside the charts (never read as a gate run)


@dataclass
class Point:
    """One task in one gate run."""

    task: str
    run: str  # the JSON's file name
    started_at: str
    head_sha: str
    base_sha: str
    verdict: str
    head_us: float | None
    base_us: float | None
    ratio: float | None
    worst_abs_err: float | None
    worst_rel_err: float | None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    path: str | None = None


@dataclass
class NumericsChange:
    """A task whose worst error against float64 grew by more than the factor."""

    task: str
    path: str | None
    base_err: float
    head_err: float
    factor: float
    blocking: bool
    baseline: str  # which run the base's error came from, in words

    @property
    def message(self) -> str:
        grew = self.head_err / max(self.base_err, TINY_ERROR)
        return (f"numerics-changed: the worst error against float64 grew {grew:.3g}× (from {self.base_err:.3g} to "
                f"{self.head_err:.3g}; the limit is {self.factor:g}×; base from {self.baseline})"
                + (": blocking" if self.blocking else ""))


def worst_errors(task: TaskVerdict) -> tuple[float | None, float | None]:
    """(max abs error, max rel error) over the head's correctness cases that passed, None when none recorded.

    Failing cases are left out: a failing kernel is already blocked, and its error says nothing of the trend.
    """
    result = task.head_result if isinstance(task.head_result, dict) else {}
    abs_errs, rel_errs = [], []
    for stage in result.get("stages") or []:
        for case in (stage.get("cases") or []) if isinstance(stage, dict) else []:
            if not isinstance(case, dict) or not case.get("passed"):
                continue
            for key, into in (("max_abs_err", abs_errs), ("max_rel_err", rel_errs)):
                value = case.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    into.append(float(value))
    return (max(abs_errs) if abs_errs else None), (max(rel_errs) if rel_errs else None)


def points_of(report: GateReport, run: str = "") -> list[Point]:
    points = []
    for task in report.verdicts:
        decider = None
        if task.shapes:
            decider = min(task.shapes, key=lambda s: abs((s.ratio or 0) - (task.ratio or 0)))
        abs_err, rel_err = worst_errors(task)
        points.append(Point(task.task, run, report.started_at, report.head_sha, report.base_sha, task.verdict,
                            decider.head_median_us if decider else None, decider.base_median_us if decider else None,
                            task.ratio, abs_err, rel_err, dict(task.fingerprint or report.fingerprint or {}),
                            task.path))
    return points


def load_reports(folder: str | Path) -> list[tuple[str, GateReport]]:
    """Every gate JSON in `folder` (not recursive, history.json aside), oldest first by its start time; one
    clear error for a file that is not a gate report."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AutokernelError(f"history folder not found: {folder}")
    reports = []
    for path in sorted(folder.glob("*.json")):
        if path.name == SERIES_FILE:
            continue  # what render_history wrote beside them
        try:
            reports.append((path.name, GateReport.from_json(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise AutokernelError(f"{path} is not a gate report (`autokernel-ci gate --json`): "
                                  f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if not reports:
        raise AutokernelError(f"no gate JSONs (*.json) in {folder}")
    return sorted(reports, key=lambda item: (item[1].started_at, item[0]))


def add_reports(folder: str | Path, files: Sequence[str | Path], keep: int | None = None) -> tuple[list[Path],
                                                                                                   list[Path]]:
    """Copy gate JSONs into `folder` (named by start time and head commit, so a re-run replaces its own), then
    keep the newest `keep`. Each file is read as a gate report first: anything else is refused, not stored."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    added = []
    for file in files:
        try:
            text = Path(file).read_text(encoding="utf-8")
            report = GateReport.from_json(text)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise AutokernelError(f"{file} is not a gate report (`autokernel-ci gate --json`): "
                                  f"{type(exc).__name__}: {str(exc)[:200]}") from None
        stamp = re.sub(r"[^0-9]", "", report.started_at)[:14] or "0"
        target = folder / f"gate-{stamp}-{_safe_name(report.head_sha[:12] or 'head')}.json"
        target.write_text(report.to_json() + "\n", encoding="utf-8")
        added.append(target)
    removed = []
    if keep is not None:
        runs = [path for path, _ in ((folder / name, r) for name, r in load_reports(folder))]
        for path in runs[:-keep] if len(runs) > keep else []:
            path.unlink()
            removed.append(path)
    return added, removed


@dataclass
class Series:
    """One task's points on one machine."""

    task: str
    fingerprint: dict[str, Any]
    points: list[Point]

    @property
    def machine(self) -> str:
        return fingerprint_label(self.fingerprint)


def series(points: Iterable[Point]) -> tuple[list[Series], list[str]]:
    """Points grouped by task and fingerprint (a line per machine), and the reasons runs were kept apart."""
    out: list[Series] = []
    apart: list[str] = []
    for point in points:
        same_task = [s for s in out if s.task == point.task]
        home = next((s for s in same_task if fingerprint_mismatch(s.fingerprint, point.fingerprint) is None), None)
        if home is None:
            if same_task:
                why = fingerprint_mismatch(same_task[0].fingerprint, point.fingerprint)
                apart.append(f"`{point.task}` in {point.run} is not compared with {same_task[0].points[0].run}: {why}")
            out.append(Series(point.task, point.fingerprint, [point]))
        else:
            home.points.append(point)
    return out, apart


def numerics_changes(report: GateReport, history: Sequence[tuple[str, GateReport]], factor: float,
                     blocking: bool = False) -> list[NumericsChange]:
    """The tasks of `report` whose worst abs error against float64 grew by more than `factor` over the base's."""
    if not factor or factor <= 1.0:
        return []
    earlier = [(name, r) for name, r in history if r.started_at <= report.started_at and r is not report
               and not (r.head_sha == report.head_sha and r.base_sha == report.base_sha)]
    changes = []
    for task in report.verdicts:
        head_err, _ = worst_errors(task)
        if head_err is None:
            continue
        fp = task.fingerprint or report.fingerprint
        base = _base_error(task.task, report.base_sha, fp, earlier)
        if base is None:
            continue
        base_err, baseline = base
        if head_err > factor * max(base_err, TINY_ERROR):
            changes.append(NumericsChange(task.task, task.path, base_err, head_err, factor, blocking, baseline))
    return changes


def _base_error(name: str, base_sha: str, fp: dict[str, Any] | None,
                earlier: Sequence[tuple[str, GateReport]]) -> tuple[float, str] | None:
    exact, same_machine = None, None
    for run, r in reversed(earlier):
        for task in r.verdicts:
            if task.task != name or task.verdict in ("fail", "error"):
                continue
            err, _ = worst_errors(task)
            if err is None:
                continue
            if fingerprint_mismatch(fp, task.fingerprint or r.fingerprint) is not None:
                continue  # numerics on another GPU or driver: not the same computation
            if r.head_sha and r.head_sha == base_sha and exact is None:
                exact = (err, f"{run}, the gate run of the base {base_sha[:12]}")
            if same_machine is None:
                same_machine = (err, f"{run}, the latest earlier run on this hardware (no run of the base "
                                     f"{base_sha[:12]} is in the history)")
    return exact or same_machine


# -- rendering --------------------------------------------------------------------------------------


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "task"


def render_charts(all_series: Sequence[Series], out_dir: Path) -> dict[str, Path]:
    """One PNG per task: head median per run (a line per machine), and the worst error on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {}
    for task in dict.fromkeys(s.task for s in all_series):
        mine = [s for s in all_series if s.task == task]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=False)
        for s in mine:
            xs = [p.head_sha[:7] or p.run for p in s.points]
            timed = [(x, p.head_us) for x, p in zip(xs, s.points) if p.head_us]
            if timed:
                top.plot([x for x, _ in timed], [y for _, y in timed], marker="o", label=s.machine[:60])
            errs = [(x, p.worst_abs_err) for x, p in zip(xs, s.points) if p.worst_abs_err]
            if errs:
                bottom.semilogy([x for x, _ in errs], [y for _, y in errs], marker="s", label=s.machine[:60])
        top.set_title(f"{task}: head median per gate run")
        top.set_ylabel("µs")
        bottom.set_ylabel("worst abs error vs float64")
        bottom.set_xlabel("head commit")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.tick_params(axis="x", labelrotation=45)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        if not top.lines:
            top.text(0.5, 0.5, "no timed runs (CPU runs are not timed)", ha="center", va="center",
                     transform=top.transAxes)
        fig.tight_layout()
        path = out_dir / f"{_safe_name(task)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        charts[task] = path
    return charts


def render_table(all_series: Sequence[Series], apart: Sequence[str], charts: dict[str, Path] | None = None) -> str:
    """Markdown: a row per task and machine with the first and latest head median and worst error."""
    lines = ["## autokernel-ci gate history", "",
             "| task | machine | runs | first µs | latest µs | change | latest verdict "
             "| worst abs error (first → latest) |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for s in all_series:
        timed = [p for p in s.points if p.head_us]
        first, last = (timed[0].head_us, timed[-1].head_us) if timed else (None, None)
        change = f"{(last / first - 1) * 100:+.1f} %" if first and last else "–"
        errs = [p.worst_abs_err for p in s.points if p.worst_abs_err is not None]
        err = f"{errs[0]:.3g} → {errs[-1]:.3g}" if errs else "–"
        name = f"[`{s.task}`]({charts[s.task].name})" if charts and s.task in charts else f"`{s.task}`"
        lines.append(f"| {name} | {s.machine} | {len(s.points)} | {_us(first)} | {_us(last)} | {change} | "
                     f"{s.points[-1].verdict} | {err} |")
    lines.append("")
    if apart:
        lines += ["**Not compared** (measurements on different hardware are never put on one line):", ""]
        lines += [f"- {why}" for why in apart] + [""]
    return "\n".join(lines)


def _us(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def render_history(folder: str | Path, out_dir: str | Path) -> tuple[Path, dict[str, Path], list[str]]:
    """Charts and the table (history.md) from the gate JSONs in `folder`; (table path, charts, kept apart)."""
    reports = load_reports(folder)
    points = [p for name, report in reports for p in points_of(report, name)]
    all_series, apart = series(points)
    out = Path(out_dir)
    charts = render_charts(all_series, out)
    table = out / "history.md"
    table.write_text(render_table(all_series, apart, charts), encoding="utf-8")
    (out / SERIES_FILE).write_text(json.dumps({"series": [{"task": s.task, "machine": s.machine,
                                                              "points": [p.__dict__ for p in s.points]}
                                                             for s in all_series], "not_compared": apart},
                                                 indent=1, default=str), encoding="utf-8")
    return table, charts, apart
