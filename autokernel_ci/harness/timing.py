"""Timing a kernel: CUDA events around every call, with the checks that keep the number honest.

On a GPU (`time_fn`):

1. The first call of every input set runs untimed: it compiles and autotunes.
2. Five calls estimate the time per call; that sets the warm-up (`warmup_ms` worth of calls) and the
   number of timed repetitions (`rep_ms` worth, within `min_reps`..`max_reps`).
3. Each repetition zeroes a buffer twice the size of L2 before its start event, so every call reads
   its inputs from device memory, as it would inside a model, instead of from a cache the previous
   repetition warmed. Input sets rotate from one repetition to the next for the same reason. That
   work also keeps the GPU busy while the CPU queues the call, so the events time the kernel, not
   the launch latency in front of it; without the flush a short spin kernel does the same. Whether
   that held is checked each repetition: once the call and its end event are queued, the start
   event must not have run yet. If it has, the GPU may have waited for the CPU inside the interval
   (a slow launcher, a busy CPU): counted in `late_launches`, never hidden.
4. Optionally each input set's call is captured in a CUDA graph and replayed: for kernels so short
   that launch overhead, not the kernel, would otherwise be measured.
5. A cross-check: a batch of back-to-back calls timed twice, by events on the current stream and by
   the wall clock between two whole-device synchronizes. Work a candidate hides on another stream
   finishes after the stream's end event but before the synchronize, so `sync_us` much above
   `batch_events_us` means the events missed work. Both are returned; the anti-cheat caller decides.

`ABTimer` (and `interleaved_ab`) time two callables in alternating blocks, A B then B A, in one
process, so drift in clocks or temperature falls on both alike.

Without CUDA the same protocol runs with `time.perf_counter` and every result says
`representative=False`: good for smoke tests, never for a speedup.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from autokernel_ci import stats
from autokernel_ci.errors import HarnessError

if TYPE_CHECKING:
    from autokernel_ci.results import ShapeTiming

# Used when the device does not report its L2 size: larger than the L2 of any GPU made so far.
L2_FLUSH_FALLBACK_BYTES = 256 * 1024**2

# The per-call estimate below this (in ms) is treated as this, so an empty call cannot divide by zero.
_MIN_ESTIMATE_MS = 1e-4
# Warm-up calls beyond this buy nothing but wall time.
_MAX_WARMUP_CALLS = 10_000
# Calls in the synchronize cross-check: about this much time (ms), within these bounds.
_SYNC_BATCH_MS = 25.0
_MIN_SYNC_CALLS = 5
# GPU clock cycles to spin before each repetition when L2 is not flushed: some 25-50 µs.
_GAP_FILL_CYCLES = 200_000  # ~100 µs at 2 GHz: longer than a Python launcher takes

Call = Callable[[], Any]


@dataclass
class TimingSamples:
    """Every timed call in microseconds, with the summary and how the numbers were obtained."""

    samples_us: list[float]
    median_us: float
    iqr_us: float
    count: int
    representative: bool  # False off-GPU: the numbers prove nothing about GPU speed
    method: str  # "cuda-events", "cuda-graph" or "perf-counter"
    l2_flushed: bool
    warmup_calls: int
    sync_us: float | None = None  # per call: wall clock between whole-device synchronizes, batch of sync_calls
    batch_events_us: float | None = None  # per call: events on the current stream around the same batch
    sync_calls: int = 0
    rounds: int = 1
    device: str = ""
    # Repetitions whose call the CPU finished queueing only after the GPU had reached the start event,
    # so the interval may hold launch latency (see _CudaBackend.sample_us).
    late_launches: int = 0

    @classmethod
    def from_samples(cls, samples_us: Sequence[float], **meta: Any) -> TimingSamples:
        samples = [float(x) for x in samples_us]
        return cls(samples, stats.median(samples), stats.iqr(samples), len(samples), **meta)

    @property
    def hidden_work_ratio(self) -> float | None:
        """sync_us / batch_events_us: about 1 when the events saw all the work, far above when not."""
        if self.sync_us is None or not self.batch_events_us:
            return None
        return self.sync_us / self.batch_events_us

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_shape_timing(self, shape: dict[str, int], dtype: str, **extra: Any) -> ShapeTiming:
        """The `ShapeTiming` an `EvalResult` carries; `extra` fills bytes, flops, roofline, baselines."""
        from autokernel_ci.results import ShapeTiming

        return ShapeTiming(
            shape=dict(shape),
            dtype=dtype,
            median_us=self.median_us,
            iqr_us=self.iqr_us,
            count=self.count,
            samples_us=list(self.samples_us),
            sync_us=self.sync_us,
            late_launches=self.late_launches,
            **extra,
        )


def time_fn(
    fn: Callable[..., Any],
    *,
    warmup_ms: float = 25,
    rep_ms: float = 100,
    min_reps: int = 20,
    max_reps: int = 1000,
    flush_l2: bool = True,
    cuda_graph: bool = False,
    input_sets: Sequence[Sequence[Any]] | None = None,
    device: str | None = None,
) -> TimingSamples:
    """Time `fn(*args)`, args cycling through `input_sets` (or `fn()` when None); see the module docstring.

    `device` is "cuda", "cuda:N" or "cpu"; None means CUDA when available. Off CUDA, `flush_l2`
    and `cuda_graph` have nothing to act on and are ignored (the result says `l2_flushed=False`).
    """
    _check_reps(min_reps, max_reps)
    backend = _backend(device, flush_l2)
    calls = _bind(fn, input_sets)
    with backend.context():
        calls = backend.prepare(calls, cuda_graph)
        estimate_ms = backend.estimate_ms(calls)
        n_warmup = _warmup_calls(warmup_ms, estimate_ms)
        n_reps = _clamp(int(rep_ms / estimate_ms), min_reps, max_reps)
        backend.run(calls, n_warmup)
        samples = backend.sample_us(calls, n_reps)
        n_sync = _sync_calls(estimate_ms, max_reps)
        sync_us, batch_events_us = backend.cross_check(calls, n_sync)
    return TimingSamples.from_samples(
        samples,
        representative=backend.representative,
        method=backend.method(cuda_graph),
        l2_flushed=backend.flushes,
        warmup_calls=len(calls) + n_warmup,
        sync_us=sync_us,
        batch_events_us=batch_events_us,
        sync_calls=n_sync,
        device=backend.name,
        late_launches=getattr(backend, "late_launches", 0),
    )


class ABTimer:
    """Two callables prepared once, then timed in alternating blocks, one `measure_round` at a time.

    Round 1 runs A then B, round 2 B then A, and so on, so a drift that is linear in time costs both
    sides the same. Every block is preceded by a few untimed calls of the side about to run. The
    gate passes `measure_round` to `stats.decide_in_rounds`; `results` gives each side's samples.
    """

    def __init__(
        self,
        fn_a: Callable[..., Any],
        fn_b: Callable[..., Any],
        *,
        reps_per_round: int | None = None,
        input_sets_a: Sequence[Sequence[Any]] | None = None,
        input_sets_b: Sequence[Sequence[Any]] | None = None,
        warmup_ms: float = 25,
        rep_ms: float = 100,
        min_reps: int = 20,
        max_reps: int = 1000,
        flush_l2: bool = True,
        cuda_graph: bool = False,
        device: str | None = None,
    ) -> None:
        _check_reps(min_reps, max_reps)
        self._backend = _backend(device, flush_l2)
        self._cuda_graph = cuda_graph
        self._max_reps = max_reps
        with self._backend.context():
            self._calls = [
                self._backend.prepare(_bind(fn_a, input_sets_a), cuda_graph),
                self._backend.prepare(_bind(fn_b, input_sets_b), cuda_graph),
            ]
            self._estimates = [self._backend.estimate_ms(calls) for calls in self._calls]
            for calls, estimate in zip(self._calls, self._estimates):
                self._backend.run(calls, _warmup_calls(warmup_ms, estimate))
        slower = max(self._estimates)
        self.reps_per_round = reps_per_round or _clamp(int(rep_ms / slower), min_reps, max_reps)
        self._block_warmup = [_clamp(int(1.0 / e), 1, 10) for e in self._estimates]
        self._untimed_calls = [len(c) + _warmup_calls(warmup_ms, e) for c, e in zip(self._calls, self._estimates)]
        self._samples: list[list[float]] = [[], []]
        self._late = [0, 0]
        self.rounds = 0

    def measure_round(self) -> tuple[list[float], list[float]]:
        """One block of each side, in this round's order; returns (a samples, b samples) in µs."""
        order = (0, 1) if self.rounds % 2 == 0 else (1, 0)
        blocks: list[list[float]] = [[], []]
        with self._backend.context():
            for side in order:
                calls = self._calls[side]
                self._backend.run(calls, self._block_warmup[side])
                blocks[side] = self._backend.sample_us(calls, self.reps_per_round)
                self._late[side] += getattr(self._backend, "late_launches", 0)
                self._untimed_calls[side] += self._block_warmup[side]
        self.rounds += 1
        for side in (0, 1):
            self._samples[side].extend(blocks[side])
        return blocks[0], blocks[1]

    def results(self) -> tuple[TimingSamples, TimingSamples]:
        """Each side's pooled samples, with its own synchronize cross-check run now."""
        if self.rounds == 0:
            raise HarnessError("ABTimer.results() before any round was measured")
        out = []
        with self._backend.context():
            for side in (0, 1):
                n_sync = _sync_calls(self._estimates[side], self._max_reps)
                sync_us, batch_events_us = self._backend.cross_check(self._calls[side], n_sync)
                out.append(
                    TimingSamples.from_samples(
                        self._samples[side],
                        representative=self._backend.representative,
                        method=self._backend.method(self._cuda_graph),
                        l2_flushed=self._backend.flushes,
                        warmup_calls=self._untimed_calls[side],
                        sync_us=sync_us,
                        batch_events_us=batch_events_us,
                        sync_calls=n_sync,
                        rounds=self.rounds,
                        device=self._backend.name,
                        late_launches=self._late[side],
                    )
                )
        return out[0], out[1]


