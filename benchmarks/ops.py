"""The built-in op library against its targets: every op at its LLM-sized and decode shapes, bf16.

    python benchmarks/ops.py [OP ...] [--candidate OP=FILE ...]   # on a CUDA machine; JSON to $OUT/ops.json

Each kernel first passes the gate's smoke and shape stages (the shape stage includes these shapes on a
GPU), then is timed with the harness (CUDA events, L2 flushed, median of many repetitions) beside
eager, the vendor op and torch.compile of the reference, each timed in a clean process. Columns:
µs, % of the measured roofline, and speedup vs each baseline (>1 means the kernel is faster).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch
    import triton

    from autokernel_ci.harness.sandbox import TimingPlan, evaluate
    from autokernel_ci.ops import OP_NAMES, starter_source
    from autokernel_ci.tasks import builtin_task

    parser = argparse.ArgumentParser()
    parser.add_argument("ops", nargs="*", default=list(OP_NAMES))
    parser.add_argument("--candidate", action="append", default=[], help="OP=FILE: bench FILE instead of the starter")
    args = parser.parse_args()
    overrides = dict(c.split("=", 1) for c in args.candidate)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"$ python benchmarks/ops.py {' '.join(sys.argv[1:])}")
    print(f"date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; device {device}; "
          f"python {platform.python_version()}; torch {torch.__version__}; triton {triton.__version__}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops:
            task = builtin_task(op)
            path = Path(overrides[op]) if op in overrides else Path(tmp) / f"{op}.py"
            if op not in overrides:
                path.write_text(starter_source(op))
            shapes = [dict(s) for s in (*task.spec.bench_shapes, *task.spec.decode_shapes)]
            plan = TimingPlan(shapes=shapes, dtype="bf16" if "bf16" in task.spec.dtypes else task.spec.dtypes[0])
            result = evaluate(task, path, device="cuda", stages=("smoke", "shapes"), timing=plan)
            print(f"{op}: {result.status.value} {result.message} ({result.duration_s:.0f} s)", flush=True)
            rows.append(result.to_dict())
            # Rows as each op finishes, so that a run cut short by its time limit still reports.
            print(HEADER)
            print("\n".join(table_rows(rows[-1])), flush=True)
            if os.environ.get("OUT"):
                Path(os.environ["OUT"], "ops.json").write_text(json.dumps(rows))
    print("\n" + HEADER)
    for r in rows:
        print("\n".join(table_rows(r)))
    return 0 if all(r["status"] == "PASS" for r in rows) else 1


HEADER = ("| op | shape | µs | % roofline | vs eager | vs vendor | vs compile | slower than best baseline? |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")


def table_rows(r: dict) -> list[str]:
    lines = []
    for t in r["timings"]:
        b = t["baselines_us"]
        ratios = {k: b[k] / t["median_us"] for k in ("eager", "vendor", "compile") if k in b}
        pct = f"{t['pct_roofline']:.1f}" if t["pct_roofline"] is not None else "-"
        worst = "yes" if ratios and min(ratios.values()) < 1.0 else "no"
        if t.get("late_launches", 0) * 20 > t["count"]:
            # More than 1 call in 20 was queued after the GPU had run out of work in front of it: those
            # may hold launch latency (harness/timing.py), and the median may be too high.
            worst += f" ({t['late_launches']} of {t['count']} calls queued late)"
        shape = "×".join(map(str, t["shape"].values()))
        lines.append(f"| {r['task']} | {shape} | {t['median_us']:.1f} | {pct} | "
                     + " | ".join(f"{ratios[k]:.2f}×" if k in ratios else "-" for k in ("eager", "vendor", "compile"))
                     + f" | {worst} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
