"""Worker processes started ahead of time: the next evaluation finds Python, torch and Triton imported.

A worker spends seconds before it runs a single case: the interpreter starts, torch and Triton
import (on an H100 runner, before bytecode was cached: 1.2 s of start and exit and 4.8–6.1 s of
imports a screen evaluation; benchmarks/RESULTS.md, run 5; not yet measured with the cache).
The loop evaluates one candidate after another, so `take(env, mounts, mode)` hands the request to a
sandboxed worker that was started with the same environment and the same view of the files during
the previous evaluation and has done that part already, and starts the next one. Each process
still serves exactly one request: it imported only our code and torch's before the request came,
never a candidate, so the isolation is what a fresh process gives. Without a standby process for
this environment (the first evaluation, or another GPU's slot) the caller starts one the usual way.

A standby process waits on its stdin for the request, with a scratch folder of its own. When the
parent goes away, however it ends, that pipe closes and the process exits. `AUTOKERNEL_STANDBY=0`
turns the whole thing off.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections import OrderedDict

from autokernel_ci.harness import bwrap
from autokernel_ci.harness.session import Process, kill, spawn

ENV_SWITCH = "AUTOKERNEL_STANDBY"
# One per environment in use: a pool has one per GPU, so an 8-GPU runner keeps 8 (each has torch imported,
# no CUDA context: well under 1 GB). Beyond this the least recently used go first.
MAX_PROCESSES = 16

_lock = threading.Lock()
_waiting: OrderedDict[str, Process] = OrderedDict()


def enabled(env: dict[str, str] | None = None) -> bool:
    return (os.environ if env is None else env).get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def take(env: dict[str, str], mounts: bwrap.Mounts | None, mode: str, work_dir=None) -> Process | None:
    """The standby worker started with exactly `env`, `mounts` and sandbox `mode`, if one is alive, and
    the next one started for them. None when there was none: the caller starts a worker itself."""
    key = _key(env, mounts, mode)
    with _lock:
        ready = _waiting.pop(key, None)
        _start(key, env, mounts, mode, work_dir)
    if ready is None:
        return None
    if ready.proc.poll() is not None or ready.reader.messages or ready.reader.closed.is_set():
        _discard(ready)  # it died waiting (killed, out of memory), or spoke before it was asked: not trusted
        return None
    return ready


def shutdown(grace_s: float = 2.0) -> None:
    """End every standby process (at exit, and in tests): EOF to all at once, `grace_s` in all for them to
    leave on their own (one still importing torch reads its EOF after), then a kill."""
    import time

    with _lock:
        waiting = list(_waiting.values())
        _waiting.clear()
    for process in waiting:
        _close_stdin(process.proc)
    deadline = time.monotonic() + grace_s
    for process in waiting:
        try:
            process.proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            pass
        kill(process.proc)
        shutil.rmtree(process.scratch, ignore_errors=True)


def waiting_count() -> int:
    with _lock:
        return sum(1 for p in _waiting.values() if p.proc.poll() is None)


def _start(key: str, env: dict[str, str], mounts: bwrap.Mounts | None, mode: str, work_dir) -> None:
    """Start the standby process for `key` (the lock is held)."""
    _waiting[key] = spawn(env, mounts, mode, work_dir=work_dir)
    while len(_waiting) > MAX_PROCESSES:
        _, oldest = _waiting.popitem(last=False)
        threading.Thread(target=_discard, args=(oldest,), daemon=True).start()


def _discard(process: Process) -> None:
    _close_stdin(process.proc)  # EOF: a waiting process exits on its own
    try:
        process.proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass
    kill(process.proc)
    shutil.rmtree(process.scratch, ignore_errors=True)


def _close_stdin(proc: subprocess.Popen) -> None:
    try:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
    except OSError:
        pass


def _key(env: dict[str, str], mounts: bwrap.Mounts | None, mode: str) -> str:
    shown = [sorted(env.items()), mode, [[str(p) for p in part] if isinstance(part, tuple) else part
                                         for part in (mounts.key() if mounts else ())]]
    return hashlib.sha256(json.dumps(shown).encode()).hexdigest()


atexit.register(shutdown)
