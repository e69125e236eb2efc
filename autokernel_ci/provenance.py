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
