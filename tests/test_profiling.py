"""Profiling a model: op families and their built-ins, module paths, shares, costs, the ranked plan,
and turning the plan's hot ops into tasks the loop can work on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autokernel_ci.config import load_config
from autokernel_ci.errors import AutokernelError, TaskError
from autokernel_ci.harness.device import Ceilings
from autokernel_ci.orchestrate import Outcome, extract_tasks, optimize_model, rank
from autokernel_ci.profiling import (
    CPU_NOTE,
    ModuleCall,
    OpRecord,
    Plan,
    build_plan,
    classify,
    collapse_path,
    load_plan,
    model_target,
    profile_model,
)
from autokernel_ci.tasks import ModelTarget

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CONFIG = EXAMPLES / ".autokernel.yml"


@pytest.fixture(scope="module")
def llama_plan() -> Plan:
    return profile_model(model_target("llama-tiny", CONFIG)[0], steps=2, warmup=1)


def test_profile_of_the_example_llama_maps_its_ops_to_the_built_ins(llama_plan: Plan) -> None:
    plan = llama_plan
    assert plan.time_kind == "cpu" and plan.note == CPU_NOTE and plan.ceilings_source is None
    assert plan.model == "llama-tiny" and plan.dtype == "fp32" and plan.inputs == ["int64[1, 8]"]
    by_family = {e.family: e for e in plan.entries}
    assert {f: e.builtin for f, e in by_family.items() if f in ("rmsnorm", "rope", "swiglu", "matmul", "attention")} \
        == {"rmsnorm": "rmsnorm", "rope": "rope", "swiglu": "swiglu", "matmul": "matmul", "attention": None}
    # calls per forward: 2 layers × 2 norms + the final norm; q and k rotated per layer; 7 linears per layer + head
    assert {f: by_family[f].calls for f in ("rmsnorm", "rope", "swiglu", "matmul", "attention")} == \
        {"rmsnorm": 5, "rope": 4, "swiglu": 2, "matmul": 15, "attention": 2}
    assert by_family["rmsnorm"].shapes == [{"shape": {"rows": 8, "dim": 32}, "dtype": "fp32", "calls": 5}]
    assert by_family["rope"].shapes[0]["shape"] == {"B": 1, "H": 2, "S": 8, "D": 16}
    assert by_family["swiglu"].shapes[0]["shape"] == {"rows": 8, "dim": 64}
    assert set(by_family["rmsnorm"].modules) == {"layers.*.attention_norm", "layers.*.ffn_norm", "norm"}
    assert by_family["attention"].note == "no built-in yet"
    assert sum(e.share for e in plan.entries) == pytest.approx(1.0)
    assert plan.total_us == pytest.approx(sum(e.self_time_us for e in plan.entries))
    # one fused RMSNorm reads x, writes y and reads the weight: (2·8·32 + 32) fp32 values, 5 times
    assert by_family["rmsnorm"].bytes == 5 * (2 * 8 * 32 + 32) * 4
    assert by_family["rmsnorm"].expected_speedup_source == "prior" and by_family["rmsnorm"].pct_roofline is None


def test_the_plan_ranks_built_in_ops_by_end_to_end_saving_and_round_trips_as_json(llama_plan: Plan,
                                                                                  tmp_path: Path) -> None:
    ranked = rank(llama_plan)
    assert {t.op for t in ranked} == {"rmsnorm", "rope", "swiglu", "matmul"}
    savings = [t.potential_saving for t in ranked]
    assert savings == sorted(savings, reverse=True)
    path = tmp_path / "plan.json"
    path.write_text(llama_plan.to_json())
    again = load_plan(path)
    assert [e.family for e in again.entries] == [e.family for e in llama_plan.entries]
    assert json.loads(path.read_text())["entries"][0]["note"]


def test_module_paths_collapse_layer_indices(llama_plan: Plan) -> None:
    paths = {m.path for m in llama_plan.modules}
    assert {"layers.*.attention.rotary", "layers.*.feed_forward", "output", "norm"} <= paths
    assert collapse_path("layers.12.mlp.0") == "layers.*.mlp.*" and collapse_path("") == "(model)"


def test_gpt2_layernorm_maps_to_the_built_in_and_gelu_has_none_yet() -> None:
    plan = profile_model(model_target("gpt2-tiny", CONFIG)[0], steps=1, warmup=1)
    by_family = {e.family: e for e in plan.entries}
    assert by_family["layernorm"].builtin == "layernorm" and by_family["layernorm"].calls == 5
    assert by_family["gelu"].builtin is None and by_family["embedding"].calls == 2


def test_a_chrome_trace_is_written_when_asked(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    profile_model(model_target("gpt2-tiny", CONFIG)[0], steps=1, warmup=1, trace=trace)
    assert "traceEvents" in json.loads(trace.read_text())


# -- grouping rules, on synthetic records --------------------------------------------------------------------


def record(name: str, time_us: float, module: ModuleCall | None = None, shapes=None, annotation=None) -> OpRecord:
    return OpRecord(name=name, time_us=time_us, modules=(module,) if module else (), annotation=annotation,
                    input_shapes=shapes or [], input_dtypes=["bf16"] * len(shapes or []), concrete=[])


def test_an_rmsnorm_written_out_in_a_module_of_any_name_is_recognised_by_its_ops() -> None:
    norm = ModuleCall(7, "blocks.0.n", "Normalizer", (4, 64), "bf16")
    ops = [record(n, 1.0, norm, [[4, 64]]) for n in ("pow", "mean", "add", "rsqrt", "mul", "mul")]
    assert {c.family for c in classify(ops)} == {"rmsnorm"}


def test_silu_and_the_mul_after_it_are_a_swiglu_and_other_muls_are_not() -> None:
    mlp = ModuleCall(3, "mlp", "MLP", (4, 64), "bf16")
    ops = [record("linear", 5.0, mlp, [[4, 64], [128, 64]]), record("silu", 1.0, mlp, [[4, 128]]),
           record("linear", 5.0, mlp, [[4, 64], [128, 64]]), record("mul", 1.0, mlp, [[4, 128], [4, 128]]),
           record("mul", 1.0, mlp, [[4, 64], [4, 64]])]
    assert [c.family for c in classify(ops)] == ["matmul", "swiglu", "matmul", "swiglu", "elementwise"]


def test_an_autokernel_annotation_names_the_op_outright() -> None:
    ops = [record("mul", 1.0, annotation="rope"), record("cat", 1.0, annotation="rope"), record("mul", 1.0)]
    assert [c.family for c in classify(ops)] == ["rope", "rope", "elementwise"]


def test_with_ceilings_the_gap_to_the_roofline_sets_the_expected_speedup() -> None:
    ceilings = Ceilings(device="test", bandwidth_bytes_per_s=1e12, flops_per_s={"bf16": 1e14}, source="measured")
    norm = ModuleCall(1, "norm", "RMSNorm", (1024, 1024), "bf16")
    # 2·1024·1024 + 1024 bf16 values ≈ 4.2 MB: 4.2 µs at 1 TB/s, measured 42 µs → 10 % of roofline
    records = [record("pow", 21.0, norm, [[1024, 1024]]), record("mul", 21.0, norm, [[1024, 1024]])]
    mm = [record("linear", 100.0, None, [[1024, 1024], [1024, 1024]])]
    plan = build_plan(records + mm, steps=1, ceilings=ceilings, time_kind="gpu")
    norm_entry, mm_entry = plan.entry("rmsnorm"), plan.entry("matmul")
    assert norm_entry.bound == "memory" and norm_entry.pct_roofline == pytest.approx(10.0, rel=0.01)
    assert norm_entry.expected_speedup == pytest.approx(8.0) and norm_entry.expected_speedup_source == "roofline"
    assert mm_entry.bound == "compute"  # 2·1024³ flops at 100 TFLOP/s: 21 µs, more than its 6 MB at 1 TB/s
    assert plan.ceilings_source == "measured"


def test_a_record_without_input_dtypes_takes_its_modules_or_the_models_dtype() -> None:
    # Some torch builds record no input dtypes on profiler events; a bf16 matmul must not be judged
    # against the fp32 ceiling (it showed as 1322% of roofline on an H100 with torch 2.11).
    ceilings = Ceilings(device="test", bandwidth_bytes_per_s=3e12, flops_per_s={"bf16": 1e15, "fp32": 5e13},
                        source="measured")
    bare = OpRecord(name="linear", time_us=4.0, modules=(), annotation=None,
                    input_shapes=[[1024, 1024], [1024, 1024]], input_dtypes=[], concrete=[])
    in_module = OpRecord(name="mm", time_us=4.0, modules=(ModuleCall(2, "proj", "Linear", (1024, 1024), "fp16"),),
                         annotation=None, input_shapes=[[1024, 1024], [1024, 1024]], input_dtypes=[], concrete=[])
    plan = build_plan([bare], steps=1, ceilings=ceilings, time_kind="gpu", model_dtype="bf16")
    entry = plan.entry("matmul")
    # 2·1024³ flops in 4 µs = 537 TFLOP/s: 54% of the bf16 ceiling, not 1074% of the fp32 one.
    assert entry.dtype == "bf16" and entry.pct_roofline == pytest.approx(53.7, rel=0.01)
    assert build_plan([in_module], steps=1, ceilings=ceilings, time_kind="gpu", model_dtype="bf16").entry(
        "matmul").dtype == "fp16"
    assert build_plan([bare], steps=1, ceilings=None, time_kind="cpu").entry("matmul").dtype == "fp32"


# -- model targets and their errors ------------------------------------------------------------------------


def test_an_unknown_model_name_is_one_clear_error_with_a_suggestion() -> None:
    with pytest.raises(AutokernelError, match=r"unknown model 'lama-tiny' \(did you mean 'llama-tiny'\?\)"):
        model_target("lama-tiny", CONFIG)


def test_a_failing_factory_names_the_factory_and_the_error() -> None:
    target = ModelTarget(name="bad", factory="models.llama:build", dtype="fp32", root=EXAMPLES)
    with pytest.raises(TaskError, match=r"factory models.llama:build of model 'bad' failed: ValueError: unknown size"):
        profile_model(target, factory_kwargs={"size": "huge"})


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autokernel_ci", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_profile_command_prints_the_table_and_writes_the_plan(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    proc = cli("profile", "--config", str(CONFIG), "--model", "llama-tiny", "--json", str(out), "--steps", "1")
    assert proc.returncode == 0, proc.stderr
    assert "time by op family" in proc.stdout and "CPU time (no GPU)" in proc.stdout
    assert "no built-in yet" in proc.stdout and "ranked by end-to-end saving" in proc.stdout
    assert {e["family"] for e in json.loads(out.read_text())["entries"]} >= {"rmsnorm", "rope", "swiglu"}
    bad = cli("profile", "--config", str(CONFIG), "--model", "nope")
    assert bad.returncode == 2 and "unknown model 'nope'" in bad.stderr and "Traceback" not in bad.stderr


# -- extraction --------------------------------------------------------------------------------------------


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    from autokernel_ci.loop import init_repository

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo, ignore=shutil.ignore_patterns("__pycache__", "autokernel-out"))
    init_repository(repo)
    return repo


def git_status(repo: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout


def test_extraction_seeds_kernel_files_and_config_entries_at_the_models_shapes(llama_plan: Plan,
                                                                              example_repo: Path) -> None:
    config = example_repo / ".autokernel.yml"
    ranked = rank(llama_plan, ops=["rmsnorm", "rope", "swiglu"])
    extracted = {t.op: t for t in extract_tasks(ranked, config, commit=True, model="llama-tiny")}
    assert not extracted["rmsnorm"].added_entry  # the config already has an rmsnorm kernel: reused
    assert extracted["rope"].created_file and extracted["rope"].path == example_repo / "kernels" / "rope.py"
    from autokernel_ci.ops import starter_source

    assert extracted["rope"].path.read_text() == starter_source("rope")
    cfg = load_config(config)
    rope = cfg.kernel("rope")
    assert rope.op == "rope" and rope.bench_shapes == [{"B": 1, "H": 2, "S": 8, "D": 16}]
    assert cfg.kernel("swiglu").bench_shapes == [{"rows": 8, "dim": 64}]
    assert [m.name for m in cfg.models] == ["llama", "llama-tiny", "gpt2", "gpt2-tiny"]  # the rest is as it was
    assert git_status(example_repo) == ""  # committed: the loop needs a clean tree
    # Running it again changes nothing.
    again = extract_tasks(rank(llama_plan, ops=["rope"]), config, commit=True)
    assert not again[0].added_entry and not again[0].created_file


def test_optimize_model_profiles_extracts_and_runs_the_tasks_by_rank(example_repo: Path) -> None:
    calls: list[tuple[str, float]] = []

    def run_task(task, minutes):
        calls.append((task.task, minutes))
        return [] if len(calls) > 1 else [Outcome(10.0, kept=True, experiment=False), Outcome(9.0, kept=True)]

    result = optimize_model("llama-tiny", example_repo / ".autokernel.yml", budget_minutes=30.0, min_share=0.0,
                            out=example_repo / "autokernel-out", run_task=run_task)
    assert [t.op for t in result.ranked] and calls[0][0] == result.ranked[0].task
    assert {t.op for t in result.extracted} == {"rmsnorm", "rope", "swiglu"}  # the model's `swap` list
    assert json.loads(result.paths["plan"].read_text())["model"] == "llama-tiny"
    assert json.loads(result.paths["orchestrate"].read_text())["tasks"][0]["stop_reason"]
