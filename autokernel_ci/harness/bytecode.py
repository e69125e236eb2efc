"""Bytecode that sandboxed workers read and cannot write.

Inside bubblewrap a worker sees the interpreter's packages read-only and writes no bytecode. On a
runner image whose packages were installed without bytecode (`pip install --no-compile`, common in
CUDA images), every sandboxed worker would then compile torch, Triton and sympy from source at every
start: seconds per evaluation, paid again and again. So the trusted parent fills one bytecode folder
by evaluating a built-in kernel outside the sandbox (a kernel of this package: no repository code
runs there), and sandboxed workers read that folder through `PYTHONPYCACHEPREFIX`, bound read-only.

Nothing a sandboxed worker runs can write there. An unsandboxed run (`--sandbox=process`) can write
anywhere its user can, this folder and site-packages included: that mode is marked unsandboxed
everywhere for that reason.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

ENV = "AUTOKERNEL_SANDBOX_BYTECODE"  # "1": always use the folder; "0": never; unset: when packages lack bytecode
READY = ".ready"
WARM_TIMEOUT_S = 600.0
_lock = threading.Lock()
_failed: set[Path] = set()


@functools.lru_cache(maxsize=1)
def installed_bytecode_missing() -> bool:
    """Whether torch, as installed, has no bytecode beside its sources."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return False
    origin = Path(spec.origin)
    return not (origin.parent / "__pycache__" / f"{origin.stem}.{sys.implementation.cache_tag}.pyc").is_file()


def wanted(env: Mapping[str, str] | None = None) -> bool:
    setting = (os.environ if env is None else env).get(ENV, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    return installed_bytecode_missing()


@functools.lru_cache(maxsize=4)
def _key(device: str) -> str:
    """The interpreter, the packages a worker imports and this package's sources: a change to any of
    them is a new folder (Python would ignore stale bytecode anyway, and could not replace it). Worked
    out once per process: every evaluation asks, and the sources do not change under a running one."""
    import torch

    from autokernel_ci.harness.bwrap import package_root

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "-"
    package = package_root() / "autokernel_ci"
    newest = max((p.stat().st_mtime_ns for p in package.rglob("*.py")), default=0)
    ident = "|".join((sys.executable, sys.version, torch.__version__, triton_version, str(package), str(newest),
                      device))
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def folder(device: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The bytecode folder for sandboxed workers on `device`, filled first when it is not yet; None when
    it is not wanted here or could not be filled (workers then compile from source, as before)."""
    if not wanted(env):
        return None
    from autokernel_ci.harness.device import cache_root

    root = (cache_root() / "bytecode" / _key(device)).absolute()
    if (root / READY).is_file():
        return root
    with _lock:
        if root in _failed:
            return None
        root.parent.mkdir(parents=True, exist_ok=True)
        with open(root.parent / f"{root.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one filler across processes (a gate with a worker per GPU)
            if not (root / READY).is_file() and not _fill(root, device):
                _failed.add(root)
                return None
    return root


def _fill(root: Path, device: str) -> bool:
    """Evaluate the rmsnorm library kernel unsandboxed with `root` as its bytecode folder: the worker's
    own imports, the candidate's, and Triton's compile path on this device land there."""
    from autokernel_ci.harness.sandbox import evaluate
    from autokernel_ci.ops import starter_source
    from autokernel_ci.results import Status
    from autokernel_ci.tasks import builtin_task

    print(f"autokernel-ci: preparing bytecode for sandboxed workers in {root} (once per installation)",
          file=sys.stderr, flush=True)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autokernel-bytecode-") as tmp:
        path = Path(tmp) / "rmsnorm.py"
        path.write_text(starter_source("rmsnorm"))
        result = evaluate(builtin_task("rmsnorm"), path, device=device, stages=("smoke",), seed=1,
                          timeout=WARM_TIMEOUT_S, sandbox="process",
                          env_overrides={"PYTHONPYCACHEPREFIX": str(root)})
    if result.status is not Status.PASS:
        print(f"autokernel-ci: could not prepare the bytecode ({result.status.value}: {result.message}); "
              "sandboxed workers compile from source", file=sys.stderr, flush=True)
        return False
    (root / READY).write_text("")
    return True
