"""Watching a worker from outside: what a candidate cannot hide from /proc.

The parent polls the worker's process tree while it runs: threads the worker started after it said
it was ready (before any candidate was imported), interpreters or programs of its own that it starts
(the compilers Triton and load_inline run are the system's and pass), and files opened for writing
outside the worker's scratch. It looks every 10 ms: a thread that starts and ends between two looks
is not seen here (the operator recorder and the judged outputs remain for it). Each becomes a finding
(`sandbox.thread`, `sandbox.process`, `sandbox.file`). The operator recorder inside the worker stays
as a second line, not the boundary.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from autokernel_ci.results import Finding

POLL_S = 0.01
# Programs that run whatever code they are handed: a worker starting one computes outside the process the
# operator recorder watches. The system's other programs (compilers, `file`, `uname`, ...) are toolchain.
INTERPRETER = re.compile(r"^(python|pypy|perl|ruby|node|nodejs|java|lua|luajit|Rscript|julia|php|tclsh|wish)"
                         r"[0-9.]*(-real)?$")


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    tasks = _listdir(f"/proc/{pid}/task")
    for tid in tasks:
        text = _read(f"/proc/{pid}/task/{tid}/children")
        if text:
            out += [int(p) for p in text.split()]
    return out


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _comm(pid: int, tid: int | None = None) -> str:
    path = f"/proc/{pid}/task/{tid}/comm" if tid else f"/proc/{pid}/comm"
    return (_read(path) or "").strip()


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


@dataclass
class Watcher:
    """Polls the tree under `root_pid` on a thread until `stop()`. `worker_exe`: the interpreter, whose
    process is the worker (the others are bubblewrap's and the toolchain's). `writable`: folders the
    worker may write in (its scratch, /tmp, HOME, caches), as the worker sees them."""

    root_pid: int
    worker_exe: str
    writable: tuple[str, ...]
    namespaced: bool
    findings: list[Finding] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _baseline: set[int] | None = None
    _worker: int | None = None
    _reported: set[tuple[str, str]] = field(default_factory=set)
    _suspect: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Watcher:
        threading.Thread(target=self._run, name="autokernel-watcher", daemon=True).start()
        return self

    def stop(self) -> list[Finding]:
        self._stop.set()
        with self._lock:
            self._look()
            return list(self.findings)

    def ready(self) -> None:
        """The worker has imported what it needs and touched the device; no candidate yet. What runs
        now is the baseline; anything started after it is the candidate's."""
        with self._lock:
            worker = self._find_worker()
            self._worker = worker
            self._baseline = set(int(t) for t in _listdir(f"/proc/{worker}/task")) if worker else set()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            with self._lock:
                self._look()

    def _find_worker(self) -> int | None:
        queue = [self.root_pid]
        while queue:
            pid = queue.pop(0)
            if _exe(pid) == self.worker_exe or pid == self.root_pid and not self.namespaced:
                return pid
            queue += _children(pid)
        return None

    def _tree(self) -> list[int]:
        out, queue = [], [self.root_pid]
        while queue:
            pid = queue.pop(0)
            out.append(pid)
            queue += _children(pid)
        return out

    def _look(self) -> None:
        if self._baseline is None or self._worker is None:
            return
        worker = self._worker
        tree = self._tree()
        for pid in tree:
            if pid == worker:
                continue
            exe = _exe(pid)
            if not exe or pid == self.root_pid or self._is_sandbox_init(pid, exe):
                continue
            name = os.path.basename(exe)
            from_writable = any(exe.startswith(w.rstrip("/") + "/") for w in self.writable)
            if not from_writable and not INTERPRETER.match(name):
                # A program of the system's (a compiler, `file`, `uname`): it runs what it always runs.
                self._suspect.pop(pid, None)
                continue
            # An interpreter (it runs whatever code it is handed) or a program the worker wrote itself. A fork
            # shows the worker's interpreter until it execs: a process is flagged once seen twice.
            if self._suspect.get(pid) == exe:
                self._add("sandbox.process", exe, f"the worker started a process ({exe}, pid {pid}): "
                          "work outside the process the harness watches")
            self._suspect[pid] = exe
        for tid in _listdir(f"/proc/{worker}/task"):
            t = int(tid)
            if t in self._baseline:
                continue
            self._add("sandbox.thread", _comm(worker, t) or tid,
                      f"the candidate started a thread ({_comm(worker, t) or tid}) that the operator recorder "
                      "cannot follow")
        self._check_files(tree)

    def _is_sandbox_init(self, pid: int, exe: str) -> bool:
        return os.path.basename(exe) == "bwrap"

    def _check_files(self, tree: list[int]) -> None:
        for pid in tree:
            if pid == self.root_pid and self.namespaced:
                continue
            for fd in _listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if not target.startswith("/") or target.startswith(("/dev/", "/proc/self", "/memfd:")):
                    continue
                flags = _fd_flags(pid, fd)
                if flags is None or flags & 3 == 0:  # read-only: everything it can see is ours to show
                    continue
                if any(target == w or target.startswith(w.rstrip("/") + "/") for w in self.writable):
                    continue
                self._add("sandbox.file", target, f"the worker opened {target} for writing, outside its scratch")

    def _add(self, rule: str, what: str, message: str) -> None:
        key = (rule, what)
        if key in self._reported:
            return
        self._reported.add(key)
        self.findings.append(Finding(rule=rule, operator=what[:120], message=message[:300]))


def _fd_flags(pid: int, fd: str) -> int | None:
    text = _read(f"/proc/{pid}/fdinfo/{fd}")
    for line in (text or "").splitlines():
        if line.startswith("flags:"):
            try:
                return int(line.split()[1], 8)
            except (IndexError, ValueError):
                return None
    return None


def interpreter() -> str:
    """The path /proc shows as the worker's exe."""
    import sys

    return str(Path(os.path.realpath(sys.executable)))
