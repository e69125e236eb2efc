"""The `autokernel-ci` command: parse, call, print. Every user error is one line and a non-zero exit."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from autokernel_ci import __version__
from autokernel_ci.commands import COMMANDS, clear_progress
from autokernel_ci.errors import AutokernelError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autokernel-ci",
        description="Make PyTorch kernels faster without ever shipping a wrong one.",
    )
    parser.add_argument("--version", action="version", version=f"autokernel-ci {__version__}")
    parser.epilog = ("Every command that runs repository code runs it inside bubblewrap; --sandbox=process "
                     "(anywhere on the line) runs it as a plain child process instead, and says so in every report.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"autokernel_ci.commands.{name}").add_parser(sub)
    return parser


def _take_sandbox_option(argv: list[str]) -> tuple[list[str], str | None]:
    """`--sandbox=bwrap|process` is accepted anywhere on the line, for every command that runs code."""
    out, mode, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--sandbox="):
            mode = arg.split("=", 1)[1]
        elif arg == "--sandbox" and i + 1 < len(argv):
            mode = argv[i + 1]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out, mode


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    argv, sandbox = _take_sandbox_option(list(sys.argv[1:] if argv is None else argv))
    if sandbox is not None:
        if sandbox not in ("bwrap", "process"):
            print(f"autokernel-ci: error: --sandbox must be 'bwrap' or 'process', got {sandbox!r}", file=sys.stderr)
            return 2
        os.environ["AUTOKERNEL_SANDBOX"] = sandbox
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        inside = _run_inside_sandbox(args, argv)
        if inside is not None:
            return inside
        return args.handler(args)
    except AutokernelError as exc:
        clear_progress()
        print(f"autokernel-ci {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        clear_progress()
        print(f"autokernel-ci {args.command}: interrupted", file=sys.stderr)
        return 130


def _run_inside_sandbox(args: argparse.Namespace, argv: list[str]) -> int | None:
    """`profile` and `verify` build and run the user's models: run the whole command in the sandbox.
    None: run it here (another command, already inside, or `--sandbox=process`)."""
    from autokernel_ci.harness import bwrap

    if args.command not in bwrap.MODEL_COMMANDS or os.environ.get(bwrap.INSIDE_ENV) == "1":
        return None
    if bwrap.sandbox_mode() != "bwrap":
        return None
    return bwrap.run_command_inside(argv, [getattr(args, "json", None)])


if __name__ == "__main__":
    sys.exit(main())
