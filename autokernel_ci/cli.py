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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"autokernel_ci.commands.{name}").add_parser(sub)
    return parser


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
        clear_progress()
        print(f"autokernel-ci {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        clear_progress()
        print(f"autokernel-ci {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
