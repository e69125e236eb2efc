"""`autokernel-ci kernelbench`: a whole KernelBench level in one command, judged and timed, summarised as
the field reports it.

Every problem file in PROBLEMS_DIR (`Model`, `get_inputs`, `get_init_inputs`) is matched with the
candidate of the same file name in `--candidates` (it defines `ModelNew`); a problem without one is
listed as MISSING and counts as not correct. Each candidate goes through the whole correctness gate
and, once it passes, is timed against the problem's eager `Model` and `torch.compile(Model)` (the
baselines run in a worker the candidate never touched), one worker per GPU with `--workers`.

The summary is KernelBench's: over all the problems listed, `correct` is the share whose candidate
passed, `fast_p` the share that passed *and* ran more than p times faster than the baseline
(`fast_0` is the correct share), and the geometric mean of the speed-ups of the correct candidates
that were timed. A speed-up is baseline time / candidate time at the problem's own inputs.

Flagged for review (not refused): a correct candidate timed above 100% of its roofline (for a
KernelBench problem, the lower bound of its tensors' bytes: above 110% the gate already refuses it as
`timing.impossible`), or above `FLAG_SPEEDUP`× with no roofline to check it against.

`--scale F` runs each problem on a copy whose module-level integer size constants are multiplied
by F (see `tasks.scaled_copy`): the same maths at a size the CPU's Triton interpreter can handle.
Without it the problems run as written — on a GPU, at their full published sizes.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.commands import at_least_one, positive_float, write_text
from autokernel_ci.errors import AutokernelError, TaskError
from autokernel_ci.pool import WorkerPool

if TYPE_CHECKING:
    from autokernel_ci.results import EvalResult

FAST_P = (0.0, 1.0, 2.0)
FLAG_SPEEDUP = 10.0
FLAG_ROOFLINE_PCT = 100.0
BASELINES = ("eager", "compile")


@dataclass
class ProblemRow:
    """One problem's line in the table and the JSON."""

    problem: str
    status: str  # an EvalResult status, MISSING (no candidate) or ERROR (the problem or the harness failed)
    message: str = ""
    candidate: str | None = None
    candidate_us: float | None = None
    baselines_us: dict[str, float] = field(default_factory=dict)
    speedups: dict[str, float] = field(default_factory=dict)
    pct_roofline: float | None = None
    roofline_source: str | None = None
    flags: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def correct(self) -> bool:
        return self.status == "PASS"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kernelbench", help="judge and time a candidate for every KernelBench problem in a folder",
                       description="Every problem in PROBLEMS_DIR with its candidate (<problem stem>.py in "
                                   "--candidates) through the correctness gate and timing against eager and "
                                   "torch.compile; prints a table and the correct / fast_p / geomean summary.")
    p.add_argument("problems", metavar="PROBLEMS_DIR", help="a folder of KernelBench problem files")
    p.add_argument("--candidates", required=True, metavar="DIR",
                   help="a folder with one candidate per problem, named like the problem (defines ModelNew)")
    p.add_argument("--json", metavar="OUT", help="write the rows, the summary and every EvalResult here")
    p.add_argument("--workers", type=at_least_one, default=1, metavar="N",
                   help="evaluate N problems at once: one per GPU (the first N visible), or N CPU slots")
    p.add_argument("--only", metavar="NAMES",
                   help="comma-separated problem stems or globs (e.g. '19_ReLU,2*_*'): only these problems")
    p.add_argument("--scale", type=positive_float, metavar="F",
                   help="multiply each problem's integer size constants by F (sizes for the CPU interpreter); "
                        "default: the problems as written")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to run (default: cuda if available, else cpu with the Triton interpreter)")
    p.add_argument("--timeout", type=positive_float, default=600.0, metavar="SECONDS",
                   help="time limit for each candidate process (default 600)")
    p.add_argument("--seed", type=int, default=None, help="seed for the case seeds (default: fresh each run)")
    p.add_argument("--baselines", default=",".join(BASELINES), metavar="NAMES",
                   help="baselines to time and report speed-ups against, of eager,compile (default both; "
                        "the first one is the summary's); 'none' skips timing")
    p.add_argument("--allow", action="append", default=[], metavar="RULE",
                   help="a finding to allow for every candidate (e.g. "
                        "static.escape:torch.utils.cpp_extension.load_inline for CUDA C++ built with load_inline); "
                        "repeatable")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.harness.sandbox import resolve_device

    problems_dir, candidates_dir = Path(args.problems), Path(args.candidates)
    if not problems_dir.is_dir():
        raise AutokernelError(f"problems folder not found: {problems_dir}")
    if not candidates_dir.is_dir():
        raise AutokernelError(f"candidates folder not found: {candidates_dir}")
    baselines = parse_baselines(args.baselines)
    problems = list_problems(problems_dir, args.only)
    device = resolve_device(args.device)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="autokernel-kernelbench-") as tmp:
        rows, results = run_problems(problems, candidates_dir, device=device, workers=args.workers,
                                     scale=args.scale, timeout=args.timeout, seed=args.seed, baselines=baselines,
                                     allow=tuple(args.allow), scratch=Path(tmp))
    summary = summarize(rows, baselines)
    print(format_table(rows, baselines))
    print()
    print(format_summary(summary, device))
    if args.json:
        payload = {"argv": sys.argv,
                   "problems_dir": str(problems_dir), "candidates_dir": str(candidates_dir), "device": device,
                   "scale": args.scale, "seconds": round(time.monotonic() - started, 1), "summary": summary,
                   "rows": [asdict(r) for r in rows], "results": results}
        write_text(args.json, json.dumps(payload, indent=2, allow_nan=False, default=str) + "\n")
    return 0


