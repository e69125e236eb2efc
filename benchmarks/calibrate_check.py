"""Check the timing harness and the device ceilings on this machine, in well under a minute.

Prints the command, date, versions and device; measures the ceilings (`calibrate`) beside the
datasheet; times torch.add on a 256 MiB tensor (and an 8 MiB one, which fits in L2) with the L2
flush and CUDA graphs on and off, as GB/s and percent of the measured copy bandwidth; and runs the
gate's A/B loop on add vs itself (must pass) and vs an add over 3 % and 5 % more bytes (should be
regressions). Without a GPU it runs the CPU path only, marked not representative.

    python benchmarks/calibrate_check.py [--json OUT.json] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, not installed

from autokernel_ci import stats  # noqa: E402
from autokernel_ci.harness import device as dev  # noqa: E402
from autokernel_ci.harness.timing import ABTimer, interleaved_ab, time_fn  # noqa: E402

MiB = 1024**2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write every number (and sample) to this JSON file")
    parser.add_argument("--cache-dir", help="cache root for the measured ceilings (default: $AUTOKERNEL_CACHE_DIR)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    info = dev.device_info()
    report["device"] = info.to_dict()
    print(f"command: {report['command']}")
    print(f"date:    {report['date']}")
    print(f"device:  {info.label}; {_gib(info.memory_bytes)} memory; L2 {_mib(info.l2_bytes)}")
    print(
        f"versions: python {info.python_version}, torch {info.torch_version}, triton {info.triton_version}, "
        f"cuda {info.cuda_version}, driver {info.driver_version}"
    )
    print(f"platform: {info.platform}\n")

    cuda = info.kind == "cuda"
    if cuda:
        report["ceilings"] = _calibration(args.cache_dir)
        ceilings = dev.get_ceilings(info.name, args.cache_dir)
    else:
        print("no CUDA device: calibration skipped; timings below use perf_counter and are NOT representative\n")
        ceilings = None
    report["add"] = _add_timings(cuda, ceilings)
    report["gate"] = _gate_checks(cuda)
    report["wall_s"] = round(time.perf_counter() - started, 2)
    print(f"\ntotal wall time {report['wall_s']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


def _calibration(cache_dir: str | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    measured = dev.calibrate(cache_dir)
    elapsed = time.perf_counter() - t0
    sheet = dev.datasheet_ceilings(measured.device)
    print(f"calibration ({elapsed:.1f} s, cached at {dev.ceilings_path(measured.device, cache_dir)}):")
    print(f"  {'ceiling':<30}{'measured':>14}{'datasheet':>14}{'ratio':>8}   median / IQR / n")
    timings = measured.details["timings"]
    rows = [("copy bandwidth TB/s", measured.bandwidth_bytes_per_s, sheet and sheet.bandwidth_bytes_per_s, "copy")]
    for kind in dev.MATMUL_KINDS:
        label = f"matmul {kind} TFLOP/s" + (" (strict)" if kind == "fp32" else "")
        rows.append((label, measured.flops_per_s[kind], sheet and sheet.flops_per_s[kind], f"matmul_{kind}"))
    for label, value, reference, key in rows:
        t = timings[key]
        ratio = f"{value / reference:.2f}" if reference else "-"
        ref = f"{reference / 1e12:.1f}" if reference else "-"
        spread = f"{t['median_us']:.1f} µs / {t['iqr_us']:.1f} / {t['count']}"
        print(f"  {label:<30}{value / 1e12:>14.2f}{ref:>14}{ratio:>8}   {spread}")
    print()
    return {"measured": measured.to_dict(), "datasheet": sheet.to_dict() if sheet else None, "seconds": elapsed}


def _add_timings(cuda: bool, ceilings: dev.Ceilings | None) -> list[dict[str, Any]]:
    sizes = (256 * MiB, 8 * MiB) if cuda else (8 * MiB,)
    modes = [(flush, graph) for graph in (False, True) for flush in (True, False)] if cuda else [(False, False)]
    where = "cuda" if cuda else "cpu"
    print("torch.add(x, y, out=z), fp32; bytes moved = 3 × tensor size")
    header = f"  {'tensor':>8} {'L2 flush':>8} {'graph':>6} {'median µs':>10} {'IQR µs':>8} {'n':>5}"
    print(header + f" {'GB/s':>8} {'% roof':>7} {'sync µs':>8} {'events µs':>9} {'sync/ev':>7}")
    rows = []
    for nbytes in sizes:
        x = torch.randn(nbytes // 4, device=where)
        y = torch.randn_like(x)
        z = torch.empty_like(x)
        moved = 3 * nbytes
        for flush, graph in modes:
            t = time_fn(lambda x=x, y=y, z=z: torch.add(x, y, out=z), flush_l2=flush, cuda_graph=graph, device=where)
            seconds = t.median_us * 1e-6
            pct, source = dev.pct_of_roofline(moved, None, "fp32", seconds, ceilings, "memory")
            rows.append(
                {
                    "bytes": nbytes,
                    "flush_l2": flush,
                    "cuda_graph": graph,
                    "pct_roofline": pct,
                    "roofline_source": source,
                    "gb_per_s": moved / seconds / 1e9,
                    **t.to_dict(),
                }
            )
            print(
                f"  {_mib(nbytes):>8} {_yes(flush):>8} {_yes(graph):>6} {t.median_us:>10.2f} {t.iqr_us:>8.2f} "
                f"{t.count:>5} {moved / seconds / 1e9:>8.1f} {_num(pct, '.1f'):>7} {_num(t.sync_us, '.2f'):>8} "
                f"{_num(t.batch_events_us, '.2f'):>9} {_num(t.hidden_work_ratio, '.2f'):>7}"
            )
        del x, y, z
    if not cuda:
        print("  (perf_counter on the CPU: not representative)")
    return rows


def _gate_checks(cuda: bool) -> list[dict[str, Any]]:
    """The gate's loop on known answers: add vs itself, and vs adds over 3 % and 5 % more bytes."""
    where = "cuda" if cuda else "cpu"
    n = (256 * MiB if cuda else 8 * MiB) // 4
    x = torch.randn(n, device=where)
    aa_runs = [interleaved_ab(lambda: x + 1.0, lambda: x + 1.0, 2, rep_ms=25, device=where) for _ in range(3)]
    noise = stats.estimate_noise([(a.samples_us, b.samples_us) for a, b in aa_runs])
    ratios = ", ".join(f"{stats.median_ratio(a.samples_us, b.samples_us):.4f}" for a, b in aa_runs)
    print(f"\nA/A noise (3 runs of 2 interleaved rounds, ratios {ratios}): {noise:.2%}")
    print(f"gate loop (ABTimer + decide_in_rounds, threshold 3 %, that noise): base = t + 1.0 over {_mib(n * 4)}")
    print(f"  {'head':<22}{'expected':>10}{'ratio':>9}{'99% interval':>20}{'rounds':>8}  verdict")
    out = [{"aa_noise": noise, "aa_ratios": ratios}]
    for label, scale in (("same add (A/A)", 1.0), ("add, +3 % bytes", 1.03), ("add, +5 % bytes", 1.05)):
        a = [torch.randn(n, device=where) for _ in range(3)]
        b = [torch.randn(int(n * scale), device=where) for _ in range(3)]
        timer = ABTimer(
            lambda t: t + 1.0,
            lambda t: t + 1.0,
            input_sets_a=[(t,) for t in a],
            input_sets_b=[(t,) for t in b],
            rep_ms=25,
            device=where,
        )
        decision = stats.decide_in_rounds(timer.measure_round, threshold=0.03, noise=noise, max_rounds=16)
        interval = f"{_num(decision.ci_lo, '.4f')} .. {_num(decision.ci_hi, '.4f')}"
        ratio = _num(decision.ratio, ".4f")
        print(f"  {label:<22}{scale:>10.2f}{ratio:>9}{interval:>20}{timer.rounds:>8}  {decision.verdict}")
        out.append({"head": label, "expected_ratio": scale, "rounds": timer.rounds, **decision.to_dict()})
        del a, b, timer
    return out


def _yes(flag: bool) -> str:
    return "on" if flag else "off"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _mib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / MiB:.0f} MiB"


def _gib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1024**3:.1f} GiB"


if __name__ == "__main__":
    sys.exit(main())
