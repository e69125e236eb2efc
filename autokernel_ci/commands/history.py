"""`autokernel-ci history DIR`: per-task trend charts (PNG) and a table from a folder of gate JSONs."""

from __future__ import annotations

import argparse

from autokernel_ci.commands import at_least_one


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="render the gate's history: a trend chart per task and a table",
                       description="Read every gate JSON (`autokernel-ci gate --json`) in DIR and write a PNG per "
                                   "task (head median per run, worst error against float64) and history.md, a "
                                   "table of first and latest figures. Runs on different hardware (GPU, driver, "
                                   "clocks, power limit) are never put on one line; the table says which and why.")
    p.add_argument("folder", metavar="DIR", help="the folder of gate JSONs")
    p.add_argument("--out", metavar="DIR", default=None, help="where the charts and history.md go (default: DIR)")
    p.add_argument("--add", metavar="FILE", action="append", default=[],
                   help="first copy this gate JSON into DIR (checked to be a gate report; repeatable), e.g. on a "
                        "data branch after each gate run")
    p.add_argument("--keep", type=at_least_one, default=None, metavar="N",
                   help="then keep only the newest N gate JSONs in DIR (the size cap of a data branch)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.report.history import add_reports, render_history

    if args.add or args.keep:
        added, removed = add_reports(args.folder, args.add, args.keep)
        print(f"history: added {len(added)}, removed {len(removed)} old run{'s' * (len(removed) != 1)}")
    table, charts, apart = render_history(args.folder, args.out or args.folder)
    print(f"wrote {table} and {len(charts)} chart{'s' * (len(charts) != 1)}")
    for why in apart:
        print(f"not compared: {why.replace('`', '')}")
    return 0
