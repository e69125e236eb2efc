"""Device facts, cached ceilings with datasheet fallbacks, and percent of roofline."""

from __future__ import annotations

import json

import pytest
import torch

from autokernel_ci.errors import HarnessError
from autokernel_ci.harness import device
from autokernel_ci.harness.device import (
    Ceilings,
    calibrate,
    ceiling_kind,
    ceilings_path,
    datasheet_ceilings,
    device_info,
    get_ceilings,
    pct_of_roofline,
)

H100 = "NVIDIA H100 80GB HBM3"


def measured(name: str = H100, bandwidth: float = 3.0e12) -> Ceilings:
    flops = {"bf16": 700e12, "fp16": 700e12, "tf32": 350e12, "fp32": 50e12}
    return Ceilings(name, bandwidth, flops, source="measured", measured_at="2025-01-01T00:00:00+00:00")


@pytest.mark.skipif(torch.cuda.is_available(), reason="describes the machine without a GPU")
def test_device_info_without_a_gpu_describes_the_cpu_and_the_interpreter():
    info = device_info()
    assert info.kind == "cpu" and info.interpreter
    assert info.label == "cpu (Triton interpreter)"
    assert info.torch_version == torch.__version__ and info.python_version
    assert info.sm_count is None and info.capability is None
    env = info.as_environment()
    assert env["kind"] == "cpu" and "capability" not in env
    assert json.loads(json.dumps(info.to_dict()))["name"] == info.name


@pytest.mark.parametrize(
    ("name", "bandwidth", "bf16"),
    [
        (H100, 3.35e12, 989e12),
        ("NVIDIA H100 PCIe", 2.0e12, 756e12),
        ("NVIDIA H100 NVL", 3.9e12, 835e12),
        ("NVIDIA H200", 4.8e12, 989e12),
        ("NVIDIA A100-SXM4-80GB", 2.039e12, 312e12),
        ("NVIDIA A100-SXM4-40GB", 1.555e12, 312e12),
        ("NVIDIA A100 80GB PCIe", 1.935e12, 312e12),
        ("NVIDIA L4", 0.3e12, 121e12),
        ("NVIDIA L40S", 0.864e12, 362e12),
    ],
)
def test_datasheet_ceilings_follow_the_device_name(name, bandwidth, bf16):
    ceilings = datasheet_ceilings(name)
    assert ceilings.source == "datasheet" and ceilings.device == name
    assert ceilings.bandwidth_bytes_per_s == pytest.approx(bandwidth)
    assert ceilings.flops_per_s["bf16"] == pytest.approx(bf16)


def test_h100_datasheet_separates_strict_fp32_from_tf32():
    flops = datasheet_ceilings(H100).flops_per_s
    assert flops["fp32"] == pytest.approx(67e12) and flops["tf32"] == pytest.approx(494e12)


def test_unknown_device_has_no_datasheet():
    assert datasheet_ceilings("Some Future Accelerator") is None
    assert get_ceilings("Some Future Accelerator", cache_dir="/nonexistent") is None


def test_measured_ceilings_in_the_cache_win_over_the_datasheet(tmp_path):
    path = ceilings_path(H100, tmp_path)
    assert path == tmp_path / "ceilings" / "NVIDIA-H100-80GB-HBM3.json"
    assert get_ceilings(H100, cache_dir=tmp_path).source == "datasheet"
    device._write_json(path, measured().to_dict())
    ceilings = get_ceilings(H100, cache_dir=tmp_path)
    assert ceilings == measured()


def test_cache_directory_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOKERNEL_CACHE_DIR", str(tmp_path))
    assert ceilings_path(H100) == tmp_path / "ceilings" / "NVIDIA-H100-80GB-HBM3.json"
    monkeypatch.delenv("AUTOKERNEL_CACHE_DIR")
    assert ceilings_path(H100).parts[-4:] == (".cache", "autokernel-ci", "ceilings", "NVIDIA-H100-80GB-HBM3.json")


