"""Gate and time every built-in starter kernel at its benchmark shapes, through the CLI a user runs.

    python benchmarks/eval_builtins.py            # on a CUDA machine; writes $OUT/eval_<op>.json if OUT is set

For each op: `autokernel-ci eval --task OP --candidate <starter> --device cuda --time --json …`, its full
output, then one table: status, checks, shape, µs, % of measured roofline, eager / vendor / compile µs.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import argparse

    from autokernel_ci.ops import OP_NAMES, starter_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ops", nargs="*", metavar="OP", help=f"built-in ops (default: all of {', '.join(OP_NAMES)})")
    ops = parser.parse_args().ops or list(OP_NAMES)
    unknown = [op for op in ops if op not in OP_NAMES]
    if unknown:
        parser.error(f"unknown op {unknown[0]!r}; built-in ops: {', '.join(OP_NAMES)}")

    import torch
    import triton

    out_dir = Path(os.environ.get("OUT") or tempfile.mkdtemp()) / "evals"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"$ python benchmarks/eval_builtins.py {' '.join(sys.argv[1:])}")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; device {device}; "
          f"python {platform.python_version()}; torch {torch.__version__}; triton {triton.__version__}")
    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        for op in ops:
            kernel = Path(tmp) / f"{op}.py"
            kernel.write_text(starter_source(op))
            out = out_dir / f"eval_{op}.json"
            cmd = [sys.executable, "-m", "autokernel_ci", "eval", "--task", op, "--candidate", str(kernel),
                   "--device", "cuda", "--time", "--json", str(out)]
            print(f"\n$ autokernel-ci eval --task {op} --candidate kernels/{op}.py --device cuda --time "
                  f"--json {out.name}", flush=True)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            print(proc.stdout[-6000:], proc.stderr[-2000:], sep="", flush=True)
            if out.is_file():
                rows.append(json.loads(out.read_text()))
    print("\nop | status | checks | shape | dtype | µs | % roofline | eager µs | vendor µs | compile µs")
    for r in rows:
        checks = sum(len(s["cases"]) for s in r["stages"])
        for t in r["timings"] or [None]:
            if t is None:
                print(f"{r['task']} | {r['status']} | {checks} | - | - | - | - | - | - | -")
                continue
            b = t["baselines_us"]
            pct = f"{t['pct_roofline']:.1f}" if t["pct_roofline"] is not None else "-"
            shape = "x".join(map(str, t["shape"].values()))
            print(f"{r['task']} | {r['status']} | {checks} | {shape} | {t['dtype']} | "
                  f"{t['median_us']:.1f} | {pct} | " + " | ".join(
                      f"{b[k]:.1f}" if k in b else "-" for k in ("eager", "vendor", "compile")))
    return 0 if all(r["status"] == "PASS" for r in rows) and len(rows) == len(ops) else 1


if __name__ == "__main__":
    sys.exit(main())