def parse_baselines(text: str) -> tuple[str, ...]:
    if text.strip().lower() == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in BASELINES]
    if unknown or not names:
        raise AutokernelError(f"--baselines takes names from {', '.join(BASELINES)} (or 'none'), got {text!r}")
    return names


def _natural_key(path: Path) -> tuple[int, str]:
    match = re.match(r"(\d+)", path.stem)
    return (int(match.group(1)) if match else 1 << 30, path.stem)


def list_problems(folder: Path, only: str | None = None) -> list[Path]:
    """The problem files in `folder`, in KernelBench's numeric order, filtered by `--only`."""
    problems = sorted((p for p in folder.glob("*.py") if not p.name.startswith("_")), key=_natural_key)
    if only:
        patterns = [p.strip().removesuffix(".py") for p in only.split(",") if p.strip()]
        problems = [p for p in problems if any(fnmatch.fnmatchcase(p.stem, pat) for pat in patterns)]
        if not problems:
            raise AutokernelError(f"--only {only!r} matches no problem file in {folder}")
    if not problems:
        raise AutokernelError(f"no problem files (*.py) in {folder}")
    return problems


def run_problems(problems: list[Path], candidates_dir: Path, *, device: str, workers: int = 1,
                 scale: float | None = None, timeout: float = 600.0, seed: int | None = None,
                 baselines: tuple[str, ...] = BASELINES, allow: tuple[str, ...] = (),
                 scratch: Path, progress=None) -> tuple[list[ProblemRow], dict[str, Any]]:
    """Evaluate every problem that has a candidate, `workers` at a time; rows in the problems' order and
    the EvalResults by problem. Progress, one line per finished problem, goes to `progress` (stderr)."""
    from autokernel_ci.harness.sandbox import TimingPlan
    from autokernel_ci.pool import first_gpus
    from autokernel_ci.tasks import kernelbench_task, scaled_copy

    out = progress or sys.stderr
    rows: dict[str, ProblemRow] = {}
    jobs = []
    for problem in problems:
        candidate = candidates_dir / f"{problem.stem}.py"
        if not candidate.is_file():
            rows[problem.stem] = ProblemRow(problem.stem, "MISSING",
                                            f"no candidate {candidate.name} in {candidates_dir}")
            continue
        try:
            path = scaled_copy(problem, scale, scratch / "problems") if scale else problem
            task = kernelbench_task(path)
        except TaskError as exc:
            rows[problem.stem] = ProblemRow(problem.stem, "ERROR", str(exc).replace(str(scratch / "problems"),
                                                                                     str(problem.parent)),
                                            candidate=str(candidate))
            continue
        task = replace(task, allow=tuple(task.allow) + allow)
        plan = None
        if baselines:
            plan = replace(TimingPlan.for_task(task, device), baselines=baselines)
        jobs.append((problem.stem, task, candidate, plan))
    for stem, row in rows.items():
        print(f"kernelbench: {stem}: {row.status}: {row.message}", file=out, flush=True)
    results: dict[str, Any] = {}
    if jobs:
        pool = WorkerPool.cpu(workers) if device == "cpu" else _GpuPerSlotPool(first_gpus(workers))
        with pool:
            futures = [(stem, candidate, pool.submit(task, candidate, device=device, timeout=timeout, seed=seed,
                                                     timing=plan, work_dir=scratch), time.monotonic())
                       for stem, task, candidate, plan in jobs]
            done = 0
            for stem, candidate, future, submitted in futures:
                try:
                    result = future.result()
                except TaskError as exc:  # the problem's own code (its import, its reference) failed
                    row = ProblemRow(stem, "ERROR", str(exc), candidate=str(candidate))
                except AutokernelError as exc:
                    row = ProblemRow(stem, "ERROR", f"harness error: {exc}", candidate=str(candidate))
                except Exception as exc:  # noqa: BLE001 - one problem's harness failure is its row, not the run's end
                    row = ProblemRow(stem, "ERROR", f"harness error: {type(exc).__name__}: {exc}",
                                     candidate=str(candidate))
                else:
                    row = row_from_result(stem, result)
                    results[stem] = result.to_dict()
                row.duration_s = row.duration_s or round(time.monotonic() - submitted, 1)
                rows[stem] = row
                done += 1
                print(f"kernelbench: [{done}/{len(jobs)}] {stem}: {progress_text(row, baselines)}",
                      file=out, flush=True)
    return [rows[p.stem] for p in problems], results


