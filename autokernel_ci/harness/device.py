"""The machine: what device runs the kernels, and the ceilings a percent-of-roofline divides by.

`device_info` describes the GPU (or, without one, the CPU and the Triton interpreter) and the
software stack, for every result's environment. `calibrate` measures this GPU's ceilings: copy
bandwidth (device-to-device copies of 256 MiB to 2 GiB, bytes read plus bytes written) and dense
matmul rate for bf16, fp16, tf32 and strict fp32, on random data, since zeros let the tensor cores
draw less power and clock higher than any real workload. Each ceiling is the best of several sizes
(for matmul, 8192³ and the shapes the op library benchmarks) and of three timed blocks at each: a
ceiling is what the card can sustain, so a kernel timed at the library's own shapes cannot beat it
merely because one calibration ran while the clocks were low. `recheck` re-measures a ceiling that a
trusted measurement beat, and says so. The measurement is cached as JSON per device
name under `<cache>/ceilings/`, where `<cache>` is `$AUTOKERNEL_CACHE_DIR` or
`~/.cache/autokernel-ci`. `get_ceilings` returns the cached measurement or, failing that, the
vendor's datasheet numbers, labelled as such: a datasheet peak is rarely reachable, so a percentage
of it reads low.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from autokernel_ci.errors import HarnessError

CACHE_ENV = "AUTOKERNEL_CACHE_DIR"
DEFAULT_CACHE = Path("~/.cache/autokernel-ci")

COPY_BYTES = 1024**3
COPY_SIZES = (256 * 1024**2, 1024**3, 2 * 1024**3)
MATMUL_N = 8192
# (M, K, N): a square 8192³ and the op library's matmul benchmark shapes (added at run time)
MATMUL_SHAPES: tuple[tuple[int, int, int], ...] = ((8192, 8192, 8192), (4096, 4096, 4096), (8192, 4096, 16384))
BLOCKS = 3
MATMUL_KINDS = ("bf16", "fp16", "tf32", "fp32")  # fp32: strict IEEE, no TF32


@dataclass
class DeviceInfo:
    """The device kernels run on and the software around it; None where it does not apply."""

    kind: str  # "cuda" or "cpu"
    name: str
    capability: str | None  # "9.0"
    sm_count: int | None
    l2_bytes: int | None
    memory_bytes: int | None
    driver_version: str | None
    cuda_version: str | None  # the CUDA runtime torch was built with
    torch_version: str
    triton_version: str | None
    python_version: str
    platform: str
    cpu_count: int | None = None
    interpreter: bool = False  # Triton kernels run under TRITON_INTERPRET=1

    @property
    def label(self) -> str:
        if self.kind == "cpu":
            return "cpu (Triton interpreter)" if self.interpreter else "cpu"
        return f"{self.name} (sm_{(self.capability or '').replace('.', '')}, {self.sm_count} SMs)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_environment(self) -> dict[str, str]:
        """Flat strings for `EvalResult.environment`."""
        return {k: str(v) for k, v in asdict(self).items() if v is not None}


def device_info(device: Any = None) -> DeviceInfo:
    """Describe the CUDA device (`device` or the current one), or the CPU when torch sees no GPU."""
    import torch

    common = dict(
        torch_version=torch.__version__,
        triton_version=_package_version("triton"),
        python_version=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
    )
    if not torch.cuda.is_available():
        return DeviceInfo(
            kind="cpu",
            name=_cpu_name(),
            capability=None,
            sm_count=None,
            l2_bytes=None,
            memory_bytes=_host_memory_bytes(),
            driver_version=None,
            cuda_version=None,
            interpreter=True,
            **common,
        )
    index = torch.cuda.current_device() if device is None else torch.device(device).index
    props = torch.cuda.get_device_properties(index if index is not None else torch.cuda.current_device())
    return DeviceInfo(
        kind="cuda",
        name=props.name,
        capability=f"{props.major}.{props.minor}",
        sm_count=int(props.multi_processor_count),
        l2_bytes=int(getattr(props, "L2_cache_size", 0) or 0) or None,
        memory_bytes=int(props.total_memory),
        driver_version=_nvidia_driver_version(),
        cuda_version=torch.version.cuda,
        interpreter=os.environ.get("TRITON_INTERPRET") == "1",
        **common,
    )


def _package_version(name: str) -> str | None:
    # From the metadata, not `import triton`: importing it here would fix TRITON_INTERPRET too early.
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def _host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _nvidia_driver_version() -> str | None:
    with contextlib.suppress(OSError):
        match = re.search(r"Kernel Module\s+([\d.]+)", Path("/proc/driver/nvidia/version").read_text())
        if match:
            return match.group(1)
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


# --- ceilings ------------------------------------------------------------------------------------


@dataclass
class Ceilings:
    """The fastest this device moves bytes and does maths, measured here or quoted from a datasheet."""

    device: str
    bandwidth_bytes_per_s: float
    flops_per_s: dict[str, float]  # keys from MATMUL_KINDS; "fp32" is strict fp32, "tf32" the tensor cores
    source: str  # "measured" or "datasheet"
    measured_at: str = ""  # ISO 8601, for measured ceilings
    details: dict[str, Any] = field(default_factory=dict)  # how it was measured: sizes, samples, versions

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ceilings:
        return cls(
            device=str(data["device"]),
            bandwidth_bytes_per_s=float(data["bandwidth_bytes_per_s"]),
            flops_per_s={str(k): float(v) for k, v in data["flops_per_s"].items()},
            source=str(data["source"]),
            measured_at=str(data.get("measured_at", "")),
            details=dict(data.get("details", {})),
        )


def _datasheet(bandwidth_tb_s: float, bf16: float, tf32: float, fp32: float) -> dict[str, Any]:
    """Dense (not 2:4 sparse) peaks in TFLOP/s; fp16 tensor-core peak equals bf16 on these parts."""
    tera = 1e12
    flops = {"bf16": bf16 * tera, "fp16": bf16 * tera, "tf32": tf32 * tera, "fp32": fp32 * tera}
    return {"bandwidth_bytes_per_s": bandwidth_tb_s * tera, "flops_per_s": flops}


# First match wins, so the more specific names come first. Patterns match torch's device names
# ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 PCIe", …), case-insensitively.
DATASHEETS: tuple[tuple[str, dict[str, Any]], ...] = (
    (r"H200 NVL", _datasheet(4.8, 835, 417.5, 60)),
    (r"H200", _datasheet(4.8, 989, 494, 67)),
    (r"H100 NVL", _datasheet(3.9, 835, 417.5, 60)),
    (r"H100 PCIe", _datasheet(2.0, 756, 378, 51)),
    (r"H100", _datasheet(3.35, 989, 494, 67)),  # SXM5 ("H100 80GB HBM3")
    (r"A100.*80GB.*PCIe", _datasheet(1.935, 312, 156, 19.5)),
    (r"A100.*80GB", _datasheet(2.039, 312, 156, 19.5)),  # SXM4 80 GB
    (r"A100", _datasheet(1.555, 312, 156, 19.5)),  # 40 GB, SXM4 or PCIe
    (r"L40S", _datasheet(0.864, 362, 183, 91.6)),
    (r"\bL40\b", _datasheet(0.864, 181, 90.5, 90.5)),
    (r"\bL4\b", _datasheet(0.3, 121, 60, 30.3)),
    (r"\bA10\b", _datasheet(0.6, 125, 62.5, 31.2)),
)


def datasheet_ceilings(device_name: str) -> Ceilings | None:
    """The vendor's peak numbers for a device name, or None for a device not in `DATASHEETS`."""
    for pattern, numbers in DATASHEETS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return Ceilings(device=device_name, source="datasheet", **numbers)
    return None


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where autokernel-ci caches: `cache_dir`, else `$AUTOKERNEL_CACHE_DIR`, else ~/.cache/autokernel-ci."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(cache_dir).expanduser()


