"""The worker pool on the CPU: two workers, two evaluations in flight, and a crash in one that the other
never notices; then the loop with two workers on a real git repository.

Each slot pins its worker to one GPU through CUDA_VISIBLE_DEVICES; on the CPU there is nothing to pin,
so the pinning is checked on the environment handed to the worker process.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import git
import pytest
from test_loop import CONFIG, CRASHES, DATE, EXAMPLE, FAST, HANGS, SLOW_START, WRONG, ScriptedProposer, settings

from autokernel_ci.harness import sandbox
from autokernel_ci.loop import init_repository, run_loop
from autokernel_ci.pool import WorkerPool, visible_gpus
from autokernel_ci.results import Status
from autokernel_ci.tasks import resolve_task

# A pointer 16 TiB past the row: under the interpreter a real SIGSEGV, as an illegal address is on a GPU.
SEGFAULTS = EXAMPLE.replace("    x_row = x_ptr + row * x_row_stride\n",
                            "    x_row = x_ptr + row * x_row_stride + (1 << 44)\n")
TIMEOUT_S = 60.0


@pytest.fixture
def task(tmp_path: Path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "rmsnorm.py").write_text(EXAMPLE)
    (tmp_path / ".autokernel.yml").write_text(CONFIG)
    return resolve_task("rmsnorm", tmp_path / ".autokernel.yml")


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / "candidates" / name / "rmsnorm.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return path


def test_visible_gpus_follow_cuda_visible_devices():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5e3b,GPU-77aa"}) == ["GPU-5e3b", "GPU-77aa"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops at the first invalid id


def test_each_slot_pins_its_worker_to_its_gpu_and_secrets_stay_out(task, tmp_path, monkeypatch):
    seen: list[dict[str, str]] = []
    lock = threading.Lock()

    def fake_run_worker(request, out_dir, timeout, env, on_progress=None, cancel=None, **kwargs):
        with lock:
            seen.append(env)
        return sandbox.WorkerRun(1, False, 0.0, "", None, out_dir)

    monkeypatch.setattr(sandbox, "run_worker", fake_run_worker)
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_not_for_candidates")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    pool = WorkerPool(["3", "5"])
    try:
        for slot in (0, 1):
            result = pool.evaluate(task, task.path, slot=slot, device="cpu", timeout=5)
            assert result.status is Status.CRASH
    finally:
        pool.close()
    assert [env["CUDA_VISIBLE_DEVICES"] for env in seen] == ["3", "5"]
    assert all("GITHUB_TOKEN" not in env for env in seen)
    assert WorkerPool.cpu(2).env_for(1) == {}


def test_two_workers_evaluate_at_once_and_a_segfault_in_one_does_not_stop_the_other(task, tmp_path):
    crashing = write(tmp_path, "segfault", SEGFAULTS)
    good = write(tmp_path, "good", EXAMPLE)
    queued = write(tmp_path, "queued", FAST.source)
    with WorkerPool.cpu(2) as pool:
        futures = [pool.submit(task, path, device="cpu", timeout=TIMEOUT_S) for path in (crashing, good, queued)]
        crashed, passed, later = (f.result() for f in futures)
        records = {Path(r.candidate).parent.name: r for r in pool.records}

    assert crashed.status is Status.CRASH and "SIGSEGV" in crashed.message
    assert passed.status is Status.PASS and later.status is Status.PASS
    seg, ok, last = records["segfault"], records["good"], records["queued"]
    # Both were in flight at once, on two slots: each started before the other finished.
    assert {seg.slot, ok.slot} == {0, 1}
    assert seg.started < ok.finished and ok.started < seg.finished
    overlap = min(seg.finished, ok.finished) - max(seg.started, ok.started)
    assert overlap > 0.5, f"the two evaluations overlapped for only {overlap:.2f} s"
    # The slot whose worker crashed took the queued job as soon as it was free.
    assert last.started >= min(seg.finished, ok.finished) - 0.05
    print(f"segfault on slot {seg.slot}: {seg.started - seg.started:.2f}–{seg.finished - seg.started:.2f} s; "
          f"good on slot {ok.slot}: {ok.started - seg.started:.2f}–{ok.finished - seg.started:.2f} s; "
          f"queued on slot {last.slot}: {last.started - seg.started:.2f}–{last.finished - seg.started:.2f} s")


def test_closing_with_cancel_kills_a_hanging_worker_at_once(task, tmp_path):
    hang = write(tmp_path, "hang", HANGS.source)
    pool = WorkerPool.cpu(1)
    future = pool.submit(task, hang, device="cpu", timeout=600)
    deadline = time.monotonic() + 60
    while not pool.records and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3.0)  # the worker is up, inside the endless kernel_fn
    started = time.monotonic()
    pool.close(cancel=True)
    assert time.monotonic() - started < 5
    with pytest.raises(sandbox.EvaluationCancelled):
        future.result()


def test_loop_with_two_workers_screens_a_round_at_once_in_scratch_copies_and_keeps_the_same_way(tmp_path):
    root = tmp_path / "repo"
    (root / "kernels").mkdir(parents=True)
    (root / "kernels" / "rmsnorm.py").write_text(SLOW_START)
    (root / ".autokernel.yml").write_text(CONFIG)
    init_repository(root, "A repository with a slow kernel")
    r = git.Repo(root)
    start = r.head.commit.hexsha
    task = resolve_task("rmsnorm", root / ".autokernel.yml")
    out = root / "autokernel-out"

    with WorkerPool.cpu(2) as pool:
        result = run_loop(task, ScriptedProposer([FAST, CRASHES, WRONG]), settings(workers=2, pool=pool))
        records = list(pool.records)

    # The same rule, applied in the order proposed: the fast one kept, the crash and the wrong one reverted.
    assert [e.verdict for e in result.experiments] == ["baseline", "kept", "crash", "fail"]
    assert [e.n for e in result.experiments] == [0, 1, 2, 3]
    branch = f"autokernel/rmsnorm-{DATE}"
    assert len(list(r.iter_commits(f"{start}..{branch}"))) == 1
    assert r.git.show(f"{branch}:kernels/rmsnorm.py") + "\n" == FAST.source
    assert (root / "kernels" / "rmsnorm.py").read_text() == SLOW_START
    assert r.git.status("--porcelain", "--untracked-files=all") == ""
    assert not (out / "scratch").exists()

    # Screens ran in scratch copies, the first round's two at once on both slots; everything that
    # decides a keep (incumbent, gate, re-screen) ran on slot 0 in the tracked file.
    scratch = [x for x in records if "/scratch/" in x.candidate]
    tracked = [x for x in records if x.candidate == str(task.path)]
    assert len(scratch) == 3 and len(scratch) + len(tracked) == len(records)
    first, second = scratch[0], scratch[1]
    assert {first.slot, second.slot} == {0, 1}
    assert first.started < second.finished and second.started < first.finished
    assert {x.slot for x in tracked} == {0}
