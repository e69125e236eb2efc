"""Terminal rendering of results, with rich: rendered from the result objects, never from logs."""

from __future__ import annotations

from autokernel_ci.results import EvalResult, Status

STATUS_STYLE = {
    Status.PASS: "bold green",
    Status.FAIL: "bold red",
    Status.CRASH: "bold red",
    Status.TIMEOUT: "bold yellow",
    Status.REJECTED: "bold magenta",
}


def make_console():
    """A console that does not squeeze tables to 80 columns when writing to a log or a pipe."""
    import sys

    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def print_eval_result(result: EvalResult, console=None) -> None:
    from rich.table import Table

    console = console or make_console()
    where = result.device + ("" if result.representative_timing or "cpu" not in result.device
                             else "; timings not representative")
    console.print(f"[bold]{result.task}[/] ← {result.candidate}  [dim]({where}, {result.duration_s:.1f} s)[/]")
    console.print(f"[{STATUS_STYLE[result.status]}]{result.status.value}[/]  {result.message}")
    if result.reproduce:
        from rich.markup import escape

        console.print(f"reproduce: {escape(result.reproduce)}")
    if result.sandbox and result.sandbox != "bubblewrap":
        console.print(f"[yellow]ran {result.sandbox}: no OS sandbox isolated the candidate[/]")
    if result.stages:
        table = Table(show_edge=False, pad_edge=False, box=None)
        for col in ("stage", "checks", "result", "worst abs err", "worst rel err", "notes"):
            table.add_column(col)
        for stage in result.stages:
            passed = sum(c.passed for c in stage.cases)
            abs_errs = [c.max_abs_err for c in stage.cases if c.max_abs_err is not None]
            rel_errs = [c.max_rel_err for c in stage.cases if c.max_rel_err is not None]
            table.add_row(stage.name, f"{passed}/{len(stage.cases)}",
                          {"pass": "[green]pass[/]", "fail": "[red]fail[/]"}.get(stage.verdict,
                                                                               "[yellow]not exercised[/]"),
                          _fmt(max(abs_errs) if abs_errs else None), _fmt(max(rel_errs) if rel_errs else None),
                          "; ".join(stage.notes))
        console.print(table)
    if result.findings:
        table = Table(title="findings", show_edge=False, box=None)
        for col in ("rule", "where", "message"):
            table.add_column(col)
        for f in result.findings:
            table.add_row(f.rule, f.where(), f.message)
        console.print(table)
    if result.timings:
        table = Table(title="timings", show_edge=False, box=None)
        for col in ("shape", "dtype", "median µs", "IQR µs", "n", "% roofline"):
            table.add_column(col)
        for t in result.timings:
            pct = "-" if t.pct_roofline is None else f"{t.pct_roofline:.1f}% ({t.roofline_source})"
            table.add_row("×".join(map(str, t.shape.values())), t.dtype, f"{t.median_us:.2f}", f"{t.iqr_us:.2f}",
                          str(t.count), pct)
        console.print(table)


def speedups(timing) -> tuple[float | None, float | None, str | None]:
    """(vs eager, vs the best baseline, which baseline was best) for one ShapeTiming."""
    base = timing.baselines_us
    if not base or timing.median_us <= 0:
        return None, None, None
    eager = base.get("eager")
    best_name = min(base, key=base.get)
    return (eager / timing.median_us if eager else None), base[best_name] / timing.median_us, best_name


def print_bench_table(results: list[EvalResult], console=None) -> None:
    from rich.table import Table

    console = console or make_console()
    table = Table(title="benchmark", show_edge=False, box=None)
    for col in ("task", "shape", "dtype", "µs", "% roofline", "eager µs", "vendor µs", "compile µs",
                "vs eager", "vs best"):
        table.add_column(col, justify="left" if col in ("task", "shape", "dtype") else "right")
    for result in results:
        if not result.timings:
            table.add_row(result.task, "-", "-", result.status.value, "", "", "", "", "", "")
            continue
        for t in result.timings:
            vs_eager, vs_best, best = speedups(t)
            pct = "-" if t.pct_roofline is None else f"{t.pct_roofline:.1f}%" + (
                "" if t.roofline_source == "measured" else " (datasheet)")
            table.add_row(result.task, "×".join(map(str, t.shape.values())), t.dtype, f"{t.median_us:.2f}", pct,
                          *(f"{t.baselines_us[b]:.2f}" if b in t.baselines_us else "-"
                            for b in ("eager", "vendor", "compile")),
                          "-" if vs_eager is None else f"{vs_eager:.2f}×",
                          "-" if vs_best is None else f"{vs_best:.2f}× ({best})")
    console.print(table)
    if any(not t.representative for r in results for t in r.timings):
        console.print("[yellow]timings on the CPU interpreter are not representative of GPU speed[/]")
