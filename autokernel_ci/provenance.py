"""Which code produced a number: the git commit when there is a trustworthy one, and always a digest
of the package's own source files.

A benchmark's JSON that names only `git rev-parse HEAD` can name the wrong code: a copy of a working
tree (a remote GPU machine, a container) may carry a `.git` older than the files beside it. The
digest is computed from the files that ran, so `python -c "from autokernel_ci.provenance import
source_digest; print(source_digest())"` at a checkout says whether that checkout is the code.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent


def source_digest(root: Path = PACKAGE) -> str:
    """sha256 (first 12 hex digits) over the package's .py files: relative paths and bytes, in order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def git_commit(cwd: Path = PACKAGE) -> str:
    """The short HEAD of the checkout holding the package, "+dirty" when its tracked files differ from it,
    or "unknown" (no git, not a checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def describe() -> dict[str, str]:
    """{"commit": …, "source_digest": …}: what a benchmark's JSON records."""
    return {"commit": git_commit(), "source_digest": source_digest()}


def run_record(device: str) -> dict[str, Any]:
    """The head of a benchmark's JSON: the command, the date, the device (`cuda` or `cpu`), the versions
    and the code, as every script in benchmarks/ records them."""
    import platform
    import shlex
    import sys
    from datetime import datetime, timezone

    import torch
    import triton

    return {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter)",
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
                     "cuda": str(torch.version.cuda)},
        **describe(),
    }


def print_record(record: dict[str, Any], device_note: str = "") -> None:
    """The record's head as the first lines of a benchmark's output (RESULTS.md quotes them)."""
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    print(f"command:  {record['command']}")
    print(f"date:     {record['date']}")
    print(f"device:   {record['device']}{device_note}")
    print(f"versions: {versions}; autokernel-ci {record['commit']} (source {record['source_digest']})")
    if record["device"].startswith("cpu"):
        print("NOTE: no GPU: the interpreter's timings are not representative; only the mechanics are shown")


def write_record(record: dict[str, Any], path: Path | None) -> None:
    """Write the JSON (when there is somewhere to write it) and say where."""
    import json

    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {path}")
