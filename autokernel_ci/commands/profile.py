"""`autokernel-ci profile`: where a model's forward spends GPU time, ranked by what a kernel could save."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any

from autokernel_ci.commands import step, write_text
from autokernel_ci.errors import AutokernelError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="profile a model from .autokernel.yml: time by op family and module, ranked",
                       description="Run the model's forward under torch.profiler (warm-up excluded), group the "
                                   "time by op family and by module path, and rank the ops with a built-in kernel by "
                                   "the end-to-end time a kernel could save (share × (1 − 1/expected speedup)). "
                                   "Without a GPU it profiles CPU time and says so.")
    p.add_argument("--model", metavar="NAME", help="a model named in .autokernel.yml (default: all of them)")
    p.add_argument("--json", metavar="OUT", help="write the plan JSON here (a list when several models)")
    p.add_argument("--trace", metavar="OUT", help="write a Chrome trace (chrome://tracing, Perfetto) here")
    p.add_argument("--steps", type=int, default=3, metavar="N", help="forwards recorded (default 3)")
    p.add_argument("--warmup", type=int, default=2, metavar="N", help="forwards run first, not recorded (default 2)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where the model runs (default: cuda if available, else cpu)")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the model's factory, e.g. --arg batch=4 (repeatable)")
    p.add_argument("--extract", action="store_true",
                   help="create the kernel files and .autokernel.yml entries for the ranked ops (not committed)")
    p.add_argument("--min-share", type=float, default=0.01, metavar="F",
                   help="with --extract: only ops taking at least this share of the time (default 0.01)")
    p.add_argument("--top", type=int, default=15, metavar="N", help="rows of the tables (default 15)")
    p.add_argument("--kernel", action="append", default=[], metavar="OP=FILE",
                   help="profile with this kernel file swapped in for a built-in op (repeatable)")
    p.add_argument("--swap", action="append", default=[], metavar="TASK=MODULE:ATTR",
                   help="profile with a kernel task of the config (your own kernel too) in place of a module class "
                        "or function of the model's code, e.g. --swap gelu=mypkg.model:GeluMLP (repeatable)")
    p.add_argument("--config", metavar="FILE", help="config file (default: ./.autokernel.yml)")
    p.set_defaults(handler=run)


def factory_kwargs(pairs: list[str]) -> dict[str, Any]:
    """`["batch=4", "size=tiny"]` → `{"batch": 4, "size": "tiny"}`: Python literals, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise AutokernelError(f"--arg expects KEY=VALUE with KEY a Python name, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def swapper(kernel_pairs: list[str], swap_pairs: list[str], config, device, console):
    """The `prepare` hook of `profile_model` for --kernel and --swap, or None when neither is given."""
    if not kernel_pairs and not swap_pairs:
        return None
    from autokernel_ci.commands.verify import use_interpreter_on_cpu

    kernels: dict[str, Path] = {}
    for pair in kernel_pairs:
        op, sep, path = pair.partition("=")
        if not sep or not Path(path).is_file():
            raise AutokernelError(f"--kernel expects OP=FILE with an existing file, got {pair!r}")
        kernels[op] = Path(path)
    custom: dict[str, str] = {}
    for pair in swap_pairs:
        task, sep, where = pair.partition("=")
        if not sep or ":" not in where:
            raise AutokernelError(f"--swap expects TASK=MODULE:ATTR, got {pair!r}")
        custom[task] = where
    use_interpreter_on_cpu(device, console)

    def prepare(model):
        from autokernel_ci import runtime
        from autokernel_ci.verify import swap_custom

        report = runtime.apply(model, kernels=kernels, ops=list(kernels)) if kernels else None
        extra = [swap_custom(model, task, where, config, None) for task, where in custom.items()]
        for x in extra:
            x.active = True  # no original to compare with here: the swapped function always runs the kernel

        def done() -> list[str]:
            lines = []
            if report is not None:
                calls, fallbacks = report.kernel_calls(), report.fallbacks()
                for op, n in sorted(report.ops().items()):
                    lines.append(f"{op}: {n} module(s), {calls.get(op, 0)} kernel call(s)"
                                 + (f", fallbacks {fallbacks[op]}" if op in fallbacks else ""))
            for x in extra:
                if x.restore is not None:
                    x.restore()
                lines.append(f"{x.task} in place of {x.target}: {x.replaced} {x.kind}(s), {x.kernel_calls} kernel "
                             "call(s)")
            return lines

        return done

    return prepare


def run(args: argparse.Namespace) -> int:
    from autokernel_ci.config import find_config
    from autokernel_ci.orchestrate import extract_tasks, rank
    from autokernel_ci.profiling import model_target, profile_model
    from autokernel_ci.report.terminal import make_console

    if args.steps < 1 or args.warmup < 0:
        raise AutokernelError("--steps must be at least 1 and --warmup at least 0")
    config = Path(args.config) if args.config else find_config()
    targets = model_target(args.model, config)
    kwargs = factory_kwargs(args.arg)
    console = make_console()
    plans = []
    for target in targets:
        trace = _trace_path(args.trace, target.name, len(targets))
        if not console.is_terminal:
            step(f"profiling {target.name}: {args.warmup} warm-up and {args.steps} profiled forward(s)")
        with console.status(f"profiling {target.name}") if console.is_terminal else _nothing():
            plan = profile_model(target, device=args.device, steps=args.steps, warmup=args.warmup,
                                 factory_kwargs=kwargs, trace=trace,
                                 prepare=swapper(args.kernel, args.swap, config, args.device, console))
        plans.append(plan)
        print_plan(plan, console, top=args.top)
        if args.extract:
            ranked = rank(plan, min_share=args.min_share, ops=target.swap or None)
            for task in extract_tasks(ranked, config, model=target.name):
                what = "created" if task.created_file else "kept"
                entry = "added to" if task.added_entry else "already in"
                console.print(f"{task.op}: {what} {task.path}; entry {task.name!r} {entry} {config}")
            if ranked:
                console.print("commit these files before `autokernel-ci optimize` (it needs a clean work tree)")
    if args.json:
        import json

        data = plans[0].to_dict() if len(plans) == 1 else [p.to_dict() for p in plans]
        write_text(args.json, json.dumps(data, indent=1, default=str) + "\n")
    return 0


def _trace_path(trace: str | None, model: str, count: int) -> Path | None:
    if trace is None:
        return None
    path = Path(trace)
    return path if count == 1 else path.with_name(f"{path.stem}-{model}{path.suffix or '.json'}")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} µs"


