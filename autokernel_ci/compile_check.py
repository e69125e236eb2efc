"""The library's ops under `torch.compile`: graph breaks, recompiles, and which swaps pay off there.

A swapped op reaches `torch.compile` as an opaque custom op (`autokernel::<op>`): inductor cannot
fuse it with its neighbours (a residual add, a cast, the projections around an MLP's product), so a
kernel that beats the op in eager mode can still make the compiled model slower. Whether it does is
measured, not assumed: `decide` keeps an op in the swap set under compile only when compiling the
model with that op swapped is faster than compiling it without, beyond the timings' spread.

`CompileWatch` counts, from `torch._dynamo`'s counters, the graph breaks of a compiled callable and
the frames compiled again after its first call (recompiles).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# A swap is kept under compile when it makes the compiled model at least this much faster, and the
# two timings' interquartile ranges do not overlap.
MIN_GAIN = 0.01


@dataclass
class CompileStats:
    """What `torch.compile` did with one compiled callable."""

    variant: str
    calls: int = 0
    frames: int = 0  # frames compiled on the first call (one, without graph breaks)
    graph_breaks: int = 0
    recompiles: int = 0  # frames compiled after the first call
    break_reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"{self.variant}: {self.graph_breaks} graph break{'s' * (self.graph_breaks != 1)}, "
                f"{self.recompiles} recompile{'s' * (self.recompiles != 1)} over {self.calls} calls")
        if self.break_reasons:
            text += f" (first break: {self.break_reasons[0]})"
        return text


def _dynamo_counts() -> tuple[int, Counter[str]]:
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"]), Counter(counters["graph_break"])


class CompileWatch:
    """A compiled callable that counts its graph breaks and recompiles (`stats`) as it is called."""

    def __init__(self, fn: Callable[..., Any], variant: str) -> None:
        self.fn = fn
        self.stats = CompileStats(variant)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        snapshot = _dynamo_counts()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.add(snapshot, calls=1)

    def snapshot(self) -> tuple[int, Counter[str]]:
        """The counters now: pass to `add` after a loop that calls `fn` directly (a timing loop)."""
        return _dynamo_counts()

    def add(self, snapshot: tuple[int, Counter[str]], calls: int) -> None:
        """Count what was compiled since `snapshot`, over `calls` calls of `fn`."""
        frames_before, breaks_before = snapshot
        frames_after, breaks_after = _dynamo_counts()
        if self.stats.calls == 0:
            self.stats.frames += frames_after - frames_before
        else:
            self.stats.recompiles += frames_after - frames_before
        new_breaks = breaks_after - breaks_before
        self.stats.graph_breaks += sum(new_breaks.values())
        for reason in new_breaks:
            first = reason.strip().splitlines()[0][:200] if reason.strip() else "?"
            if first not in self.stats.break_reasons:
                self.stats.break_reasons.append(first)
        self.stats.calls += calls


@dataclass
class SwapDecision:
    """Whether one op stays swapped under compile, measured against the compiled original."""

    op: str
    kept: bool
    reason: str
    compile_us: float | None
    swapped_us: float | None
    compile_iqr_us: float | None = None
    swapped_iqr_us: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(op: str, compile_us: float | None, compile_iqr: float | None, swapped_us: float | None,
          swapped_iqr: float | None, *, error: str = "") -> SwapDecision:
    """Keep `op` swapped under compile only when the compiled model is faster with it swapped: by at least
    `MIN_GAIN`, and with the interquartile ranges of the two timings apart."""
    if error or not compile_us or not swapped_us:
        why = error or "no timing"
        return SwapDecision(op, False, f"left to torch.compile: the compiled model with {op} swapped could not be "
                            f"timed ({why})", compile_us, swapped_us, compile_iqr, swapped_iqr)
    speedup = compile_us / swapped_us
    apart = swapped_us + (swapped_iqr or 0.0) / 2 < compile_us - (compile_iqr or 0.0) / 2
    figures = (f"compiled model {compile_us / 1000:.3f} ms alone, {swapped_us / 1000:.3f} ms with {op} swapped "
               f"({speedup:.3f}×)")
    if speedup >= 1 + MIN_GAIN and apart:
        return SwapDecision(op, True, f"kept: {figures}", compile_us, swapped_us, compile_iqr, swapped_iqr)
    verdict = "slower" if speedup < 1 else "not faster beyond the timings' spread"
    return SwapDecision(op, False, f"left to torch.compile: {figures}, {verdict}", compile_us, swapped_us,
                        compile_iqr, swapped_iqr)


def chosen_ops(decisions: Iterable[SwapDecision]) -> list[str]:
    return [d.op for d in decisions if d.kept]


def describe(decisions: Iterable[SwapDecision], measured: bool, swapped: Mapping[str, int]) -> list[str]:
    """Lines for a report: which ops stay swapped under compile and why, or why that was not measured."""
    decisions = list(decisions)
    if not measured:
        return [f"under torch.compile all swapped ops were kept ({', '.join(sorted(swapped))}): the swap set was "
                "not decided by measurement (no GPU, or not asked for)"] if swapped else []
    lines = [f"under torch.compile, {d.op}: {d.reason}" for d in decisions]
    kept = chosen_ops(decisions)
    lines.append("swap set under torch.compile: " + (", ".join(kept) if kept else
                                                     "none (every op left to torch.compile)"))
    return lines


@dataclass
class CompileChoice:
    """The swap set under compile, decided by measurement, with its own timing."""

    decisions: list[SwapDecision]
    ops: list[str]  # the ops that stay swapped under compile
    median_us: float | None  # the compiled model with exactly these ops swapped
    iqr_us: float | None
    stats: list[CompileStats] = field(default_factory=list)  # of the extra compiled variants
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ops": self.ops, "median_us": self.median_us, "iqr_us": self.iqr_us, "note": self.note,
                "decisions": [d.to_dict() for d in self.decisions], "stats": [asdict(s) for s in self.stats]}


def decide(model: Any, ops: list[str], sources: Mapping[str, Any], args: list[Any], kwargs: dict[str, Any],
           compiled_alone: Any, compiled_all: Any, compile_fn: Callable[[Any], Callable[..., Any]],
           time_fn: Callable[[str, Callable[..., Any]], Any]) -> CompileChoice:
    """The swap set under compile: each op of `ops` is swapped alone into a copy of `model`, the copy compiled
    and timed against the compiled original (`compiled_alone`, a timing with `median_us` and `iqr_us`);
    ops that make it faster are kept (`judge`), and the kept set is timed together once more
    (`compiled_all` is the timing with every op swapped). When the kept set together is not faster
    than the compiled original, nothing stays swapped."""
    import copy

    import torch

    from autokernel_ci import runtime

    stats: list[CompileStats] = []

    def timed(label: str, swap: list[str]) -> tuple[float | None, float | None, str]:
        torch._dynamo.reset()  # each variant compiles the same code objects: keep clear of the recompile limit
        variant = copy.deepcopy(model)
        runtime.apply(variant, kernels={op: sources.get(op) for op in swap}, ops=swap)
        watch = CompileWatch(compile_fn(variant), label)
        try:
            with torch.inference_mode():
                watch(*args, **kwargs)  # the compile itself, outside the timing
            snapshot = watch.snapshot()
            t = time_fn(label, watch.fn)
            watch.add(snapshot, calls=max(getattr(t, "count", 0), 1))
        except Exception as exc:  # a variant that does not compile is not swapped
            return None, None, f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        finally:
            stats.append(watch.stats)
        return t.median_us, t.iqr_us, getattr(t, "error", "")

    decisions: list[SwapDecision] = []
    for op in ops:
        if len(ops) == 1:
            median, iqr, error = compiled_all.median_us, compiled_all.iqr_us, getattr(compiled_all, "error", "")
        else:
            median, iqr, error = timed(f"compile with {op} swapped", [op])
        decisions.append(judge(op, compiled_alone.median_us, compiled_alone.iqr_us, median, iqr, error=error))
    kept = chosen_ops(decisions)
    note = ""
    if not kept:
        return CompileChoice(decisions, [], compiled_alone.median_us, compiled_alone.iqr_us, stats,
                             "every op left to torch.compile: the compiled original is the chosen variant")
    if kept == list(ops):
        median, iqr = compiled_all.median_us, compiled_all.iqr_us
    else:
        median, iqr, error = timed(f"compile with {', '.join(kept)} swapped", kept)
    together = judge(", ".join(kept), compiled_alone.median_us, compiled_alone.iqr_us, median, iqr)
    if not together.kept:
        note = f"the kept ops together did not pay off ({together.reason}): every op left to torch.compile"
        return CompileChoice(decisions, [], compiled_alone.median_us, compiled_alone.iqr_us, stats, note)
    return CompileChoice(decisions, kept, median, iqr, stats, note)
