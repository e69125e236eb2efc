"""The orchestrator: rank by Amdahl saving, slice the budget, move on when experiments stop paying."""

from __future__ import annotations

import pytest

from autokernel_ci.orchestrate import (
    MoveOnRule,
    Outcome,
    RankedTask,
    allocate,
    amdahl_saving,
    as_outcome,
    rank,
    run_plan,
    should_move_on,
)
from autokernel_ci.profiling import PlanEntry
from autokernel_ci.search.proposer import Experiment


def entry(family: str, share: float, expected: float, builtin: str | None = "same") -> PlanEntry:
    return PlanEntry(family=family, builtin=family if builtin == "same" else builtin, share=share,
                     self_time_us=share * 1000, calls=1, shapes=[], bytes=None, flops=None, bound="memory",
                     pct_roofline=None, expected_speedup=expected, expected_speedup_source="roofline",
                     potential_saving=amdahl_saving(share, expected))


def task(op: str, share: float, expected: float) -> RankedTask:
    return RankedTask(op=op, family=op, share=share, expected_speedup=expected,
                      potential_saving=amdahl_saving(share, expected), task=op)


def baseline(time_us: float) -> Outcome:
    return Outcome(time_us, kept=True, experiment=False)


def tried(time_us: float | None, kept: bool = False) -> Outcome:
    return Outcome(time_us, kept=kept)


# -- Amdahl and ranking ------------------------------------------------------------------------------------


def test_amdahl_saving_is_share_times_one_minus_inverse_speedup() -> None:
    assert amdahl_saving(0.5, 2.0) == pytest.approx(0.25)
    assert amdahl_saving(0.3, 1.0) == 0.0
    with pytest.raises(ValueError):
        amdahl_saving(0.1, 0.0)


def test_rank_orders_by_end_to_end_saving_not_by_share() -> None:
    plan = [entry("matmul", 0.60, 1.05), entry("rmsnorm", 0.15, 6.0), entry("rope", 0.10, 4.0),
            entry("attention", 0.10, 2.0, builtin=None)]
    ranked = rank(plan)
    assert [t.op for t in ranked] == ["rmsnorm", "rope", "matmul"]  # attention has no built-in: not a task
    assert ranked[0].potential_saving == pytest.approx(0.15 * (1 - 1 / 6))
    assert [t.op for t in rank(plan, min_share=0.12)] == ["rmsnorm", "matmul"]
    assert [t.op for t in rank(plan, ops=["rope", "matmul"])] == ["rope", "matmul"]


def test_allocate_splits_the_budget_in_proportion_to_saving() -> None:
    slices = allocate([task("rmsnorm", 0.3, 3.0), task("rope", 0.1, 2.0)], 50.0, min_slice_minutes=1.0)
    assert [s.task.op for s in slices] == ["rmsnorm", "rope"]
    assert slices[0].minutes == pytest.approx(50.0 * 0.2 / 0.25)
    assert sum(s.minutes for s in slices) == pytest.approx(50.0)


def test_allocate_drops_slices_too_short_to_use_and_shares_their_time() -> None:
    ranked = [task("rmsnorm", 0.3, 3.0), task("rope", 0.1, 2.0), task("swiglu", 0.01, 1.5)]
    slices = allocate(ranked, 20.0, min_slice_minutes=2.0)
    assert [s.task.op for s in slices] == ["rmsnorm", "rope"]
    assert sum(s.minutes for s in slices) == pytest.approx(20.0)
    assert allocate([task("matmul", 0.5, 1.0)], 10.0) == []  # nothing to gain: no slice


# -- diminishing returns ------------------------------------------------------------------------------------


def test_does_not_judge_before_a_full_window_of_experiments() -> None:
    history = [baseline(100.0)] + [tried(101.0)] * 4
    decision = should_move_on(history, MoveOnRule(window=5, min_gain=0.01))
    assert not decision.move_on and "4 of 5" in decision.reason


def test_moves_on_when_the_last_window_gained_less_than_min_gain() -> None:
    # Big gains early, then a window of five experiments that together gained 0.5 %.
    history = [baseline(100.0), tried(80.0, kept=True), tried(60.0, kept=True),
               tried(61.0), tried(59.7, kept=True), tried(70.0), tried(None), tried(62.0)]
    decision = should_move_on(history, MoveOnRule(window=5, min_gain=0.01, floor=0.0))
    assert decision.move_on
    assert decision.recent_gain == pytest.approx((60.0 - 59.7) / 59.7)
    assert decision.speedup == pytest.approx(100.0 / 59.7)


def test_keeps_going_while_the_recent_experiments_still_pay() -> None:
    history = [baseline(100.0)] + [tried(100.0 - 3 * i, kept=True) for i in range(1, 6)]
    decision = should_move_on(history, MoveOnRule(window=5, min_gain=0.01, floor=0.0))
    assert not decision.move_on and decision.recent_gain == pytest.approx(15 / 85)


def test_moves_on_when_what_is_left_to_gain_end_to_end_is_below_the_floor() -> None:
    # The op was 10 % of the model, expected 2×; reaching 1.9× leaves 0.1·(1/1.9 − 1/2) ≈ 0.26 %.
    history = [baseline(100.0), tried(100 / 1.9, kept=True)]
    rule = MoveOnRule(window=10, min_gain=0.01, floor=0.005)
    decision = should_move_on(history, rule, share=0.10, expected_speedup=2.0)
    assert decision.move_on and decision.remaining_saving == pytest.approx(0.1 * (1 / 1.9 - 1 / 2))
    assert not should_move_on(history[:1], rule, share=0.10, expected_speedup=2.0).move_on


