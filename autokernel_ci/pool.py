"""One evaluation worker per GPU: the loop's candidates, evaluated side by side on one machine.

A `WorkerPool` has one *slot* per device. Each slot is a thread that takes jobs from the pool's
queue and runs `harness.sandbox.evaluate` with the worker process pinned to the slot's GPU
(`CUDA_VISIBLE_DEVICES=<id>` in the child's environment, so inside it the GPU is `cuda:0`). The
sandbox is unchanged: every candidate still runs in its own child process, so a candidate that
crashes, hangs or corrupts its CUDA context takes down its own worker process and nothing else;
the other slots keep going.

On a GPU machine the slots are the visible GPUs (`CUDA_VISIBLE_DEVICES`, else every GPU torch
counts). On the CPU there is nothing to pin: `WorkerPool.cpu(n)` makes `n` slots that share the
machine (useful for tests and for the Triton interpreter; timings are not representative anyway).

`submit` returns a `concurrent.futures.Future[EvalResult]`; `slot=` pins a job to one slot (the loop
runs every measurement that decides a keep on slot 0, so those numbers always come from one GPU).
`close(cancel=True)` kills the workers in flight: their processes live in sessions of their own and
would otherwise outlive the caller.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.errors import AutokernelError

if TYPE_CHECKING:
    from autokernel_ci.results import EvalResult
    from autokernel_ci.tasks import KernelTask

CPU_DEVICE = "cpu"


def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, as the ids to put in a child's `CUDA_VISIBLE_DEVICES`.

    `CUDA_VISIBLE_DEVICES` when set (ids or UUIDs, in its order; empty or `-1` means none), else
    `0 … n-1` for the n GPUs torch counts (none without CUDA)."""
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [part.strip() for part in listed.split(",") if part.strip()]
        # CUDA stops at the first invalid entry; -1 is the usual way to hide every GPU.
        valid = []
        for gpu in ids:
            if gpu.startswith("-"):
                break
            valid.append(gpu)
        return valid
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover - torch is a dependency
        count = 0
    return [str(i) for i in range(count)]


def first_gpus(workers: int | None) -> list[str]:
    """The first `workers` visible GPUs (None: all of them), one worker each; more than there are is an error."""
    gpus = visible_gpus()
    if workers is not None and workers > len(gpus):
        raise AutokernelError(f"--workers {workers} asks for more workers than the {len(gpus)} visible GPU(s) "
                              f"({', '.join(gpus) or 'none'}); one worker per GPU")
    return gpus if workers is None else gpus[:workers]


@dataclass
class JobRecord:
    """When and where one evaluation ran: what `WorkerPool.records` keeps, for logs and tests."""

    slot: int
    device: str
    candidate: str
    started: float  # time.monotonic()
    finished: float = 0.0
    status: str = ""  # the EvalResult status, or the exception's class name


@dataclass
class _Job:
    task: KernelTask
    candidate: Path
    kwargs: dict[str, Any]
    future: Future


class WorkerPool:
    """One evaluation slot per device; see the module docstring."""

    def __init__(self, devices: Sequence[str] | None = None) -> None:
        devices = list(visible_gpus()) if devices is None else list(devices)
        if not devices:
            raise AutokernelError("a worker pool needs at least one device: no GPU is visible "
                                  "(use WorkerPool.cpu(n) on a machine without one)")
        self.devices = devices
        self.records: list[JobRecord] = []
        self._cond = threading.Condition()
        self._shared: deque[_Job] = deque()
        self._pinned: list[deque[_Job]] = [deque() for _ in devices]
        self._cancel = threading.Event()
        self._closed = False
        self._threads = [threading.Thread(target=self._serve, args=(i,), name=f"autokernel-worker-{i}", daemon=True)
                         for i in range(len(devices))]
        for thread in self._threads:
            thread.start()

    @classmethod
    def cpu(cls, slots: int) -> WorkerPool:
        """`slots` workers sharing this machine's CPU (kernels under the Triton interpreter)."""
        if slots < 1:
            raise AutokernelError(f"a worker pool needs at least one slot, got {slots}")
        return cls([CPU_DEVICE] * slots)

    @classmethod
    def for_device(cls, device: str, workers: int) -> WorkerPool:
        """The pool `optimize --workers N` uses: the first N visible GPUs, or N CPU slots."""
        if device == CPU_DEVICE:
            return cls.cpu(workers)
        return cls(first_gpus(workers))

    @property
    def size(self) -> int:
        return len(self.devices)

    def env_for(self, slot: int) -> dict[str, str]:
        """What the slot adds to its worker's environment: its GPU, alone."""
        device = self.devices[slot]
        return {} if device == CPU_DEVICE else {"CUDA_VISIBLE_DEVICES": device}

    # -- submitting ----------------------------------------------------------------------------

    def submit(self, task: KernelTask, candidate: str | Path, *, slot: int | None = None,
               **evaluate_kwargs: Any) -> Future[EvalResult]:
        """Queue `sandbox.evaluate(task, candidate, **evaluate_kwargs)` on any free slot, or on `slot`."""
        if slot is not None and not 0 <= slot < self.size:
            raise ValueError(f"slot {slot} is not one of this pool's {self.size} slots")
        future: Future[EvalResult] = Future()
        job = _Job(task, Path(candidate), dict(evaluate_kwargs), future)
        with self._cond:
            if self._closed:
                raise AutokernelError("the worker pool is closed")
            (self._shared if slot is None else self._pinned[slot]).append(job)
            self._cond.notify_all()
        return future

    def map(self, task: KernelTask, candidates: Iterable[str | Path], **evaluate_kwargs: Any) -> list[EvalResult]:
        """Evaluate every candidate, as many at once as there are slots; results in the candidates' order."""
        futures = [self.submit(task, c, **evaluate_kwargs) for c in candidates]
        return [f.result() for f in futures]

    def evaluate(self, task: KernelTask, candidate: str | Path, *, slot: int = 0, **evaluate_kwargs: Any) -> EvalResult:
        """One evaluation on `slot`, waited for (what the loop's sequential steps use)."""
        return self.submit(task, candidate, slot=slot, **evaluate_kwargs).result()

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self, cancel: bool = False) -> None:
        """Stop taking jobs. With `cancel`, kill the workers in flight and fail the queued jobs;
        without, let the queued jobs finish first."""
        with self._cond:
            self._closed = True
            if cancel:
                self._cancel.set()
                dropped = list(self._shared) + [job for queue in self._pinned for job in queue]
                self._shared.clear()
                for queue in self._pinned:
                    queue.clear()
                for job in dropped:
                    job.future.cancel()
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)

    # -- the slots -----------------------------------------------------------------------------

    def _next_job(self, slot: int) -> _Job | None:
        with self._cond:
            while True:
                if self._pinned[slot]:
                    return self._pinned[slot].popleft()
                if self._shared:
                    return self._shared.popleft()
                if self._closed:
                    return None
                self._cond.wait()

    def _serve(self, slot: int) -> None:
        from autokernel_ci.harness import sandbox

        while True:
            job = self._next_job(slot)
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            record = JobRecord(slot, self.devices[slot], str(job.candidate), time.monotonic())
            with self._cond:
                self.records.append(record)
            try:
                overrides = {**(job.kwargs.pop("env_overrides", None) or {}), **self.env_for(slot)}
                result = sandbox.evaluate(job.task, job.candidate, env_overrides=overrides or None,
                                          cancel=self._cancel, **job.kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                record.finished, record.status = time.monotonic(), type(exc).__name__
                job.future.set_exception(exc)
                continue
            record.finished, record.status = time.monotonic(), result.status.value
            job.future.set_result(result)
