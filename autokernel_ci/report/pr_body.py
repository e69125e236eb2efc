"""The body of an optimization pull request, rendered from the loop's results.

It is the run summary of `report/markdown.py` (benchmark table, correctness evidence, experiment log)
with what a reviewer of a pull request needs around it: one summary line per kernel, the anti-cheat
findings, the GPU and software that measured, how to reproduce, the progress plot committed on the
branch, and the risk classification (with the "why this is high risk" section when it applies).
Everything is computed from `LoopResult`/`EvalResult`; nothing is parsed from log text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autokernel_ci.report.markdown import NOT_REPRESENTATIVE, _benchmarks, _correctness, _experiment_log, _us
from autokernel_ci.report.risk_md import render_risk_section

if TYPE_CHECKING:
    from autokernel_ci.loop import LoopResult
    from autokernel_ci.results import EvalResult
    from autokernel_ci.risk import RiskConfig, RiskReport

PR_BODY_MARKER = "<!-- autokernel-ci:pr-body -->"
BASELINE_NAMES = {"eager": "eager PyTorch", "vendor": "the vendor op", "compile": "`torch.compile`"}
# Environment keys shown first, in this order, with the names people use for them.
ENVIRONMENT_KEYS = (("driver", "driver"), ("cuda", "CUDA"), ("torch", "torch"), ("triton", "triton"),
                    ("python", "python"))


@dataclass(frozen=True)
class EndToEnd:
    """An end-to-end figure for the summary: measured by `verify`, or estimated from the profile's shares."""

    speedup: float
    measured: bool
    detail: str  # what was compared, e.g. "patched vs eager, llama on NVIDIA H100"


def render_pr_body(results: Sequence[LoopResult], *, plot_url: str | None = None, risk: RiskReport | None = None,
                   risk_config: RiskConfig | None = None, blob_url: str | None = None,
                   end_to_end: EndToEnd | None = None, environment: Mapping[str, str] | None = None,
                   reproduce: Sequence[str] | None = None) -> str:
    """The whole body. `blob_url` (`https://github.com/o/r/blob/<sha>`) links the risk triggers to their
    lines; `environment` adds what the results do not record (the driver, say); `reproduce` replaces
    the default commands (check out the branch, `autokernel-ci bench` the kernel)."""
    lines = [PR_BODY_MARKER, "## Summary", ""]
    lines += [_summary_line(r) for r in results]
    lines += ["", _end_to_end_line(end_to_end)]
    if any(not r.representative for r in results):
        lines += ["", NOT_REPRESENTATIVE]
    lines += ["", "## Benchmarks", ""] + _benchmark_rows(results)
    if plot_url:
        lines += ["", f"![speedup over the start and % of roofline per experiment]({plot_url})", "",
                  "<sub>The plot is committed on this branch; every experiment is a row of `results.jsonl`.</sub>"]
    lines += ["", "## Correctness evidence", ""] + _correctness(results) + _anticheat(results)
    lines += ["", "## Experiment log", ""] + _experiment_log(results)
    lines += ["", "## Environment", ""] + _environment(results, environment or {})
    lines += ["", "## Reproduce", "", "```bash", *(reproduce or _reproduce(results)), "```"]
    lines += ["", "## Review", ""] + _review(risk, risk_config, blob_url)
    return "\n".join(lines).rstrip() + "\n"


def pr_title(results: Sequence[LoopResult]) -> str:
    """'autokernel: rmsnorm 2.31× faster', or several kernels joined; marked when timed off-GPU."""
    parts = [f"{r.task} {r.speedup:.2f}× faster" if r.speedup else r.task for r in results]
    title = "autokernel: " + ", ".join(parts)
    if any(not r.representative for r in results):
        title += " (CPU interpreter timings)"
    return title


# -- summary ------------------------------------------------------------------------------------------


def _summary_line(r: LoopResult) -> str:
    best = r.best_result
    head = f"- **`{r.task}`** (`{r.kernel_path}`): "
    if best is None:
        return head + "no passing kernel was measured."
    shapes = len(best.timings)
    if r.speedup:
        speed = (f"**{r.speedup:.2f}× faster** than the starting kernel (geometric mean of the full gate's "
                 f"medians over {shapes} shape{'s' * (shapes != 1)})")
    else:
        speed = "measured on its own (no starting kernel was measured)"
    roofline = [t.pct_roofline for t in best.timings if t.pct_roofline is not None]
    roof = f"; {sum(roofline) / len(roofline):.1f}% of the measured roofline" if roofline else ""
    return head + speed + roof + "; " + _vs_fastest_baseline(best) + "."


def _vs_fastest_baseline(result: EvalResult) -> str:
    """The kernel against the fastest of eager, vendor and compile, shape by shape (the honest comparison)."""
    ratios: list[tuple[float, str, str]] = []
    for t in result.timings:
        measured = {k: v for k, v in t.baselines_us.items() if v and v > 0}
        if not measured or t.median_us <= 0:
            continue
        name = min(measured, key=measured.get)
        ratios.append((measured[name] / t.median_us, name, "×".join(map(str, t.shape.values()))))
    if not ratios:
        return "no baseline was timed"
    if len(ratios) == 1:
        ratio, name, _ = ratios[0]
        return f"{ratio:.2f}× the fastest baseline ({BASELINE_NAMES.get(name, name)})"
    geo = math.exp(sum(math.log(x[0]) for x in ratios) / len(ratios))
    worst = min(ratios)
    return (f"{geo:.2f}× the fastest baseline per shape (geometric mean; lowest {worst[0]:.2f}×, "
            f"{BASELINE_NAMES.get(worst[1], worst[1])} at {worst[2]})")