def interleaved_ab(
    fn_a: Callable[..., Any], fn_b: Callable[..., Any], rounds: int, **kwargs: Any
) -> tuple[TimingSamples, TimingSamples]:
    """Time A and B in `rounds` alternating blocks (A B, B A, …); kwargs as for `ABTimer`."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    timer = ABTimer(fn_a, fn_b, **kwargs)
    for _ in range(rounds):
        timer.measure_round()
    return timer.results()


# --- shared helpers ------------------------------------------------------------------------------


def _check_reps(min_reps: int, max_reps: int) -> None:
    if min_reps < 1 or max_reps < min_reps:
        raise ValueError(f"need 1 <= min_reps <= max_reps, got min_reps={min_reps}, max_reps={max_reps}")


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def _warmup_calls(warmup_ms: float, estimate_ms: float) -> int:
    return _clamp(math.ceil(warmup_ms / estimate_ms), 1, _MAX_WARMUP_CALLS)


def _sync_calls(estimate_ms: float, max_reps: int) -> int:
    return _clamp(int(_SYNC_BATCH_MS / estimate_ms), _MIN_SYNC_CALLS, max(max_reps, _MIN_SYNC_CALLS))


def _bind(fn: Callable[..., Any], input_sets: Sequence[Sequence[Any]] | None) -> list[Call]:
    """One zero-argument call per input set (one call of `fn()` when there are none)."""
    if input_sets is None:
        return [fn]
    if len(input_sets) == 0:
        raise ValueError("input_sets is empty: pass None to call fn() without arguments")
    return [_bound(fn, tuple(args)) for args in input_sets]


def _bound(fn: Callable[..., Any], args: tuple[Any, ...]) -> Call:
    return lambda: fn(*args)


def _cycle(calls: list[Call], n: int) -> Iterator[Call]:
    for i in range(n):
        yield calls[i % len(calls)]


def _backend(device: str | None, flush_l2: bool) -> _CpuBackend | _CudaBackend:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return _CpuBackend()
    if not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        raise HarnessError(f"timing on {device!r} was asked for, but torch sees no CUDA device")
    return _CudaBackend(torch.device(device), flush_l2)


class _CpuBackend:
    """perf_counter around each call: the protocol without a GPU, never representative."""

    representative = False
    flushes = False
    name = "cpu"

    def context(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def method(self, cuda_graph: bool) -> str:
        return "perf-counter"

    def prepare(self, calls: list[Call], cuda_graph: bool) -> list[Call]:
        self.run(calls, len(calls))
        return calls

    def run(self, calls: list[Call], n: int) -> None:
        for call in _cycle(calls, n):
            call()

    def estimate_ms(self, calls: list[Call]) -> float:
        start = time.perf_counter()
        self.run(calls, 5)
        return max((time.perf_counter() - start) * 1e3 / 5, _MIN_ESTIMATE_MS)

    def sample_us(self, calls: list[Call], n: int) -> list[float]:
        samples = []
        for call in _cycle(calls, n):
            start = time.perf_counter()
            call()
            samples.append((time.perf_counter() - start) * 1e6)
        return samples

    def cross_check(self, calls: list[Call], n: int) -> tuple[float, float | None]:
        start = time.perf_counter()
        self.run(calls, n)
        return (time.perf_counter() - start) * 1e6 / n, None


class _CudaBackend:
    """CUDA events around each call on the current stream, L2 flushed before each."""

    representative = True

    def __init__(self, device: Any, flush_l2: bool) -> None:
        import torch

        self._torch = torch
        self._device = device
        with self.context():
            self.name = torch.cuda.get_device_name()
            self._flush_buffer = _l2_flush_buffer(torch) if flush_l2 else None
        self.flushes = self._flush_buffer is not None
        self._sleep = getattr(torch.cuda, "_sleep", None)
        self.late_launches = 0  # in the last block sampled

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self._torch.cuda.device(self._device)

    def method(self, cuda_graph: bool) -> str:
        return "cuda-graph" if cuda_graph else "cuda-events"

    def _event(self) -> Any:
        return self._torch.cuda.Event(enable_timing=True)

    def prepare(self, calls: list[Call], cuda_graph: bool) -> list[Call]:
        torch = self._torch
        self.run(calls, len(calls))  # compile and autotune, untimed
        torch.cuda.synchronize()
        if cuda_graph:
            calls = [_capture_graph(torch, call) for call in calls]
        return calls

    def run(self, calls: list[Call], n: int) -> None:
        for call in _cycle(calls, n):
            call()

    def estimate_ms(self, calls: list[Call]) -> float:
        start, end = self._event(), self._event()
        start.record()
        self.run(calls, 5)
        end.record()
        end.synchronize()
        return max(start.elapsed_time(end) / 5, _MIN_ESTIMATE_MS)

    def sample_us(self, calls: list[Call], n: int) -> list[float]:
        starts = [self._event() for _ in range(n)]
        ends = [self._event() for _ in range(n)]
        late = 0
        for call, start, end in zip(_cycle(calls, n), starts, ends):
            # Keep the GPU busy while the CPU queues the start event and the call, so the interval
            # holds the kernel and not the launch latency before it. The flush alone is not enough:
            # zeroing 100 MB takes ~35 µs on an H100, less than a Python launcher with a few checks
            # takes to queue a Triton kernel, and then the events time the launch (measured: A/A
            # noise of 30-57% on a 94 µs RMSNorm with the flush alone, 0.04% on torch.add).
            if self._flush_buffer is not None:
                self._flush_buffer.zero_()
            if self._sleep is not None:
                self._sleep(_GAP_FILL_CYCLES)
            start.record()
            call()
            end.record()
            # Every kernel of the call is queued now. A start event already run means the gap may
            # have run out before the call was queued, and the GPU may have idled inside the
            # interval. (A CPU that runs ahead and blocks on a full launch queue leaves the GPU
            # backlogged: the start event has not run.) Asked after the end event is queued, so the
            # question adds nothing to the timed interval; it may count a call that just made it.
            late += bool(start.query())
        self._torch.cuda.synchronize()
        self.late_launches = late
        return [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]

    def cross_check(self, calls: list[Call], n: int) -> tuple[float, float | None]:
        torch = self._torch
        start, end = self._event(), self._event()
        torch.cuda.synchronize()
        wall_start = time.perf_counter()
        start.record()
        self.run(calls, n)
        end.record()
        torch.cuda.synchronize()
        wall = time.perf_counter() - wall_start
        return wall * 1e6 / n, start.elapsed_time(end) * 1e3 / n


def l2_flush_bytes(device: Any = None) -> int:
    """Bytes to write between repetitions so nothing of the last one stays in L2: twice its size."""
    import torch

    props = torch.cuda.get_device_properties(device if device is not None else torch.cuda.current_device())
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    return 2 * l2 if l2 > 0 else L2_FLUSH_FALLBACK_BYTES


def _l2_flush_buffer(torch: Any) -> Any:
    return torch.empty(l2_flush_bytes() // 4, dtype=torch.int32, device="cuda")


def _capture_graph(torch: Any, call: Call) -> Call:
    """Capture one call in a CUDA graph; the returned call replays it on the current stream.

    Warm-up runs on a side stream first, as the CUDA-graph docs ask (libraries such as cuBLAS set up
    workspaces on first use, which cannot happen during capture).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    torch.cuda.synchronize()
    return graph.replay