def print_plan(plan, console=None, top: int = 15) -> None:
    """The plan as tables: op families, then modules, then the ranked tasks."""
    from rich.markup import escape
    from rich.table import Table

    from autokernel_ci.orchestrate import rank
    from autokernel_ci.report.terminal import make_console

    console = console or make_console()
    kind = "GPU" if plan.time_kind == "gpu" else "CPU"
    console.print(f"[bold]{escape(plan.model)}[/] on {escape(plan.device)}, {plan.dtype}, inputs "
                  f"{escape(', '.join(plan.inputs))}: {_us(plan.total_us)} of {kind} time per forward "
                  f"({plan.steps} recorded after {plan.warmup} warm-up)")
    for line in getattr(plan, "swapped", []):
        console.print(f"  swapped in: {escape(line)}")
    if plan.time_kind != "gpu":
        console.print(f"[yellow]{escape(plan.note)}[/]")
    table = Table(title="time by op family", show_edge=False, box=None)
    for col in ("op family", "built-in", "share", f"{kind} time", "calls", "bound", "% roofline", "expected",
                "could save", "where"):
        table.add_column(col, justify="right" if col in ("share", f"{kind} time", "calls", "% roofline",
                                                         "expected", "could save") else "left")
    for e in plan.entries[:top]:
        pct = "-" if e.pct_roofline is None else f"{e.pct_roofline:.1f}%"
        expected = f"{e.expected_speedup:.2f}×" + ("" if e.expected_speedup_source == "roofline" else " (prior)")
        table.add_row(e.family, e.builtin or "[dim]no built-in yet[/]", f"{e.share:.1%}", _us(e.self_time_us),
                      f"{e.calls:g}", e.bound, pct, expected, f"{e.potential_saving:.1%}",
                      escape(", ".join(e.modules[:2])))
    console.print(table)
    modules = Table(title="time by module (layer indices collapsed)", show_edge=False, box=None)
    for col in ("module", "share", f"{kind} time", "families"):
        modules.add_column(col, justify="right" if col in ("share", f"{kind} time") else "left")
    for m in plan.modules[:top]:
        fams = ", ".join(f"{f} {t / m.self_time_us:.0%}" for f, t in list(m.families.items())[:3]) \
            if m.self_time_us else ""
        modules.add_row(escape(m.path), f"{m.share:.1%}", _us(m.self_time_us), fams)
    console.print(modules)
    ranked = rank(plan)
    if ranked:
        console.print("ranked by end-to-end saving: " + ", ".join(
            f"[bold]{t.op}[/] {t.potential_saving:.1%}" for t in ranked))
    else:
        console.print("no op with a built-in kernel shows up in this profile")
