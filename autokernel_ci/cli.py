"""The `autokernel-ci` command: parse, call, print. Every user error is one line and a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from autokernel_ci import __version__
from autokernel_ci.errors import AutokernelError

EXIT_NOT_PASSED = 1


def _cmd_eval(args: argparse.Namespace) -> int:
    from autokernel_ci.harness.sandbox import evaluate
    from autokernel_ci.report.terminal import print_eval_result
    from autokernel_ci.tasks import resolve_task

    task = resolve_task(args.task, Path(args.config) if args.config else None)
    _require_file(args.candidate, "candidate")
    progress = _progress_printer(f"evaluating {args.candidate} against {task.name}")
    result = evaluate(task, args.candidate, device=args.device, timeout=args.timeout, seed=args.seed,
                      on_progress=progress)
    _clear_progress()
    print_eval_result(result)
    if args.json:
        _write_text(args.json, result.to_json() + "\n")
    return 0 if result.passed else EXIT_NOT_PASSED


def _require_file(path: str, what: str) -> None:
    if not Path(path).is_file():
        raise AutokernelError(f"{what} file not found: {path}")


def _write_text(path: str, text: str) -> None:
    try:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        raise AutokernelError(f"cannot write {path}: {exc.strerror or exc}") from None


def _progress_printer(label: str) -> Callable[[int, int], None] | None:
    """A one-line progress display on a terminal; nothing in logs (CI output stays clean)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        sys.stderr.write(f"\r{label}: case {done}/{total} ")
        sys.stderr.flush()

    return show


def _clear_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autokernel-ci",
        description="Make PyTorch kernels faster without ever shipping a wrong one.",
    )
    parser.add_argument("--version", action="version", version=f"autokernel-ci {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("eval", help="run the correctness gate (and anti-cheat checks) on one candidate kernel file",
                       description="Gate one candidate on correctness in a sandboxed child process. "
                                   "Exits 0 only on PASS.")
    p.add_argument("--task", required=True,
                   help="a built-in op name, a kernel named in .autokernel.yml, or a KernelBench-style .py file")
    p.add_argument("--candidate", required=True, help="the kernel file to evaluate (defines kernel_fn or ModelNew)")
    p.add_argument("--json", metavar="OUT", help="write the EvalResult JSON here")
    p.add_argument("--timeout", type=_positive_float, default=600.0, metavar="SECONDS",
                   help="time limit for the candidate process (default 600)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where to run (default: cuda if available, else cpu with the Triton interpreter)")
    p.add_argument("--seed", type=int, default=None, help="seed for the case seeds (default: fresh each run)")
    p.add_argument("--config", metavar="FILE", help="config file (default: ./.autokernel.yml if present)")
    p.set_defaults(handler=_cmd_eval)
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except AutokernelError as exc:
        _clear_progress()
        print(f"autokernel-ci {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"autokernel-ci {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
