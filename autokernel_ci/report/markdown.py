"""Markdown for an optimization run: the body a pull request carries, rendered from the loop's results.

Everything here is computed from `LoopResult`, `EvalResult` and the experiment rows, never from log
text. Timings from the CPU interpreter are labelled as not representative wherever they appear.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from autokernel_ci.loop import shape_median_us
from autokernel_ci.search.proposer import REVERT_VERDICTS

if TYPE_CHECKING:
    from autokernel_ci.loop import LoopResult
    from autokernel_ci.results import EvalResult, ShapeTiming

NOT_REPRESENTATIVE = ("> **Timings are not representative.** They were measured on the CPU under Triton's "
                      "interpreter, which only shows that the loop works: a GPU run decides what is faster.")
BASELINES = ("eager", "vendor", "compile")


def correctness_line(result: EvalResult) -> str:
    """'PASS: all 20 checks passed in 5 stages (smoke, …); 20 seeds; worst error abs 1.2e-07, rel 3.4e-06'."""
    cases = [c for s in result.stages for c in s.cases]
    stages = ", ".join(s.name for s in result.stages) or "none"
    abs_errs = [c.max_abs_err for c in cases if c.max_abs_err is not None]
    rel_errs = [c.max_rel_err for c in cases if c.max_rel_err is not None]
    worst = ""
    if abs_errs or rel_errs:
        worst = "; worst error " + ", ".join(
            f"{kind} {_sci(max(errs))}" for kind, errs in (("abs", abs_errs), ("rel", rel_errs)) if errs)
    idle = [s.name for s in result.stages if not s.exercised]
    unexercised = f"; NOT exercised: {', '.join(idle)} (see the notes)" if idle else ""
    return (f"{result.status.value}: {sum(c.passed for c in cases)}/{len(cases)} checks in {len(result.stages)} "
            f"stages ({stages}); {len(set(result.seeds))} seeds{worst}{unexercised}")


def roofline_line(result: EvalResult) -> str:
    """'61.2% (16384×4096 bf16)' per shape, or why there is no roofline."""
    parts = [f"{t.pct_roofline:.1f}% ({_shape(t)})" for t in result.timings if t.pct_roofline is not None]
    if parts:
        return ", ".join(parts)
    if not result.representative_timing:
        return "n/a (no roofline on the CPU interpreter)"
    return "n/a (no bytes/flops model or device ceilings)"


def render_run_summary(results: Sequence[LoopResult], *, plot: str | None = None, command: str = "",
                       title: str = "autokernel-ci: kernel optimization") -> str:
    """The whole report: benchmarks, correctness evidence, experiment log, environment."""
    lines = [f"# {title}", ""]
    if any(not r.representative for r in results):
        lines += [NOT_REPRESENTATIVE, ""]
    lines += _overview(results)
    lines += ["", "## Benchmarks", ""] + _benchmarks(results)
    if plot:
        lines += ["", f"![speedup and % of roofline per experiment]({plot})"]
    lines += ["", "## Correctness evidence", ""] + _correctness(results)
    lines += ["", "## Experiment log", ""] + _experiment_log(results)
    lines += ["", "## Environment", ""] + _environment(results, command)
    return "\n".join(lines).rstrip() + "\n"


def _overview(results: Sequence[LoopResult]) -> list[str]:
    rows = ["| kernel | file | speedup | experiments | kept | branch | stopped because |",
            "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for r in results:
        speedup = f"{r.speedup:.2f}×" if r.speedup else "-"
        if r.speedup and not r.representative:
            speedup += " (interpreter)"
        rows.append(f"| {r.task} | `{r.kernel_path}` | {speedup} | {len(r.tried)} | {len(r.kept)} | "
                    f"`{r.branch}` | {_cell(r.stop_reason)} |")
    return rows


def _benchmarks(results: Sequence[LoopResult]) -> list[str]:
    rows = ["| kernel | shape | dtype | before µs | after µs | speedup | vs eager | vs vendor | vs compile "
            "| % roofline before → after |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        if r.start_result is None or r.best_result is None:
            rows.append(f"| {r.task} | - | - | - | - | - | - | - | - | {_cell(r.stop_reason)} |")
            continue
        before = {(_shape(t)): t for t in r.start_result.timings}
        for t in r.best_result.timings:
            b = before.get(_shape(t))
            after_us, before_us = shape_median_us(t), shape_median_us(b) if b else None
            speedup = f"{before_us / after_us:.2f}×" if before_us and after_us > 0 else "-"
            vs = [f"{t.baselines_us[n] / after_us:.2f}×" if n in t.baselines_us and after_us > 0 else "-"
                  for n in BASELINES]
            pct = f"{_pct(b.pct_roofline) if b else '-'} → {_pct(t.pct_roofline)}"
            rows.append(f"| {r.task} | {'×'.join(map(str, t.shape.values()))} | {t.dtype} | "
                        f"{_us(before_us) if before_us else '-'} | {_us(after_us)} | {speedup} | {' | '.join(vs)} | "
                        f"{pct} |")
    on_cpu = any(not t.representative for r in results if r.best_result for t in r.best_result.timings)
    where = (" (on the CPU interpreter, of the fastest half of the samples, since other processes only add time)"
             if on_cpu else "")
    notes = ["", f"Times are medians of the full gate's timing runs{where}; \"vs\" columns compare the final kernel "
             "with the eager reference, the vendor op and `torch.compile` of the reference, where they were measured."]
    return rows + notes


def _correctness(results: Sequence[LoopResult]) -> list[str]:
    lines = []
    for r in results:
        result = r.best_result
        if result is None:
            lines += [f"**{r.task}**: no passing kernel was measured.", ""]
            continue
        lines += [f"**{r.task}** (final kernel): {correctness_line(result)}", "",
                  "| stage | checks | shapes | dtypes | input kinds | seeds | worst abs err | worst rel err |",
                  "| --- | ---: | --- | --- | --- | ---: | ---: | ---: |"]
        for stage in result.stages:
            shapes = sorted({"×".join(map(str, c.shape.values())) or "default" for c in stage.cases})
            dtypes = sorted({c.dtype for c in stage.cases})
            kinds = sorted({c.kind for c in stage.cases})
            abs_errs = [c.max_abs_err for c in stage.cases if c.max_abs_err is not None]
            rel_errs = [c.max_rel_err for c in stage.cases if c.max_rel_err is not None]
            idle = "" if stage.exercised else " (**not exercised**)"
            lines.append(f"| {stage.name} | {sum(c.passed for c in stage.cases)}/{len(stage.cases)}{idle} | "
                         f"{', '.join(shapes)} | {', '.join(dtypes)} | {', '.join(kinds)} | "
                         f"{len({c.seed for c in stage.cases})} | {_sci(max(abs_errs)) if abs_errs else '-'} | "
                         f"{_sci(max(rel_errs)) if rel_errs else '-'} |")
        notes = [n for s in result.stages for n in s.notes]
        for note in dict.fromkeys(notes):
            lines.append(f"\n- {note}")
        lines.append("")
    return lines


def _experiment_log(results: Sequence[LoopResult]) -> list[str]:
    lines = []
    for r in results:
        reverted = r.reverted_by_reason()
        by_reason = ", ".join(f"{reverted[v]} {v}" for v in REVERT_VERDICTS if v in reverted) or "none"
        if r.noise is not None:
            noise = f"Run-to-run noise {r.noise:.1%}"
        elif not r.representative:
            noise = "No run-to-run noise on the CPU interpreter (its timings follow the machine's load)"
        else:
            noise = "Run-to-run noise not measured"
        lines += [f"**{r.task}**: {len(r.tried)} tried, {len(r.kept)} kept, reverted: {by_reason}. "
                  f"{noise}; {r.elapsed_s / 60:.1f} min; proposer `{r.proposer}`; "
                  f"stopped because {r.stop_reason or 'the run ended'}.", ""]
        if r.kept:
            lines += ["| # | change | vs previous | vs start | % roofline | commit |",
                      "| ---: | --- | ---: | ---: | ---: | --- |"]
            for e in r.kept:
                vs_prev = f"{1 / e.gate_ratio:.2f}×" if e.gate_ratio else "-"
                vs_start = f"{e.speedup_vs_start:.2f}×" if e.speedup_vs_start else "-"
                lines.append(f"| {e.n} | {_cell(e.description)} | {vs_prev} | {vs_start} | {_pct(e.pct_roofline)} | "
                             f"`{(e.commit or '')[:10]}` |")
            lines.append("")
        for note in r.notes:
            lines.append(f"- {note}")
    lines.append("Every experiment, kept or not, is a row of `results.jsonl` (and `results.tsv`).")
    return lines


def _environment(results: Sequence[LoopResult], command: str) -> list[str]:
    env: dict[str, str] = {}
    devices = []
    for r in results:
        for result in (r.best_result, r.start_result):
            if result is not None:
                env.update(result.environment)
        if r.device and r.device not in devices:
            devices.append(r.device)
    lines = [f"- device: {', '.join(devices) or '-'}" + ("" if all(r.representative for r in results)
                                                          else " (timings not representative)")]
    lines += [f"- {k}: {v}" for k, v in sorted(env.items())]
    lines.append(f"- platform: {platform.platform()}")
    lines.append(f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    if command:
        lines.append(f"- command: `{command}`")
    return lines


def _shape(t: ShapeTiming) -> str:
    return "×".join(map(str, t.shape.values())) + f" {t.dtype}"


def _us(value: float) -> str:
    return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _sci(value: float) -> str:
    return f"{value:.1e}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")