def test_a_corrupt_cache_file_falls_back_to_the_datasheet(tmp_path):
    path = ceilings_path(H100, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert get_ceilings(H100, cache_dir=tmp_path).source == "datasheet"


def test_device_names_become_safe_file_names(tmp_path):
    assert ceilings_path("../../etc/passwd", tmp_path).parent == tmp_path / "ceilings"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_calibrate_without_a_gpu_explains_itself(tmp_path):
    with pytest.raises(HarnessError, match="CUDA"):
        calibrate(tmp_path)
    assert get_ceilings() is None


def test_memory_bound_roofline_divides_bytes_by_bandwidth():
    # 3 GB in 1.25 ms on a 3 TB/s device: the bandwidth limit is 1 ms, so 80 %.
    pct, source = pct_of_roofline(3_000_000_000, None, "fp32", 1.25e-3, measured(), "memory")
    assert pct == pytest.approx(80.0) and source == "measured"


def test_compute_bound_roofline_uses_the_dtype_peak():
    flops = 2 * 8192**3
    pct, source = pct_of_roofline(None, flops, torch.bfloat16, flops / 350e12, measured(), "compute")
    assert pct == pytest.approx(50.0) and source == "measured"
    tf32, _ = pct_of_roofline(None, flops, "tf32", flops / 350e12, measured(), "compute")
    assert tf32 == pytest.approx(100.0)


def test_roofline_bound_takes_the_slower_of_memory_and_compute():
    ceilings = measured()
    # 1 GB (0.333 ms at 3 TB/s) and 70 GFLOP (0.1 ms at 700 TFLOP/s): memory bounds it.
    pct, _ = pct_of_roofline(1_000_000_000, 70_000_000_000, "bf16", 1e-3, ceilings, "roofline")
    assert pct == pytest.approx(100 / 3)


def test_roofline_is_none_without_ceilings_or_the_numbers_it_needs():
    assert pct_of_roofline(100, 100, "fp32", 1.0, None, "memory") == (None, None)
    assert pct_of_roofline(None, 100, "fp32", 1.0, measured(), "memory") == (None, None)
    assert pct_of_roofline(100, 100, "fp64", 1.0, measured(), "compute") == (None, None)


def test_roofline_refuses_nonsense_times_and_bounds():
    with pytest.raises(ValueError, match="seconds"):
        pct_of_roofline(100, None, "fp32", 0.0, measured(), "memory")
    with pytest.raises(ValueError, match="bound"):
        pct_of_roofline(100, None, "fp32", 1.0, measured(), "latency")


def test_dtype_names_map_to_ceiling_kinds():
    assert ceiling_kind(torch.float16) == "fp16" and ceiling_kind("bf16") == "bf16"
    assert ceiling_kind(torch.float32) == "fp32" and ceiling_kind(torch.float64) is None


def test_ceilings_round_trip_through_json():
    ceilings = measured()
    assert Ceilings.from_dict(json.loads(json.dumps(ceilings.to_dict()))) == ceilings


# --- on a GPU ----------------------------------------------------------------------------------


def test_a_ceiling_beaten_by_a_trusted_measurement_is_remeasured_and_the_note_says_so(tmp_path):
    ceilings = measured()
    device._write_json(ceilings_path(H100, tmp_path), ceilings.to_dict())
    # cuBLAS at 4096³ ran at 730 TFLOP/s against a calibrated 700: the re-measure finds 740.
    raised, note = device.recheck(ceilings, "bf16", 730e12, "cuBLAS at 4096×4096×4096", tmp_path,
                                  measure=lambda name: 740e12)
    assert raised.flops_per_s["bf16"] == 740e12 and raised.flops_per_s["fp16"] == 700e12
    assert "above the bf16 matmul ceiling of 700.0" in note and "re-measured 740.0 TFLOP/s" in note
    assert get_ceilings(H100, cache_dir=tmp_path).flops_per_s["bf16"] == 740e12  # cached
    assert get_ceilings(H100, cache_dir=tmp_path).details["rechecks"] == [note]
    pct, _ = pct_of_roofline(None, 2 * 4096**3, "bf16", 2 * 4096**3 / 730e12, raised, "compute")
    assert pct <= 100.0


def test_a_remeasure_that_still_falls_short_takes_the_rate_that_was_reached(tmp_path):
    ceilings = measured(bandwidth=3.0e12)
    raised, note = device.recheck(ceilings, "bandwidth", 3.1e12, "torch copy", tmp_path, measure=lambda n: 3.05e12)
    assert raised.bandwidth_bytes_per_s == 3.1e12 and "still below it" in note
    unchanged, none = device.recheck(raised, "bandwidth", 3.0e12, "torch copy", tmp_path,
                                     measure=lambda n: pytest.fail("measured although nothing beat the ceiling"))
    assert unchanged is raised and none == ""


def test_calibration_covers_the_libraries_matmul_benchmark_shapes():
    from autokernel_ci.ops import get_op

    shapes = device.matmul_shapes()
    for shape in get_op("matmul").bench_shapes:
        assert (shape["M"], shape["K"], shape["N"]) in shapes
    assert len(shapes) == len(set(shapes)) >= 3


@pytest.mark.gpu
def test_gpu_device_info_reports_the_card():
    info = device_info()
    assert info.kind == "cuda" and info.sm_count > 0 and info.l2_bytes > 0
    assert info.capability and info.cuda_version and info.memory_bytes > 0


@pytest.mark.gpu
def test_gpu_calibration_lands_near_the_datasheet_and_is_cached(tmp_path):
    ceilings = calibrate(tmp_path)
    assert ceilings.source == "measured"
    assert get_ceilings(cache_dir=tmp_path) == ceilings
    sheet = datasheet_ceilings(ceilings.device)
    if sheet is not None:
        assert 0.5 < ceilings.bandwidth_bytes_per_s / sheet.bandwidth_bytes_per_s < 1.1
        for kind in ("bf16", "fp16", "tf32", "fp32"):
            assert 0.3 < ceilings.flops_per_s[kind] / sheet.flops_per_s[kind] < 1.15, kind
    # Strict fp32 must not have run on TF32 tensor cores.
    assert ceilings.flops_per_s["tf32"] > 2 * ceilings.flops_per_s["fp32"]