def test_moves_on_when_the_current_kernel_cannot_be_measured() -> None:
    assert should_move_on([Outcome(None, kept=False, experiment=False)]).move_on
    assert not should_move_on([]).move_on


def test_reads_the_loops_experiment_rows() -> None:
    rows = [Experiment(n=0, task="rmsnorm", verdict="baseline", score_us=50.0, gate_score_us=52.0),
            Experiment(n=1, task="rmsnorm", verdict="slower", score_us=55.0),
            Experiment(n=2, task="rmsnorm", verdict="kept", score_us=40.0),
            Experiment(n=3, task="rmsnorm", verdict="fail")]
    assert [as_outcome(r) for r in rows] == [Outcome(50.0, True, False), Outcome(55.0, False),
                                             Outcome(40.0, True), Outcome(None, False)]
    assert as_outcome(rows[2].to_dict()) == Outcome(40.0, True)


# -- running the plan -------------------------------------------------------------------------------------


class FakeLoop:
    """A synthetic experiment loop: each task has a script of experiment times; each experiment costs
    one minute of a fake clock; a chunk of `minutes` runs that many experiments."""

    def __init__(self, scripts: dict[str, list[float | None]]) -> None:
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.now = 0.0
        self.best: dict[str, float] = {}
        self.calls: list[tuple[str, float]] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, task: RankedTask, minutes: float) -> list[Outcome]:
        self.calls.append((task.op, round(minutes, 6)))
        script = self.scripts[task.op]
        out: list[Outcome] = []
        if task.op not in self.best:
            self.best[task.op] = script.pop(0)
            out.append(baseline(self.best[task.op]))
            self.now += 60
        while script and len(out) < int(minutes + 1e-9):
            t = script.pop(0)
            kept = t is not None and t < self.best[task.op]
            if kept:
                self.best[task.op] = t
            out.append(tried(t, kept))
            self.now += 60
        return out if out else []


def test_run_plan_moves_on_from_a_plateau_and_gives_its_time_to_the_next_task() -> None:
    rule = MoveOnRule(window=3, min_gain=0.01, floor=0.0)
    plateau = [100.0, 70.0, 69.9, 70.5, 71.0] + [69.95] * 40  # pays once, then nothing
    steady = [100.0] + [100.0 - 2 * i for i in range(1, 60)]  # 2 % better every experiment
    loop = FakeLoop({"rmsnorm": plateau, "rope": steady})
    ranked = [task("rmsnorm", 0.3, 4.0), task("rope", 0.2, 3.0)]
    result = run_plan(ranked, 40.0, loop, rule=rule, chunk_minutes=2.0, min_slice_minutes=1.0, clock=loop.clock)
    first, second = result.runs
    assert first.task.op == "rmsnorm" and "gained" in first.stop_reason
    assert first.used_minutes < first.slice_minutes / 2  # moved on early, measured not guessed
    assert first.speedup == pytest.approx(100 / 69.9)
    # rope got its own slice plus what rmsnorm left, and kept paying until the budget ran out
    assert second.slice_minutes > 40.0 * amdahl_saving(0.2, 3.0) / (amdahl_saving(0.3, 4.0) + amdahl_saving(0.2, 3.0))
    assert second.still_paying and "spent" in second.stop_reason
    assert result.used_minutes <= 40.0 + 1e-9


def test_run_plan_moves_on_when_a_task_has_nothing_left_to_try() -> None:
    loop = FakeLoop({"rmsnorm": [100.0, 90.0], "rope": [100.0] + [99.0 - i for i in range(30)]})
    ranked = [task("rmsnorm", 0.3, 4.0), task("rope", 0.2, 3.0)]
    result = run_plan(ranked, 20.0, loop, rule=MoveOnRule(window=50, floor=0.0), chunk_minutes=3.0,
                      min_slice_minutes=1.0, clock=loop.clock)
    assert result.runs[0].stop_reason == "nothing left to try"
    assert result.runs[0].used_minutes == pytest.approx(2.0)


def test_time_left_at_the_end_goes_back_to_tasks_that_were_still_paying() -> None:
    # rmsnorm keeps paying but its slice ends; rope plateaus at once and hands its time back.
    loop = FakeLoop({"rmsnorm": [100.0] + [100.0 - 1.5 * i for i in range(1, 60)],
                     "rope": [100.0] + [100.0] * 40})
    ranked = [task("rmsnorm", 0.3, 4.0), task("rope", 0.3, 3.0)]
    result = run_plan(ranked, 30.0, loop, rule=MoveOnRule(window=3, min_gain=0.01, floor=0.0), chunk_minutes=2.0,
                      min_slice_minutes=1.0, clock=loop.clock)
    rmsnorm, rope = result.runs
    assert "gained" in rope.stop_reason
    first_slice = 30.0 * amdahl_saving(0.3, 4.0) / (amdahl_saving(0.3, 4.0) + amdahl_saving(0.3, 3.0))
    assert rmsnorm.used_minutes > first_slice + 5  # rope's unused time, after rope stopped
    assert loop.calls[-1][0] == "rmsnorm" and rmsnorm.still_paying
    assert result.used_minutes == pytest.approx(30.0, abs=1.0)