class _GpuPerSlotPool(WorkerPool):
    """The worker pool, with each slot's judging in this process on the slot's own GPU too: the float64
    reference and the comparison of a large problem need tens of GiB, and slots that all judged on the
    first GPU would run it out of memory. (The slot's index is its GPU's index here: the pool's devices
    are the first visible GPUs, in order.)"""

    def _serve(self, slot: int) -> None:
        import torch

        if torch.cuda.is_available() and slot < torch.cuda.device_count():
            torch.cuda.set_device(slot)  # the current device is per thread
        super()._serve(slot)


def row_from_result(stem: str, result: EvalResult) -> ProblemRow:
    row = ProblemRow(stem, result.status.value, result.message, candidate=result.candidate,
                     duration_s=result.duration_s)
    if result.timings:
        timing = result.timings[0]
        row.candidate_us = timing.median_us
        row.baselines_us = dict(timing.baselines_us)
        row.pct_roofline, row.roofline_source = timing.pct_roofline, timing.roofline_source
        if timing.median_us > 0:
            row.speedups = {name: us / timing.median_us for name, us in timing.baselines_us.items() if us > 0}
    row.flags = review_flags(row)
    return row


def review_flags(row: ProblemRow) -> list[str]:
    """Why a correct candidate's speed-up needs a person to look at it (it is not refused)."""
    if not row.correct:
        return []
    flags = []
    if row.pct_roofline is not None and row.pct_roofline > FLAG_ROOFLINE_PCT:
        flags.append(f"timed at {row.pct_roofline:.0f}% of the roofline ({row.roofline_source}): faster than "
                     "the tensors' bytes allow")
    best = max(row.speedups.values(), default=None)
    if row.pct_roofline is None and best is not None and best > FLAG_SPEEDUP:
        flags.append(f"{best:.1f}× faster than a baseline with no roofline to check it against")
    return flags


