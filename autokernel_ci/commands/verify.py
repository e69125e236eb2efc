"""`autokernel-ci verify`: swap the kernels into a model, check its outputs, and time it end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from autokernel_ci.commands import EXIT_NOT_PASSED, write_text
from autokernel_ci.errors import AutokernelError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="swap the kernels into a model from .autokernel.yml, compare outputs, time it",
                       description="Swap the kernels (the config's kernel files, else the built-in starters) into "
                                   "the model, compare its outputs with the original's on the example inputs and on "
                                   "fresh random ones at the model's tolerance, and time eager, torch.compile, "
                                   "patched eager and patched under torch.compile. Exits 1 when an output differs.")
    p.add_argument("--model", metavar="NAME", help="a model named in .autokernel.yml (default: all of them)")
    p.add_argument("--json", metavar="OUT", help="write the result JSON here (a list when several models)")
    p.add_argument("--kernel", action="append", default=[], metavar="OP=FILE",
                   help="use this kernel file for an op, e.g. --kernel rmsnorm=kernels/rmsnorm.py (repeatable)")
    p.add_argument("--swap", action="append", default=[], metavar="TASK=MODULE:ATTR",
                   help="put a kernel task of the config (your own kernel too) in place of a module class or a "
                        "function of the model's code, e.g. --swap gelu=mypkg.model:GeluMLP (repeatable)")
    p.add_argument("--ops", metavar="OP,OP", help="the ops to swap (default: the model's `swap`, else all but matmul)")
    p.add_argument("--seeds", type=int, default=2, metavar="N", help="sets of fresh random inputs (default 2)")
    p.add_argument("--no-time", action="store_true", help="check outputs only")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variants")
    p.add_argument("--compile-backend", default="inductor", metavar="NAME",
                   help="torch.compile backend (default inductor)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where the model runs (default: cuda if available, else cpu with the Triton interpreter)")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the model's factory, e.g. --arg batch=4 (repeatable)")
    p.add_argument("--config", metavar="FILE", help="config file (default: ./.autokernel.yml)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.commands.profile import factory_kwargs
    from autokernel_ci.config import find_config
    from autokernel_ci.profiling import model_target
    from autokernel_ci.report.terminal import make_console
    from autokernel_ci.verify import verify_model

    config = Path(args.config) if args.config else find_config()
    targets = model_target(args.model, config)
    kernels = {}
    for pair in args.kernel:
        op, sep, path = pair.partition("=")
        if not sep or not Path(path).is_file():
            raise AutokernelError(f"--kernel expects OP=FILE with an existing file, got {pair!r}")
        kernels[op] = Path(path)
    custom = {}
    for pair in args.swap:
        task, sep, where = pair.partition("=")
        if not sep or ":" not in where:
            raise AutokernelError(f"--swap expects TASK=MODULE:ATTR, got {pair!r}")
        custom[task] = where
    ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else None
    if args.seeds < 0:
        raise AutokernelError("--seeds must not be negative")
    console = make_console()
    use_interpreter_on_cpu(args.device, console)
    results = []
    for target in targets:
        def step(message: str, name: str = target.name) -> None:
            console.print(f"[dim]{name}: {message}[/]")

        result = verify_model(target, kernels=kernels, ops=ops, config_path=config, device=args.device,
                              seeds=range(1, args.seeds + 1), time_variants=not args.no_time,
                              compile=not args.no_compile, compile_backend=args.compile_backend,
                              factory_kwargs=factory_kwargs(args.arg), custom=custom, on_step=step)
        results.append(result)
        print_verify(result, console)
    if args.json:
        import json

        data = results[0].to_dict() if len(results) == 1 else [r.to_dict() for r in results]
        write_text(args.json, json.dumps(data, indent=1, default=str) + "\n")
    return 0 if all(r.passed for r in results) else EXIT_NOT_PASSED


def use_interpreter_on_cpu(device: str | None, console) -> None:
    """On a CPU the Triton kernels can only run in Triton's interpreter: turn it on (before any kernel
    file is loaded), else every swapped op would fall back to the original and nothing would be verified."""
    import os

    from autokernel_ci.harness.sandbox import resolve_device

    if resolve_device(device) == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        os.environ["TRITON_INTERPRET"] = "1"
        console.print("[dim]no GPU: the kernels run in Triton's interpreter (TRITON_INTERPRET=1)[/]")


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


def print_verify(result, console=None) -> None:
    from collections import Counter

    from rich.markup import escape
    from rich.table import Table

    from autokernel_ci.report.terminal import make_console

    console = console or make_console()
    verdict = "[bold green]PASS[/]" if result.passed else "[bold red]FAIL[/]"
    console.print(f"[bold]{escape(result.model)}[/] on {escape(result.device)}, {result.dtype}, inputs "
                  f"{escape(', '.join(result.inputs))}  {verdict}  {escape(result.message)}")
    swapped = Counter(s["op"] for s in result.swaps)
    for op, origin in result.kernels.items():
        calls = result.kernel_calls.get(op, 0)
        state = f"{calls} kernel call(s)" if calls else "[red]kernel never called[/]"
        console.print(f"  {op}: {swapped[op]} module(s) swapped, {state}, kernel {escape(origin)}")
    checks = Table(title="outputs vs the original model", show_edge=False, box=None)
    for col in ("inputs", "variant", "rel L2 error", "max abs error", "vs fp32", "original vs fp32", "result"):
        checks.add_column(col)
    for c in result.checks:
        state = ("[green]pass[/]" if c.passed else "[red]FAIL[/]") if c.gating else "[dim]info[/]"
        checks.add_row(c.inputs, c.variant, f"{c.rel_l2:.2e}", f"{c.max_abs:.2e}",
                       "-" if c.rel_l2_vs_fp32 is None else f"{c.rel_l2_vs_fp32:.2e}",
                       "-" if c.eager_vs_fp32 is None else f"{c.eager_vs_fp32:.2e}",
                       state + (f" {escape(c.error)}" if c.error else ""))
    console.print(checks)
    if result.timings:
        title = "end-to-end time" + ("" if result.representative else " (CPU: NOT representative)")
        table = Table(title=title, show_edge=False, box=None)
        for col in ("variant", "median ms", "IQR ms", "n", "vs eager", "vs compile"):
            table.add_column(col, justify="left" if col == "variant" else "right")
        for name, t in result.timings.items():
            if t.error:
                table.add_row(name, "-", "-", "0", "-", f"[red]{escape(t.error)}[/]")
                continue
            vs_eager, vs_compile = result.speedup(name, "eager"), result.speedup(name, "compile")
            table.add_row(name, _ms(t.median_us), _ms(t.iqr_us), str(t.count),
                          "-" if vs_eager is None else f"{vs_eager:.2f}×",
                          "-" if vs_compile is None else f"{vs_compile:.2f}×")
        console.print(table)
    if result.fallbacks:
        console.print("fallbacks to the original op: " + "; ".join(
            f"{op}: " + ", ".join(f"{n} {reason}" for reason, n in reasons.items())
            for op, reasons in result.fallbacks.items()))
    for note in result.notes:
        console.print(f"[yellow]{escape(note)}[/]")
