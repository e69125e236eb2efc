"""The swapped ops under torch.compile: no graph breaks, no recompiles (also on the fallback path that
used to mutate a counter inside the compiled region), and the swap set under compile decided by timing."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from autokernel_ci import compile_check, runtime
from autokernel_ci.compile_check import CompileWatch, judge
from autokernel_ci.profiling import model_target
from autokernel_ci.verify import TimingOptions, verify_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from models import gpt2, llama  # noqa: E402

LLAMA_OPS = ("rmsnorm", "rope", "swiglu")


def patched(build, ops, **kwargs):
    model, (tokens,) = build(**kwargs)
    model = model.eval()
    swapped = copy.deepcopy(model)
    report = runtime.apply(swapped, ops=ops)
    return model, swapped, report, tokens


def test_the_patched_llama_compiles_without_breaks_or_recompiles_on_the_kernel_path() -> None:
    model, swapped, report, tokens = patched(llama.build_tiny, LLAMA_OPS, seq_len=8)
    assert report.ops() == {"rmsnorm": 5, "rope": 2, "swiglu": 2}
    watch = CompileWatch(torch.compile(swapped, backend="eager"), "patched+compile")
    report.reset_counts()
    with torch.inference_mode():
        outs = [watch(tokens) for _ in range(4)]
        expected = model(tokens)
    assert watch.stats.graph_breaks == 0, watch.stats.break_reasons
    assert watch.stats.recompiles == 0 and watch.stats.frames == 1 and watch.stats.calls == 4
    assert report.kernel_calls() == {"rmsnorm": 20, "rope": 16, "swiglu": 8}  # the kernels ran, every call
    assert all(torch.allclose(o, expected, atol=1e-4, rtol=1e-4) for o in outs)


def test_the_fallback_path_does_not_recompile_under_compile() -> None:
    # With autograd recording every swapped module falls back to its original forward. The fallback
    # used to bump a counter on the module inside the compiled region (dynamo guards on it: one
    # recompile a call, up to the recompile limit) and to build a bound method (a graph break).
    model, swapped, report, tokens = patched(llama.build_tiny, LLAMA_OPS, seq_len=8)
    watch = CompileWatch(torch.compile(swapped, backend="eager"), "patched+compile")
    with torch.enable_grad():
        outs = [watch(tokens) for _ in range(10)]
        expected = model(tokens)
    assert watch.stats.graph_breaks == 0, watch.stats.break_reasons
    assert watch.stats.recompiles == 0
    assert report.kernel_calls() == {"rmsnorm": 0, "rope": 0, "swiglu": 0}
    assert all(torch.allclose(o, expected, atol=1e-5) for o in outs)
    assert outs[-1].requires_grad  # the original forward ran, with autograd


def test_new_sequence_lengths_do_not_recompile_with_dynamic_shapes() -> None:
    model, swapped, report, tokens = patched(llama.build_tiny, LLAMA_OPS, seq_len=8)
    watch = CompileWatch(torch.compile(swapped, backend="aot_eager", dynamic=True), "patched+compile")
    with torch.inference_mode():
        for seq in (8, 6, 5, 3):
            x = torch.tensor(tokens[:, :seq].tolist())  # (a slice keeps the old stride: a new guard)
            assert torch.allclose(watch(x), model(x), atol=1e-4, rtol=1e-4)
    assert watch.stats.graph_breaks == 0 and watch.stats.recompiles == 0
    assert sum(report.kernel_calls().values()) == 4 * (5 + 4 + 2)


def test_the_patched_gpt2_compiles_in_one_graph_and_recompiles_no_more_than_the_original() -> None:
    model, swapped, report, tokens = patched(gpt2.build_tiny, ("layernorm",))
    assert report.ops()["layernorm"] >= 3
    original = CompileWatch(torch.compile(model, backend="eager"), "compile")
    watch = CompileWatch(torch.compile(swapped, backend="eager"), "patched+compile")
    with torch.inference_mode():
        for seq in (tokens.shape[1], tokens.shape[1] - 1, tokens.shape[1] - 2):
            original(torch.tensor(tokens[:, :seq].tolist()))
            watch(torch.tensor(tokens[:, :seq].tolist()))
    # A first new length makes dynamo compile once more with dynamic sizes, for any model: no more here.
    assert watch.stats.graph_breaks == 0
    assert watch.stats.recompiles == original.stats.recompiles <= 1


# -- the swap set under compile ---------------------------------------------------------------------


def test_an_op_is_kept_under_compile_only_when_it_makes_the_compiled_model_faster() -> None:
    kept = judge("rmsnorm", 1000.0, 10.0, 900.0, 10.0)
    assert kept.kept and kept.reason.startswith("kept") and "1.111×" in kept.reason
    slower = judge("rope", 1000.0, 10.0, 1100.0, 10.0)
    assert not slower.kept and "left to torch.compile" in slower.reason and "slower" in slower.reason
    within_noise = judge("swiglu", 1000.0, 50.0, 985.0, 50.0)  # 1.5 % faster, but the spreads overlap
    assert not within_noise.kept and "spread" in within_noise.reason
    too_little = judge("swiglu", 1000.0, 0.0, 995.0, 0.0)  # clear of noise, but under the 1 % bar
    assert not too_little.kept
    broken = judge("rope", 1000.0, 10.0, None, None, error="RuntimeError: boom")
    assert not broken.kept and "boom" in broken.reason


def test_describe_names_the_ops_left_to_compile_and_says_when_nothing_was_measured() -> None:
    decisions = [judge("rmsnorm", 1000.0, 1.0, 900.0, 1.0), judge("rope", 1000.0, 1.0, 1200.0, 1.0)]
    lines = compile_check.describe(decisions, True, {"rmsnorm": 5, "rope": 2})
    assert lines[-1] == "swap set under torch.compile: rmsnorm"
    assert any(line.startswith("under torch.compile, rope: left to torch.compile") for line in lines)
    unmeasured = compile_check.describe([], False, {"rmsnorm": 5})
    assert "not decided by measurement" in unmeasured[0]


@pytest.fixture(scope="module")
def llama_tiny():
    return model_target("llama-tiny", EXAMPLES / ".autokernel.yml")[0]


def test_verify_measures_the_swap_set_under_compile_and_reports_breaks_and_recompiles(llama_tiny) -> None:
    result = verify_model(llama_tiny, ops=["rmsnorm", "swiglu"], seeds=(), compile_backend="aot_eager",
                          timing=TimingOptions(warmup_ms=1, rep_ms=1, min_reps=3, max_reps=3),
                          factory_kwargs={"seq_len": 4}, compile_swaps="measure")
    assert result.passed, result.message
    choice = result.compile_choice
    assert [d["op"] for d in choice["decisions"]] == ["rmsnorm", "swiglu"]
    assert all(d["reason"].startswith(("kept", "left to torch.compile")) for d in choice["decisions"])
    assert set(choice["ops"]) <= {"rmsnorm", "swiglu"} and choice["median_us"] > 0
    assert any(n.startswith("swap set under torch.compile:") for n in result.notes)
    # every compiled variant, the one-op ones too, traced in one graph and never recompiled
    assert {"compile", "patched+compile", "compile with rmsnorm swapped", "compile with swiglu swapped"} \
        <= set(result.compile_stats)
    assert all(s["graph_breaks"] == 0 and s["recompiles"] == 0 for s in result.compile_stats.values())
    assert any(n.startswith("under torch.compile, patched+compile: 0 graph breaks, 0 recompiles over ")
               for n in result.notes), result.notes
    assert result.speedups["chosen swap set + compile vs compile"] is not None


@pytest.mark.gpu
def test_gpu_the_patched_llama_replays_in_cuda_graphs_under_compile() -> None:
    # CUDA-graph safe: the custom ops allocate their outputs and launch on the current stream, so
    # dynamo's cudagraphs backend (cudagraph trees) captures and replays them.
    model, swapped, report, tokens = patched(llama.build_tiny, LLAMA_OPS, seq_len=8)
    model, swapped, tokens = model.cuda(), swapped.cuda(), tokens.cuda()
    watch = CompileWatch(torch.compile(swapped, backend="cudagraphs"), "patched+cudagraphs")
    with torch.inference_mode():
        expected = model(tokens)
        outs = [watch(tokens).clone() for _ in range(5)]
    assert watch.stats.graph_breaks == 0 and watch.stats.recompiles == 0
    assert all(torch.allclose(o, expected, atol=1e-3, rtol=1e-3) for o in outs)