def summarize(rows: list[ProblemRow], baselines: tuple[str, ...] = BASELINES) -> dict[str, Any]:
    """KernelBench's numbers over all the problems listed (missing candidates and errors count as not
    correct): correct share, fast_p per baseline, geometric-mean speed-up of the correct, timed ones."""
    total = len(rows)
    correct = [r for r in rows if r.correct]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary: dict[str, Any] = {"problems": total, "with_candidate": sum(r.status != "MISSING" for r in rows),
                               "statuses": dict(sorted(counts.items())), "correct": len(correct),
                               "correct_pct": _pct(len(correct), total),
                               "flagged": [r.problem for r in rows if r.flags], "by_baseline": {}}
    for name in baselines:
        speedups = [r.speedups[name] for r in correct if name in r.speedups]
        fast = {}
        for p in FAST_P:
            n = len(correct) if p == 0 else sum(1 for s in speedups if s > p)
            fast[f"fast_{p:g}"] = _pct(n, total)
        geomean = math.exp(sum(math.log(s) for s in speedups) / len(speedups)) if speedups else None
        summary["by_baseline"][name] = {**fast, "timed": len(speedups), "geomean_speedup": geomean}
    return summary


def _pct(n: int, total: int) -> float:
    return round(100.0 * n / total, 1) if total else 0.0


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}×"


def progress_text(row: ProblemRow, baselines: tuple[str, ...]) -> str:
    speed = ", ".join(f"{_x(row.speedups.get(b))} {b}" for b in baselines if b in row.speedups)
    text = row.status + (f" ({speed})" if speed else "") + f" in {row.duration_s:.1f} s"
    if not row.correct and row.message:
        text += f": {row.message[:160]}"
    return text


def format_table(rows: list[ProblemRow], baselines: tuple[str, ...] = BASELINES) -> str:
    headers = ["problem", "status", "µs", *[f"vs {b}" for b in baselines], "% roofline", "note"]
    lines = []
    for r in rows:
        note = "; ".join(r.flags) if r.flags else ("" if r.correct else r.message)
        pct = "-" if r.pct_roofline is None else f"{r.pct_roofline:.0f}%" + ("*" if r.roofline_source and
                                                                            "lower bound" in r.roofline_source else "")
        lines.append([r.problem, r.status, "-" if r.candidate_us is None else f"{r.candidate_us:.1f}",
                      *[_x(r.speedups.get(b)) for b in baselines], pct, note[:110]])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers[:-1])]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths)) + "  " + headers[-1]]
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line[:-1], widths)) + "  " + line[-1])
    if any(r.roofline_source and "lower bound" in r.roofline_source for r in rows):
        out.append("* roofline from the lower bound of the tensors' bytes (inputs read once, outputs written once)")
    return "\n".join(out)


def format_summary(summary: dict[str, Any], device: str) -> str:
    lines = [f"{summary['problems']} problems, {summary['with_candidate']} with a candidate: "
             f"correct {summary['correct']} ({summary['correct_pct']:g}%); "
             + ", ".join(f"{k} {v}" for k, v in summary["statuses"].items())]
    for name, numbers in summary["by_baseline"].items():
        fast = ", ".join(f"{k} {numbers[k]:g}%" for k in numbers if k.startswith("fast_"))
        geo = numbers["geomean_speedup"]
        lines.append(f"vs {name}: {fast}; geomean speed-up {_x(geo)} over {numbers['timed']} timed")
    if summary["flagged"]:
        lines.append(f"flagged for review: {', '.join(summary['flagged'])}")
    if device == "cpu" and summary["by_baseline"]:
        lines.append("timings on the CPU interpreter are not representative of GPU speed")
    return "\n".join(lines)