def ceilings_path(device_name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The JSON file holding a device's measured ceilings (its name made safe for a file name)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", device_name).strip("-.") or "device"
    return cache_root(cache_dir) / "ceilings" / f"{safe}.json"


def get_ceilings(device_name: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> Ceilings | None:
    """Measured ceilings from the cache, else the datasheet's, else None (unknown device, or no GPU).

    Never measures: run `calibrate` (or `benchmarks/calibrate_check.py`) once per machine for that.
    """
    if device_name is None:
        info = device_info()
        if info.kind != "cuda":
            return None
        device_name = info.name
    path = ceilings_path(device_name, cache_dir)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        return Ceilings.from_dict(json.loads(path.read_text()))
    return datasheet_ceilings(device_name)


def calibrate(cache_dir: str | os.PathLike[str] | None = None) -> Ceilings:
    """Measure this GPU's copy bandwidth and matmul rates, cache them, and return them."""
    import torch

    if not torch.cuda.is_available():
        raise HarnessError("calibrate needs a CUDA GPU; without one, get_ceilings() has nothing to measure")
    info = device_info()
    bandwidth, copy_timing, copy_runs = best_copy_bandwidth()
    flops: dict[str, float] = {}
    timings = {"copy": _timing_record(copy_timing)}
    runs: dict[str, Any] = {"copy": copy_runs}
    for kind in MATMUL_KINDS:
        flops[kind], timing, runs[f"matmul_{kind}"] = best_matmul_flops(kind)
        timings[f"matmul_{kind}"] = _timing_record(timing)
    ceilings = Ceilings(
        device=info.name,
        bandwidth_bytes_per_s=bandwidth,
        flops_per_s=flops,
        source="measured",
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        details={
            "copy_bytes": list(COPY_SIZES),
            "matmul_shapes": [list(s) for s in matmul_shapes()],
            "blocks": BLOCKS,
            "timings": timings,
            "runs": runs,  # every size and block: the best of them is the ceiling
            "device": info.to_dict(),
            "fingerprint": gpu_fingerprint(),
            "argv": sys.argv,
        },
    )
    _write_json(ceilings_path(info.name, cache_dir), ceilings.to_dict())
    return ceilings


def measure_copy_bandwidth(nbytes: int = COPY_BYTES, blocks: int = BLOCKS) -> tuple[float, Any]:
    """Bytes per second of a device-to-device copy of `nbytes`, counting the read and the write: the
    fastest of `blocks` timed blocks."""
    import torch

    from autokernel_ci.harness.timing import time_fn

    src = torch.randn(nbytes // 4, device="cuda", dtype=torch.float32)
    dst = torch.empty_like(src)
    # Both buffers are far larger than L2, so flushing it would only cost time.
    runs = [time_fn(lambda: dst.copy_(src), flush_l2=False, min_reps=20, warmup_ms=200 if i == 0 else 25,
                    rep_ms=150) for i in range(blocks)]
    timing = min(runs, key=lambda t: t.median_us)
    bytes_moved = 2 * src.numel() * src.element_size()
    return bytes_moved / (timing.median_us * 1e-6), timing


def best_copy_bandwidth(sizes: tuple[int, ...] = COPY_SIZES) -> tuple[float, Any, list[dict[str, Any]]]:
    """The best copy bandwidth over `sizes`: (bytes/s, its timing, every size's rate)."""
    best: tuple[float, Any] | None = None
    runs = []
    for nbytes in sizes:
        rate, timing = measure_copy_bandwidth(nbytes)
        runs.append({"bytes": nbytes, "bytes_per_s": rate, "median_us": timing.median_us})
        if best is None or rate > best[0]:
            best = (rate, timing)
    assert best is not None
    return best[0], best[1], runs


def matmul_shapes() -> list[tuple[int, int, int]]:
    """MATMUL_SHAPES and the op library's matmul benchmark shapes, each once."""
    shapes = list(MATMUL_SHAPES)
    with contextlib.suppress(Exception):  # the op library is optional here
        from autokernel_ci.ops import get_op

        for shape in get_op("matmul").bench_shapes:
            mkn = (int(shape["M"]), int(shape["K"]), int(shape["N"]))
            if mkn not in shapes:
                shapes.append(mkn)
    return shapes


def measure_matmul_flops(kind: str, n: int = MATMUL_N, shape: tuple[int, int, int] | None = None,
                         blocks: int = BLOCKS) -> tuple[float, Any]:
    """FLOP/s of an M×K×N matmul (default n×n×n) in `kind` ("bf16", "fp16", "tf32" or strict "fp32")."""
    import torch

    from autokernel_ci.harness.timing import time_fn

    if kind not in MATMUL_KINDS:
        raise ValueError(f"kind must be one of {MATMUL_KINDS}, got {kind!r}")
    m, k, n_ = shape or (n, n, n)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(kind, torch.float32)
    a = torch.randn(m, k, device="cuda", dtype=dtype)
    b = torch.randn(k, n_, device="cuda", dtype=dtype)
    c = torch.empty(m, n_, device="cuda", dtype=dtype)
    with _float32_matmul_precision("high" if kind == "tf32" else "highest"):
        # A long warm-up, then the best of several blocks: the first matmuls after an idle spell run
        # before the clocks ramp up, and power management moves the rate by several percent between
        # blocks. A ceiling is the best the card sustains, so the fastest block's median is kept.
        runs = [time_fn(lambda: torch.mm(a, b, out=c), flush_l2=False, min_reps=10,
                        warmup_ms=300 if i == 0 else 50, rep_ms=150) for i in range(blocks)]
    timing = min(runs, key=lambda t: t.median_us)
    return 2.0 * m * k * n_ / (timing.median_us * 1e-6), timing


def best_matmul_flops(kind: str, shapes: list[tuple[int, int, int]] | None = None) -> tuple[float, Any, list[Any]]:
    """The best matmul rate of `kind` over `shapes` (default `matmul_shapes()`; strict fp32, being slow,
    at the first two only): (FLOP/s, its timing, every shape's rate)."""
    shapes = shapes or matmul_shapes()
    if kind == "fp32":
        shapes = shapes[:2]
    best: tuple[float, Any] | None = None
    runs = []
    for shape in shapes:
        rate, timing = measure_matmul_flops(kind, shape=shape)
        runs.append({"shape": list(shape), "flops_per_s": rate, "median_us": timing.median_us})
        if best is None or rate > best[0]:
            best = (rate, timing)
    assert best is not None
    return best[0], best[1], runs


def recheck(ceilings: Ceilings, ceiling: str, observed_per_s: float, what: str,
            cache_dir: str | os.PathLike[str] | None = None,
            measure: Any = None) -> tuple[Ceilings, str]:
    """A trusted measurement (`what`, e.g. "cuBLAS at 4096×4096×4096") ran at `observed_per_s`, above the
    `ceiling` ("bandwidth" or a matmul kind): re-measure that ceiling and return (ceilings, note).

    The re-measured ceiling replaces the old one when it is higher. When the measurement still beats
    it, the ceiling becomes the measured rate: a rate that was reached is reachable. The note says
    which happened, for the report. `measure(ceiling)` returns a fresh rate (default: calibrate's)."""
    old = ceilings.bandwidth_bytes_per_s if ceiling == "bandwidth" else ceilings.flops_per_s.get(ceiling, 0.0)
    if observed_per_s <= old:
        return ceilings, ""
    if measure is None:
        def measure(name: str) -> float:
            return best_copy_bandwidth()[0] if name == "bandwidth" else best_matmul_flops(name)[0]
    fresh = float(measure(ceiling))
    new = max(old, fresh, observed_per_s)
    unit, scale = ("TB/s", 1e12) if ceiling == "bandwidth" else ("TFLOP/s", 1e12)
    label = "copy bandwidth" if ceiling == "bandwidth" else f"{ceiling} matmul"
    note = (f"{what} ran at {observed_per_s / scale:.1f} {unit}, above the {label} ceiling of {old / scale:.1f}: "
            f"re-measured {fresh / scale:.1f} {unit}")
    if fresh >= observed_per_s:
        note += "; the ceiling is now the re-measured rate"
    else:
        note += f"; still below it, so the ceiling is now {what}'s {observed_per_s / scale:.1f} {unit}"
    data = ceilings.to_dict()
    if ceiling == "bandwidth":
        data["bandwidth_bytes_per_s"] = new
    else:
        data["flops_per_s"] = {**ceilings.flops_per_s, ceiling: new}
    data["details"] = {**ceilings.details, "rechecks": [*ceilings.details.get("rechecks", []), note]}
    updated = Ceilings.from_dict(data)
    if ceilings.source == "measured":
        _write_json(ceilings_path(ceilings.device, cache_dir), updated.to_dict())
    return updated, note


@contextlib.contextmanager
def _float32_matmul_precision(precision: str) -> Iterator[None]:
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _timing_record(timing: Any) -> dict[str, Any]:
    return {
        "median_us": timing.median_us,
        "iqr_us": timing.iqr_us,
        "count": timing.count,
        "samples_us": timing.samples_us,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


# --- roofline ------------------------------------------------------------------------------------

_DTYPE_KINDS = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "tf32": "tf32",
}


def ceiling_kind(dtype: Any) -> str | None:
    """The `Ceilings.flops_per_s` key for a dtype ("bf16", torch.bfloat16, …); None when none applies.

    Strict fp32 maps to "fp32"; pass "tf32" when the kernel's maths runs on TF32 tensor cores.
    """
    name = str(dtype).lower().removeprefix("torch.")
    return _DTYPE_KINDS.get(name)


def pct_of_roofline(
    bytes_moved: int | None,
    flops: int | None,
    dtype: Any,
    seconds: float,
    ceilings: Ceilings | None,
    bound: str,
) -> tuple[float | None, str | None]:
    """(percent, source): how close `seconds` is to the ceiling that bounds this op.

    `bound` is "memory" (bytes / bandwidth), "compute" (flops / the dtype's peak) or "roofline"
    (the larger of the two times, i.e. the classic roofline). The percentage is not clipped: above
    100 means the cost model or the ceiling is wrong, and should be seen. (None, None) when there
    are no ceilings or the numbers the bound needs are missing.
    """
    if seconds <= 0 or not math.isfinite(seconds):
        raise ValueError(f"seconds must be a positive time, got {seconds}")
    if bound not in ("memory", "compute", "roofline"):
        raise ValueError(f"bound must be 'memory', 'compute' or 'roofline', got {bound!r}")
    if ceilings is None:
        return None, None
    memory_s = bytes_moved / ceilings.bandwidth_bytes_per_s if bytes_moved is not None else None
    peak = ceilings.flops_per_s.get(ceiling_kind(dtype) or "")
    compute_s = flops / peak if flops is not None and peak else None
    if bound == "memory":
        best = memory_s
    elif bound == "compute":
        best = compute_s
    else:
        known = [t for t in (memory_s, compute_s) if t is not None]
        best = max(known) if known else None
    if best is None:
        return None, None
    return 100.0 * best / seconds, ceilings.source


# --- hardware identity ---------------------------------------------------------------------------

# What makes two measurements comparable: the same GPU model and configuration, driver and CUDA runtime.
# Clocks and the power limit are part of it because a capped card is a different, slower machine.
FINGERPRINT_KEYS = ("kind", "name", "sm_count", "driver_version", "cuda_version", "max_sm_clock_mhz",
                    "max_memory_clock_mhz", "power_limit_w", "ecc", "mig")
_SMI_FIELDS = ("clocks.max.sm", "clocks.max.memory", "power.limit", "ecc.mode.current", "mig.mode.current")


def gpu_fingerprint(device: Any = None) -> dict[str, Any]:
    """The identity of the machine a measurement ran on: GPU name, SM count, driver and CUDA versions, maximum
    SM and memory clocks, power limit, ECC and MIG mode (from torch and, where present, nvidia-smi; a field
    nvidia-smi cannot tell is None). Without a GPU: {"kind": "cpu", "name": <the CPU>}, every other key None."""
    import torch

    if not torch.cuda.is_available():
        return cpu_fingerprint()
    index = torch.cuda.current_device() if device is None else torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    props = torch.cuda.get_device_properties(index)
    smi = _nvidia_smi_fields(index)
    return {**dict.fromkeys(FINGERPRINT_KEYS), "kind": "cuda", "name": props.name,
            "sm_count": int(props.multi_processor_count), "driver_version": _nvidia_driver_version(),
            "cuda_version": torch.version.cuda,
            "max_sm_clock_mhz": _smi_number(smi.get("clocks.max.sm")),
            "max_memory_clock_mhz": _smi_number(smi.get("clocks.max.memory")),
            "power_limit_w": _smi_number(smi.get("power.limit")),
            "ecc": _smi_text(smi.get("ecc.mode.current")), "mig": _smi_text(smi.get("mig.mode.current"))}


def cpu_fingerprint() -> dict[str, Any]:
    """The fingerprint of a run on the CPU (the Triton interpreter): the processor's name, nothing else."""
    return {**dict.fromkeys(FINGERPRINT_KEYS), "kind": "cpu", "name": _cpu_name()}


def _nvidia_smi_fields(index: int) -> dict[str, str]:
    """nvidia-smi's answers for the GPU at torch index `index` ({} when nvidia-smi is missing or fails).

    Under CUDA_VISIBLE_DEVICES torch's index is not nvidia-smi's: the visible list maps one to the other.
    """
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    target = visible[index] if index < len(visible) else str(index)
    try:
        out = subprocess.run(["nvidia-smi", f"--id={target}", f"--query-gpu={','.join(_SMI_FIELDS)}",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in (out.strip().splitlines() or [""])[0].split(",")]
    return dict(zip(_SMI_FIELDS, values)) if len(values) == len(_SMI_FIELDS) else {}


def _smi_number(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"
    return round(value, 1) if math.isfinite(value) else None


def _smi_text(text: str | None) -> str | None:
    return text if text and not text.startswith("[") else None


def fingerprint_mismatch(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str | None:
    """Why measurements taken on fingerprints `a` and `b` must not be compared, or None when they may be.

    A missing fingerprint (a record from before fingerprints were kept) is a mismatch too: nothing says
    it ran on the same machine. A field both sides leave None (nvidia-smi absent on both) does not count.
    """
    if not a or not b:
        return "one of the measurements records no hardware fingerprint"
    diffs = [f"{key} {a.get(key)!r} vs {b.get(key)!r}" for key in FINGERPRINT_KEYS if a.get(key) != b.get(key)]
    return "different hardware: " + ", ".join(diffs) if diffs else None


def fingerprint_label(fp: dict[str, Any] | None) -> str:
    """One short line: `NVIDIA H100 80GB HBM3 · 132 SMs · driver 550.54 · CUDA 12.4 · 700 W`."""
    if not fp:
        return "unknown hardware"
    if fp.get("kind") == "cpu":
        return f"cpu: {fp.get('name')}"
    parts = [str(fp.get("name"))]
    for key, fmt in (("sm_count", "{} SMs"), ("driver_version", "driver {}"), ("cuda_version", "CUDA {}"),
                     ("max_sm_clock_mhz", "{:g} MHz"), ("power_limit_w", "{:g} W"), ("ecc", "ECC {}"),
                     ("mig", "MIG {}")):
        if fp.get(key) is not None:
            parts.append(fmt.format(fp[key]))
    return " · ".join(parts)
