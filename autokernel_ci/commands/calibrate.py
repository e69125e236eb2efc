"""`autokernel-ci calibrate`: measure this GPU's copy bandwidth and matmul rates, and cache them."""

from __future__ import annotations

import argparse
import json

from autokernel_ci.commands import write_text


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="measure this GPU's copy bandwidth and matmul peaks (cached per device)",
                       description="Measure copy bandwidth (bytes read + written) and dense bf16/fp16/tf32/fp32 "
                                   "matmul rates on random data; every later result reports % of these.")
    p.add_argument("--json", metavar="OUT", help="write the ceilings as JSON here")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.harness.device import calibrate, ceilings_path

    ceilings = calibrate()
    print(f"{ceilings.device}: copy {ceilings.bandwidth_bytes_per_s / 1e12:.2f} TB/s (read + write)")
    for kind, rate in ceilings.flops_per_s.items():
        print(f"  matmul {kind:>5}: {rate / 1e12:7.1f} TFLOP/s")
    print(f"cached in {ceilings_path(ceilings.device)}")
    if args.json:
        write_text(args.json, json.dumps(ceilings.to_dict(), indent=2) + "\n")
    return 0
