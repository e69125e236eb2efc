"""Standby workers: the next evaluation is handed to a process that already imported torch and Triton.

Real worker processes on the CPU interpreter. What must hold: a standby process serves one request
and is the same sandbox a fresh process is (no secrets, time limit, crash and hang handling), one that
died waiting is never used, and none outlives `shutdown`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from test_eval_gate import RIGHT_RMSNORM, mutate

from autokernel_ci.harness import sandbox, standby
from autokernel_ci.results import Status
from autokernel_ci.tasks import builtin_task

SMOKE = ("smoke",)


@pytest.fixture(autouse=True)
def no_leftovers():
    standby.shutdown()
    yield
    standby.shutdown()
    assert standby.waiting_count() == 0


@pytest.fixture
def runs(monkeypatch):
    """Every WorkerRun of the test, the worker's phases included."""
    seen = []
    real = sandbox.run_worker

    def recording(*args, **kwargs):
        run = real(*args, **kwargs)
        seen.append(run)
        return run

    monkeypatch.setattr(sandbox, "run_worker", recording)
    return seen


def evaluate(tmp_path: Path, source: str, name: str, **kwargs):
    path = tmp_path / "work" / f"{name}.py"  # one folder, as the loop's workspace: one view of the files
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    task = kwargs.pop("task", None) or builtin_task("rmsnorm")
    return sandbox.evaluate(task, path, device="cpu", seed=7, stages=SMOKE, standby=True, **kwargs)


def test_the_second_evaluation_finds_torch_already_imported(tmp_path: Path, runs):
    first = evaluate(tmp_path, RIGHT_RMSNORM, "a")
    assert standby.waiting_count() == 1  # started during the first, for the next
    time.sleep(3.0)  # let it finish its imports, as it would during a real evaluation
    second = evaluate(tmp_path, RIGHT_RMSNORM, "b")
    assert first.status is second.status is Status.PASS
    fresh, warm = (run.result["phases_s"] for run in runs)
    assert fresh["imports"] > 0.3, fresh  # torch and Triton imported by the worker itself
    assert warm["imports"] < fresh["imports"] / 3, (fresh, warm)
    assert runs[1].seconds < runs[0].seconds
    assert standby.waiting_count() == 1


def test_a_standby_worker_sees_no_secrets_and_runs_in_the_requests_folder(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_not_for_candidates")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-candidates")
    snoop = "import os\n" + mutate(
        RIGHT_RMSNORM, "    shape = x.shape\n",
        "    if any('for-candidates' in v or 'for_candidates' in v for v in os.environ.values()):\n"
        "        raise RuntimeError('saw a secret')\n"
        "    open('scratch-probe', 'w').close()  # its own scratch folder, writable\n"
        "    if os.path.exists(os.path.join(os.path.dirname(__file__), 'scratch-probe')):\n"
        "        raise RuntimeError('runs in the candidate folder: ' + os.getcwd())\n"
        "    shape = x.shape\n")
    task = builtin_task("rmsnorm")
    import dataclasses

    task = dataclasses.replace(task, allow=tuple(task.allow) + ("static.escape",))
    assert evaluate(tmp_path, RIGHT_RMSNORM, "warmup", task=task).status is Status.PASS
    result = evaluate(tmp_path, snoop, "snoop", task=task)
    assert result.status is Status.PASS, result.message


def test_a_hang_and_a_segfault_in_standby_workers_end_as_timeout_and_crash(tmp_path: Path):
    hangs = mutate(RIGHT_RMSNORM, "    shape = x.shape\n", "    while True:\n        pass\n")
    segfaults = mutate(RIGHT_RMSNORM, "    x_row = x_ptr + row * x_row_stride\n",
                       "    x_row = x_ptr + row * x_row_stride + (1 << 44)\n")
    assert evaluate(tmp_path, RIGHT_RMSNORM, "warmup").status is Status.PASS
    time.sleep(2.0)
    started = time.monotonic()
    hung = evaluate(tmp_path, hangs, "hang", timeout=6.0)
    assert hung.status is Status.TIMEOUT and time.monotonic() - started < 30
    crashed = evaluate(tmp_path, segfaults, "segfault")
    assert crashed.status is Status.CRASH and "SIGSEGV" in crashed.message, crashed.message
    assert evaluate(tmp_path, RIGHT_RMSNORM, "after").status is Status.PASS


