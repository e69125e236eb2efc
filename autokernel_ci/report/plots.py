"""Plots rendered from results: the progress of an optimization run, one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autokernel_ci.loop import LoopResult

FAILED = ("fail", "crash", "timeout", "rejected", "error", "invalid")


def plot_progress(results: Sequence[LoopResult], path: Path) -> Path | None:
    """Speedup over the start and % of roofline per experiment, one colour per task; kept experiments
    are stars, the best so far a step line, failed candidates crosses along the bottom. None when
    there is nothing to plot."""
    if not any(r.experiments for r in results):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_roofline = any(e.pct_roofline is not None for r in results for e in r.experiments)
    fig, axes = plt.subplots(2 if has_roofline else 1, 1, figsize=(9, 6.5 if has_roofline else 4), sharex=True,
                             squeeze=False)
    speed_ax = axes[0][0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(results):
        color = colors[i % len(colors)]
        _plot_speedup(speed_ax, r, color)
        if has_roofline:
            _plot_roofline(axes[1][0], r, color)
    speed_ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    speed_ax.set_ylabel("speedup over the start (×)")
    speed_ax.legend(loc="best", fontsize=8)
    speed_ax.grid(alpha=0.3)
    if has_roofline:
        axes[1][0].set_ylabel("% of roofline")
        axes[1][0].grid(alpha=0.3)
    axes[-1][0].set_xlabel("experiment")
    title = "autokernel-ci: " + ", ".join(r.task for r in results)
    if any(not r.representative for r in results):
        title += "\nCPU interpreter: timings NOT representative of GPU speed"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def speedup_of(e) -> float | None:
    """Start ÷ this, as the loop compared it (`Experiment.speedup_vs_start`): a candidate judged slower than
    the incumbent sits below the best-so-far line."""
    return e.speedup_vs_start


def speedup_series(r: LoopResult) -> tuple[list[tuple[int, float]], list[tuple[int, float]], list[tuple[int, float]]]:
    """(tried points, kept points, the best-so-far step line) of one run, as (experiment, speed-up) pairs:
    exactly what the plot draws."""
    measured = [e for e in r.experiments if speedup_of(e)]
    tried = [(e.n, speedup_of(e)) for e in measured if not e.kept]
    kept = [(e.n, speedup_of(e)) for e in measured if e.kept]
    line, best = [], None
    for e in r.experiments:
        if e.is_incumbent and speedup_of(e):
            best = speedup_of(e)
        if best is not None:
            line.append((e.n, best))
    return tried, kept, line


def _plot_speedup(ax, r: LoopResult, color: str) -> None:
    tried, kept, line = speedup_series(r)
    ax.scatter([n for n, _ in tried], [y for _, y in tried], s=14, color=color, alpha=0.45, label=f"{r.task}: tried")
    if kept:
        ax.scatter([n for n, _ in kept], [y for _, y in kept], marker="*", s=140, color=color,
                   edgecolor="black", linewidth=0.6, zorder=3, label=f"{r.task}: kept")
    if line:
        ax.step([n for n, _ in line], [y for _, y in line], where="post", color=color, linewidth=1.2)
    failed = [e.n for e in r.experiments if e.verdict in FAILED]
    if failed:
        low = min([y for _, y in tried + kept] or [1.0])
        ax.scatter(failed, [low * 0.9] * len(failed), marker="x", s=24, color="crimson",
                   label=f"{r.task}: failed gate")


def _plot_roofline(ax, r: LoopResult, color: str) -> None:
    points = [e for e in r.experiments if e.pct_roofline is not None]
    ax.scatter([e.n for e in points if not e.kept], [e.pct_roofline for e in points if not e.kept], s=14,
               color=color, alpha=0.45)
    kept = [e for e in points if e.kept]
    if kept:
        ax.scatter([e.n for e in kept], [e.pct_roofline for e in kept], marker="*", s=140, color=color,
                   edgecolor="black", linewidth=0.6, zorder=3)
