"""One worker process, from its start to its last message: spawned in the sandbox, fed requests and
cases on its stdin, read on its result pipe, watched from /proc, and killed, with everything it
started, when it is done, late or cancelled.

`spawn` starts a worker (inside bubblewrap unless the sandbox mode is `process`); `harness.standby`
uses it to start workers ahead. `Session` drives one: `send` a line, `wait` for a message, `finish`
for the `WorkerRun` the caller judges. Nothing here reads a file the worker could write.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autokernel_ci.errors import HarnessError
from autokernel_ci.harness import bwrap
from autokernel_ci.harness.stream import LAST, Message, Reader
from autokernel_ci.harness.watch import Watcher, interpreter
from autokernel_ci.results import Finding

RESULT_FD_ENV = "AUTOKERNEL_RESULT_FD"
LOG_TAIL = 8000
EXIT_GRACE_S = 10.0


class EvaluationCancelled(HarnessError):
    """The evaluation was cancelled before the worker finished (the caller is shutting down)."""


@dataclass
class Process:
    """A started worker: its process, its result stream, its output's tail, its scratch folder."""

    proc: subprocess.Popen
    reader: Reader
    scratch: Path
    mode: str
    owns_scratch: bool
    log: list[bytes] = field(default_factory=list)
    writable: tuple[str, ...] = ()  # where the worker may write, as it sees it (the /proc watch's allowance)
    drain: threading.Thread | None = None

    def log_tail(self) -> str:
        return b"".join(self.log)[-LOG_TAIL:].decode("utf-8", "replace")


def worker_argv() -> list[str]:
    return [sys.executable, "-m", "autokernel_ci.harness.worker"]


def spawn(env: dict[str, str], mounts: bwrap.Mounts | None, mode: str, scratch: Path | None = None,
          work_dir: Path | None = None) -> Process:
    """Start a worker that waits for its request on stdin. `scratch`: the folder it may write in (made
    here, and removed by `Session`, when None)."""
    owns = scratch is None
    if scratch is None:
        scratch = Path(tempfile.mkdtemp(prefix="autokernel-eval-", dir=work_dir))
    scratch = scratch.resolve()
    mounts = bwrap.Mounts(scratch=scratch) if mounts is None else bwrap.Mounts(
        scratch=scratch, read_only=mounts.read_only, writable=mounts.writable, gpu=mounts.gpu)
    read, write = os.pipe()
    # Inside bubblewrap the scratch's .cache is seen at bwrap.CACHE_DIR (bwrap.command binds it there).
    cache = Path(bwrap.CACHE_DIR) if mode == "bwrap" else scratch / ".cache"
    child_env = {**env, RESULT_FD_ENV: str(write), "TRITON_CACHE_DIR": str(cache / "triton"),
                 "TORCH_EXTENSIONS_DIR": str(cache / "torch_extensions")}
    argv = worker_argv()
    if mode == "bwrap":
        argv = bwrap.command(argv, mounts, child_env)
        popen_env = {"PATH": env.get("PATH", os.defpath)}
    else:
        popen_env = child_env
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=popen_env, cwd=scratch, pass_fds=(write,), start_new_session=True)
    finally:
        os.close(write)
    reader = Reader(read).start()
    writable = (str(scratch), "/tmp", *((bwrap.CACHE_DIR,) if mode == "bwrap" else ()),
                *(str(p) for p in mounts.writable),
                *((child_env["PYTHONPYCACHEPREFIX"],) if mode == "process" and child_env.get("PYTHONPYCACHEPREFIX")
                  else ()))
    process = Process(proc, reader, scratch, mode, owns, writable=writable)
    process.drain = threading.Thread(target=_drain, args=(proc, process.log), name="autokernel-worker-log",
                                     daemon=True)
    process.drain.start()
    return process


def _drain(proc: subprocess.Popen, into: list[bytes]) -> None:
    """Keep the tail of what the worker prints (informational only: shown, never judged)."""
    assert proc.stdout is not None
    size = 0
    for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
        into.append(chunk)
        size += len(chunk)
        while size > 4 * LOG_TAIL and len(into) > 1:
            size -= len(into.pop(0))


def kill(proc: subprocess.Popen) -> None:
    """The worker and everything it started: its session (process mode) or its PID namespace (bwrap:
    the namespace's first process dies with bwrap, and the kernel ends every process in it)."""
    for target in (lambda: os.killpg(proc.pid, signal.SIGKILL), lambda: proc.kill()):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


