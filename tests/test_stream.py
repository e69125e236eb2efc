"""The worker's result channel, read as the parent reads it: framed messages, raw tensor bytes, and
every way a child could try to confuse the reader."""

from __future__ import annotations

import json
import os

import pytest
import torch

from autokernel_ci.harness.stream import Reader, send


def read_all(write) -> Reader:
    r, w = os.pipe()
    reader = Reader(r, max_tensor_bytes=1 << 20).start()
    write(w)
    os.close(w)
    assert reader.closed.wait(10)
    return reader


def raw(w: int, header: dict, payload: bytes = b"") -> None:
    body = json.dumps(header).encode()
    os.write(w, len(body).to_bytes(4, "big") + body + payload)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool])
def test_tensors_arrive_bit_for_bit(dtype) -> None:
    t = (torch.randn(3, 5) * 100).to(dtype)
    empty = torch.empty(0, 7, dtype=dtype)
    reader = read_all(lambda w: (send(w, {"type": "case", "n": 1}, (t, empty)), send(w, {"type": "done"})))
    assert reader.problem is None and reader.finished
    got, got_empty = reader.messages[0].tensors
    assert got.dtype == dtype and torch.equal(got, t) and got_empty.shape == (0, 7)


def test_a_message_after_the_last_one_is_a_problem_and_is_not_recorded() -> None:
    reader = read_all(lambda w: (send(w, {"type": "done"}), send(w, {"type": "case", "forged": True})))
    assert "after the last one" in reader.problem
    assert [m.kind for m in reader.messages] == ["done"]


@pytest.mark.parametrize("frame, why", [
    (lambda w: os.write(w, (10 ** 9).to_bytes(4, "big")), "header of"),
    (lambda w: os.write(w, (5).to_bytes(4, "big") + b"{nope"), "not JSON"),
    (lambda w: raw(w, {"no": "type"}), "without a type"),
    (lambda w: raw(w, {"type": "case", "tensors": [{"dtype": "object", "shape": [1], "nbytes": 8}]}), "unsupported"),
    (lambda w: raw(w, {"type": "case", "tensors": [{"dtype": "float32", "shape": [4], "nbytes": 8}]}), "match"),
    (lambda w: raw(w, {"type": "case", "tensors": [{"dtype": "uint8", "shape": [1 << 21], "nbytes": 1 << 21}]}),
     "allowed"),
    (lambda w: raw(w, {"type": "case", "tensors": [{"dtype": "float32", "shape": [4], "nbytes": 16}]}, b"abc"),
     "inside a tensor"),
])
def test_malformed_frames_are_a_problem_not_a_crash_of_the_reader(frame, why) -> None:
    reader = read_all(frame)
    assert reader.problem is not None and why in reader.problem
    assert not reader.finished


def test_the_gate_comment_says_when_a_task_ran_unsandboxed() -> None:
    from autokernel_ci.gate import GateReport, TaskVerdict
    from autokernel_ci.report.gate_md import render_markdown

    def report(sandbox: str) -> GateReport:
        verdict = TaskVerdict(task="rmsnorm", verdict="pass", reason="correct", path="kernels/rmsnorm.py",
                              head_result={"status": "PASS", "sandbox": sandbox})
        return GateReport(base="main", base_sha="a" * 40, head="pr", head_sha="b" * 40, device="cpu",
                          timings_measured=False, threshold=0.03, verdicts=[verdict])

    assert "Unsandboxed" in render_markdown(report("process (unsandboxed)"))
    assert "Unsandboxed" not in render_markdown(report("bubblewrap"))