def _end_to_end_line(e2e: EndToEnd | None) -> str:
    if e2e is None:
        return ("End to end: not measured in this run (`autokernel-ci verify --model NAME` swaps the kernels into "
                "a model and times it).")
    if e2e.measured:
        return f"End to end: **{e2e.speedup:.2f}×**, measured ({e2e.detail})."
    return f"End to end: about {e2e.speedup:.2f}×, estimated, not measured ({e2e.detail})."


# -- sections -----------------------------------------------------------------------------------------


def _benchmark_rows(results: Sequence[LoopResult]) -> list[str]:
    """The run summary's table; a kernel with no starting measurement gets its rows with 'before' empty."""
    measured = [r for r in results if r.start_result is not None]
    if len(measured) == len(results):
        return _benchmarks(results)
    rows = _benchmarks(measured) if measured else _benchmarks([])
    table, notes = rows[:-2], rows[-2:]
    for r in results:
        if r.start_result is not None or r.best_result is None:
            continue
        for t in r.best_result.timings:
            vs = [f"{t.baselines_us[n] / t.median_us:.2f}×" if t.baselines_us.get(n) and t.median_us > 0 else "-"
                  for n in ("eager", "vendor", "compile")]
            pct = "-" if t.pct_roofline is None else f"{t.pct_roofline:.1f}%"
            table.append(f"| {r.task} | {'×'.join(map(str, t.shape.values()))} | {t.dtype} | - | {_us(t.median_us)} "
                         f"| - | {' | '.join(vs)} | - → {pct} |")
    return table + notes


def _anticheat(results: Sequence[LoopResult]) -> list[str]:
    lines = ["**Anti-cheat**"]
    unsandboxed = [r.task for r in results for res in (r.start_result, r.best_result)
                   if res is not None and res.sandbox and res.sandbox != "bubblewrap"]
    if unsandboxed:
        lines.append(f"- **Unsandboxed**: {', '.join(sorted(set(unsandboxed)))} ran without the OS sandbox "
                     "(`--sandbox=process`): only the checks inside the candidate's process stood in its way.")
    for r in results:
        findings = r.best_result.findings if r.best_result is not None else []
        rejected = [e for e in r.tried if e.verdict == "rejected"]
        found = "; ".join(f"{f.rule} ({f.where()}): {f.message}" for f in findings) if findings else "none"
        line = f"- `{r.task}`: findings on the final kernel: {found}."
        if rejected:
            line += (f" {len(rejected)} candidate{'s were' if len(rejected) != 1 else ' was'} rejected during the "
                     "run for trying to game the gate (not kept; see the experiment log).")
        lines.append(line)
    return lines


def _environment(results: Sequence[LoopResult], extra: Mapping[str, str]) -> list[str]:
    env: dict[str, str] = {}
    devices: list[str] = []
    for r in results:
        for result in (r.start_result, r.best_result):
            if result is not None:
                env.update(result.environment)
        if r.device and r.device not in devices:
            devices.append(r.device)
    env.update(extra)
    representative = all(r.representative for r in results)
    lines = [f"- GPU: {', '.join(devices) or 'not recorded'}"
             + ("" if representative else " (CPU interpreter: timings not representative)")]
    for key, label in ENVIRONMENT_KEYS:
        if key in env or key == "driver":
            lines.append(f"- {label}: {env.get(key, 'not recorded')}")
    known = {k for k, _ in ENVIRONMENT_KEYS}
    lines += [f"- {k}: {v}" for k, v in sorted(env.items()) if k not in known]
    return lines


def _reproduce(results: Sequence[LoopResult]) -> list[str]:
    lines: list[str] = []
    for r in results:
        device = " --device cuda" if r.representative else ""
        lines += [f"git fetch origin {r.branch} && git checkout {r.branch}",
                  f"autokernel-ci bench --task {r.task}{device}   # the gate, then timings beside the baselines"]
        if r.start_commit:
            lines.append(f"git log --oneline {r.start_commit[:12]}..{r.branch}   # one commit per kept experiment")
    return lines


def _review(risk: RiskReport | None, config: RiskConfig | None, blob_url: str | None) -> list[str]:
    lines: list[str] = []
    if risk is None:
        lines.append("Risk: not classified.")
    elif risk.is_high:
        label = risk.label(config)
        lines += [f"Risk: **high** ({len(risk.triggers)} reason{'s' * (len(risk.triggers) != 1)} below): labelled "
                  f"`{label}`, reviews requested from the CODEOWNERS of the changed files.", "",
                  render_risk_section(risk, blob_url=blob_url).rstrip()]
    else:
        lines.append(f"Risk: low (no tensor-core, vendor-library or numerics change among the added lines): "
                     f"labelled `{risk.label(config)}`.")
    lines += ["", "autokernel-ci never merges its own pull requests: a person decides."]
    return lines