def test_a_standby_worker_that_died_waiting_is_not_used(tmp_path: Path, runs):
    assert evaluate(tmp_path, RIGHT_RMSNORM, "a").status is Status.PASS
    with standby._lock:
        (waiting,) = standby._waiting.values()
    os.killpg(waiting.proc.pid, signal.SIGKILL)
    waiting.proc.wait()
    result = evaluate(tmp_path, RIGHT_RMSNORM, "b")
    assert result.status is Status.PASS, result.message
    assert runs[1].result["phases_s"]["imports"] > 0.3  # a fresh worker took it


def test_switched_off_by_the_environment_and_gone_after_shutdown(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(standby.ENV_SWITCH, "0")
    assert evaluate(tmp_path, RIGHT_RMSNORM, "a").status is Status.PASS
    assert standby.waiting_count() == 0
    monkeypatch.delenv(standby.ENV_SWITCH)
    evaluate(tmp_path, RIGHT_RMSNORM, "b")
    with standby._lock:
        procs = [p.proc for p in standby._waiting.values()]
    assert len(procs) == 1
    standby.shutdown()
    assert all(p.poll() is not None for p in procs)


def test_one_standby_process_per_environment_and_the_oldest_goes_past_the_cap(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(standby, "MAX_PROCESSES", 2)
    for slot in ("0", "1"):  # two pool slots: two environments, one standby process each
        evaluate(tmp_path, RIGHT_RMSNORM, f"slot{slot}", env_overrides={"AUTOKERNEL_SLOT": slot})
    assert standby.waiting_count() == 2
    with standby._lock:
        first = next(iter(standby._waiting.values())).proc
    evaluate(tmp_path, RIGHT_RMSNORM, "slot2", env_overrides={"AUTOKERNEL_SLOT": "2"})
    first.wait(timeout=30)  # the least recently used was ended to stay within the cap
    assert standby.waiting_count() == 2


def test_shutdown_ends_many_standby_processes_within_one_grace_period(tmp_path: Path, monkeypatch):
    """Eight GPUs: eight standby processes, some still importing torch at exit. They get their EOF at
    once and share one grace period, so leaving does not take eight of them."""
    for slot in range(4):
        evaluate(tmp_path, RIGHT_RMSNORM, f"slot{slot}", env_overrides={"AUTOKERNEL_SLOT": str(slot)})
    with standby._lock:
        procs = [p.proc for p in standby._waiting.values()]
    assert len(procs) == 4
    started = time.monotonic()
    standby.shutdown(grace_s=0.5)
    assert time.monotonic() - started < 3.0
    assert all(p.poll() is not None for p in procs)


def test_a_candidate_leaves_nothing_for_the_next_one_in_a_warm_worker(tmp_path: Path):
    """A candidate that sets a global of the harness, patches torch and the comparison, and leaves a
    thread running changes nothing for the next candidate served by a standby worker: each process
    serves one request, and the next was started before any candidate ran."""
    import dataclasses

    meddler = mutate(RIGHT_RMSNORM, "    shape = x.shape\n", """    import threading, time
    import torch.nn.functional as F
    import autokernel_ci.harness.correctness as c
    c.compare = lambda *a, **k: c.Comparison(True, 0.0, 0.0)
    F.rms_norm = lambda x, *a, **k: x
    torch.allclose = lambda *a, **k: True
    globals()['LEFT'] = 1
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    shape = x.shape
""")
    task = builtin_task("rmsnorm")
    task = dataclasses.replace(task, allow=tuple(task.allow) + ("static.escape", "static.monkeypatch",
                                                               "static.introspection", "sandbox.thread"))
    first = evaluate(tmp_path, meddler, "meddler", task=task)
    assert first.status in (Status.PASS, Status.REJECTED), first.message
    assert standby.waiting_count() == 1
    wrong = mutate(RIGHT_RMSNORM, "(x * rstd * w)", "(x * rstd * w * 1.01)")
    after = evaluate(tmp_path, wrong, "wrong", task=builtin_task("rmsnorm"))
    assert after.status is Status.FAIL, after.message
    assert evaluate(tmp_path, RIGHT_RMSNORM, "right").status is Status.PASS
