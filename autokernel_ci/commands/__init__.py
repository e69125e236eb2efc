"""One module per `autokernel-ci` command: `add_parser(subparsers)` and `run(args) -> exit status`.

Command modules import nothing heavy at module level, so `autokernel-ci --help` stays instant.
The registry is `COMMANDS`; adding a command is one module and one line here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autokernel_ci.errors import AutokernelError

COMMANDS: tuple[str, ...] = ("eval", "bench", "calibrate", "gate", "optimize", "demo", "profile", "verify", "publish",
                             "review_status", "plan", "merge", "init",
                             "report_gate", "doctor", "kernelbench", "report_check", "history")

EXIT_NOT_PASSED = 1


def require_file(path: str, what: str) -> None:
    if not Path(path).is_file():
        raise AutokernelError(f"{what} file not found: {path}")


def write_text(path: str | Path, text: str) -> None:
    try:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        raise AutokernelError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_json(path: str | Path) -> Any:
    """The JSON in `path`, None when there is no such file; one clear error when it cannot be read."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AutokernelError(f"cannot read {path}: {exc}") from None


def progress_printer(label: str) -> Callable[[int, int], None] | None:
    """A one-line progress display on a terminal; nothing in logs (CI output stays clean)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        sys.stderr.write(f"\r{label}: case {done}/{total} ")
        sys.stderr.flush()

    return show


def step(message: str) -> None:
    """Say on stderr, at once, what a step that takes a while is doing (in logs too: CI shows it live)."""
    sys.stderr.write(message + " …\n")
    sys.stderr.flush()


def clear_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value