@dataclass
class WorkerRun:
    """What came back from one worker: its exit, its messages in order of arrival, what was seen of it
    from outside, and `problem`: why its stream cannot be trusted (None when it can)."""

    returncode: int | None
    timed_out: bool
    seconds: float
    log_tail: str
    result: dict[str, Any] | None  # the messages assembled into one report (`harness.sandbox`)
    out_dir: Path
    messages: list[Message] = field(default_factory=list)
    problem: str | None = None
    findings: list[Finding] = field(default_factory=list)
    sandbox: str = ""
    progress: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m.kind == kind]

    def first(self, kind: str) -> Message | None:
        return next((m for m in self.messages if m.kind == kind), None)


class Session:
    """Drive one worker. `timeout` counts from the start (the hand-over, for a worker started ahead)."""

    def __init__(self, process: Process, request: dict[str, Any], timeout: float,
                 cancel: threading.Event | None = None, watch: bool = True) -> None:
        self.process, self.timeout, self.cancel = process, timeout, cancel
        self.start = time.monotonic()
        self.timed_out = False
        self.watcher = None
        if watch:
            self.watcher = Watcher(process.proc.pid, interpreter(), writable=process.writable,
                                   namespaced=process.mode == "bwrap").start()
        self._stdin_open = True
        self.send({"request": request})

    @property
    def left(self) -> float:
        return self.timeout - (time.monotonic() - self.start)

    def send(self, line: dict[str, Any]) -> None:
        stdin = self.process.proc.stdin
        if not self._stdin_open or stdin is None:
            return
        try:
            stdin.write((json.dumps(line) + "\n").encode())
            stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._stdin_open = False

    def close_input(self) -> None:
        if self._stdin_open and self.process.proc.stdin is not None:
            try:
                self.process.proc.stdin.close()
            except OSError:
                pass
        self._stdin_open = False

    def wait(self, kind: str, n: int) -> bool:
        """Until `n` messages of `kind` arrived. False when the worker died, stopped streaming, or ran
        out of time (then `timed_out`); raises EvaluationCancelled when the caller cancels."""
        reader = self.process.reader
        while True:
            if reader.wait_for(kind, n, timeout=min(max(self.left, 0.0), 0.2)):
                return True
            if self.cancel is not None and self.cancel.is_set():
                raise EvaluationCancelled("the evaluation was cancelled")
            if reader.closed.is_set() or reader.problem or reader.finished:
                return reader.wait_for(kind, n, timeout=0)
            if self.left <= 0:
                self.timed_out = True
                return False

    def mark_ready(self) -> None:
        if self.watcher is not None:
            self.watcher.ready()

    def finish(self) -> WorkerRun:
        """Let the worker end (or end it), and collect what it sent before its last message."""
        process = self.process
        self.close_input()
        try:
            if not self.timed_out:
                self.wait(LAST, 1)
            grace = min(EXIT_GRACE_S, max(self.left, 0.5)) if not self.timed_out else 0
            try:
                process.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                # Done, but still there (a thread that will not stop, a hook that hangs): its work is over.
                pass
        finally:
            kill(process.proc)
        findings = self.watcher.stop() if self.watcher is not None else []
        process.reader.closed.wait(timeout=5)
        seconds = time.monotonic() - self.start
        reader = process.reader
        problem = reader.problem
        if problem is None and not reader.finished and not self.timed_out:
            problem = "the worker ended without sending its last message"
        messages = list(reader.messages)
        progress = [str(m.header.get("step", "")) for m in messages if m.kind == "progress"]
        return WorkerRun(process.proc.returncode, self.timed_out, seconds, process.log_tail(), None, process.scratch,
                         messages, problem, findings, bwrap.label(process.mode), progress)

    def cleanup(self) -> None:
        kill(self.process.proc)
        # The threads that read the worker end with its pipes: wait for them, so that none is still inside
        # torch (turning bytes into tensors) when the interpreter shuts down.
        if self.watcher is not None:
            self.watcher.stop()
        self.process.reader.closed.wait(timeout=10)
        if self.process.drain is not None:
            self.process.drain.join(timeout=10)
        if self.process.owns_scratch:
            shutil.rmtree(self.process.scratch, ignore_errors=True)
