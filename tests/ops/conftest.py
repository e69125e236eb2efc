"""Helpers for the op library tests: the tolerance rule, running an op, and loading its starter file.

Every op test compares `kernel_fn` with the op's reference evaluated in float64, element by element:
|out − ref| ≤ atol · rms(ref over the last dim) + rtol · |ref|, with ref first rounded to the output
dtype. NaN passes only where the reference is NaN.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import random
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from autokernel_ci.ops import get_op, starter_source
from autokernel_ci.ops.base import DTYPES, OpSpec


def within_tolerance(out: torch.Tensor, ref: torch.Tensor, out_dtype: torch.dtype, atol: float, rtol: float) -> str:
    """Why `out` is not close enough to the float64 `ref`, or "" when every element passes."""
    if out.dtype != out_dtype:
        return f"output dtype is {out.dtype}, expected {out_dtype}"
    if tuple(out.shape) != tuple(ref.shape):
        return f"output shape is {tuple(out.shape)}, expected {tuple(ref.shape)}"
    expected = ref.to(out_dtype).to(torch.float64)
    got = out.to(torch.float64)
    finite = torch.where(expected.isfinite(), expected, torch.zeros_like(expected))
    scale = finite.abs() if finite.dim() == 0 else finite.pow(2).mean(-1, keepdim=True).sqrt()
    bound = atol * scale + rtol * expected.abs()
    err = (got - expected).abs()
    same_special = (got.isnan() & expected.isnan()) | (got.isinf() & (got == expected))
    bad = ~((err <= bound) | same_special)
    if not bad.any():
        return ""
    index = tuple(int(i) for i in bad.nonzero()[0]) if bad.dim() else ()
    return (f"{int(bad.sum())} of {bad.numel()} elements out of tolerance (atol={atol}, rtol={rtol}); "
            f"first at {index}: got {float(got[index]):.7g}, expected {float(expected[index]):.7g}, "
            f"max error {float(torch.nan_to_num(err, nan=float('inf')).max()):.3g}")


def to_float64(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def assert_matches_reference(spec: OpSpec, shape: dict[str, int], dtype: str, args: tuple[Any, ...], out: Any) -> None:
    ref = spec.reference(*to_float64(args))
    outs = out if isinstance(out, tuple) else (out,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    assert len(outs) == len(refs), f"{spec.name} returned {len(outs)} outputs, the reference {len(refs)}"
    out_dtype = spec.out_dtype(DTYPES[dtype]) if spec.out_dtype else DTYPES[dtype]
    atol, rtol = spec.tolerance(shape, dtype)
    for i, (o, r) in enumerate(zip(outs, refs)):
        problem = within_tolerance(o, r, out_dtype, atol, rtol)
        assert not problem, f"{spec.name} {spec.shape_label(shape)} {dtype} output {i}: {problem}"


def make_args(spec: OpSpec, shape: dict[str, int], dtype: str, seed: int = 0, kind: str = "normal") -> tuple:
    return tuple(spec.make_inputs(shape, DTYPES[dtype], torch.Generator().manual_seed(seed), kind))


def run_and_check(module: ModuleType, shape: dict[str, int], dtype: str, seed: int = 0, kind: str = "normal",
                  kernel_fn: Callable[..., Any] | None = None) -> None:
    """Draw inputs, run the op's kernel_fn (or the one given), compare with the float64 reference."""
    spec = module.SPEC
    args = make_args(spec, shape, dtype, seed, kind)
    out = (kernel_fn or module.kernel_fn)(*args)
    assert_matches_reference(spec, shape, dtype, args, out)


def odd_shape(spec: OpSpec) -> dict[str, int]:
    """The last test shape with an odd size above 1 (where masking bugs show), as the gate picks it."""
    odd = [shape for shape in spec.test_shapes if any(v > 1 and v % 2 for v in shape.values())]
    return odd[-1] if odd else spec.test_shapes[-1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """numpy's overflow and inf − inf warnings from inside the interpreter are the kernels' masked
    lanes and the stability inputs doing what the GPU does silently; the outputs are checked."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the tests of a module that names its op (`OP = "rmsnorm"`) over the op's spec:
    `shape, dtype` over the test shapes and dtypes, `kind` over the stability inputs,
    `knob, value` over every value of every tunable."""
    op = getattr(metafunc.module, "OP", None)
    if op is None:
        return
    spec = get_op(op)
    explicit = {name.strip() for mark in metafunc.definition.iter_markers("parametrize")
                for name in (mark.args[0].split(",") if isinstance(mark.args[0], str) else mark.args[0])}
    names = [name for name in metafunc.fixturenames if name not in explicit]
    if "shape" in names and "dtype" in names:
        metafunc.parametrize("shape,dtype", [
            pytest.param(shape, dtype, id=f"{spec.shape_label(shape)}-{dtype}")
            for shape in spec.test_shapes for dtype in spec.dtypes])
    elif "dtype" in names:
        metafunc.parametrize("dtype", spec.dtypes)
    if "kind" in names:
        metafunc.parametrize("kind", spec.stability_kinds)
    if "knob" in names and "value" in names:
        metafunc.parametrize("knob,value", [pytest.param(knob.name, value, id=f"{knob.name}={value}")
                                            for knob in spec.tunables for value in knob.values])


@pytest.fixture
def op(request) -> ModuleType:
    """The op module named by the test module's OP."""
    return importlib.import_module(f"autokernel_ci.ops.{request.module.OP}")


@pytest.fixture
def spec(op) -> OpSpec:
    return op.SPEC


@pytest.fixture
def check(op) -> Callable[..., None]:
    """check(shape, dtype, seed=0, kind="normal", kernel_fn=None): run the op and compare with float64."""

    def run(shape, dtype, seed=0, kind="normal", kernel_fn=None):
        run_and_check(op, shape, dtype, seed, kind, kernel_fn)

    return run


@pytest.fixture
def matches_reference(spec) -> Callable[..., None]:
    """matches_reference(args, out, dtype, shape): assert the op's output is close to float64."""

    def assert_close(args, out, dtype, shape):
        assert_matches_reference(spec, shape, dtype, args, out)

    return assert_close


def accepted_configs(spec: OpSpec, sample: int, seed: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """How many points of the tunable space `check_config` accepts, and a fixed sample of them."""
    names = [knob.name for knob in spec.tunables]
    accepted = [dict(zip(names, values)) for values in itertools.product(*(k.values for k in spec.tunables))
                if spec.check_config(dict(zip(names, values))) is None]
    return len(accepted), random.Random(seed).sample(accepted, min(sample, len(accepted)))


def with_knobs(source: str, config: dict[str, Any]) -> str:
    """The starter source with each knob's top-level assignment set to the config's value."""
    for name, value in config.items():
        source, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", source, flags=re.M)
        assert count == 1, f"the starter source has {count} top-level `{name} = ...` lines, not one"
    return source


@pytest.fixture
def load_starter(tmp_path) -> Iterator[Callable[..., dict[str, Any]]]:
    """Execute an op's starter source (optionally with knobs set) as a fresh module; return its namespace.

    The source is written to a file first: Triton reads a kernel's source through `inspect`.
    """

    def load(op: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
        source = with_knobs(starter_source(op), config or {})
        path = tmp_path / f"starter_{op}_{abs(hash(source))}.py"
        path.write_text(source)
        namespace: dict[str, Any] = {"__name__": f"starter_{op}", "__file__": str(path)}
        exec(compile(source, str(path), "exec"), namespace)
        return namespace

    yield load


@pytest.fixture
def set_knobs(monkeypatch) -> Callable[[ModuleType, dict[str, Any]], None]:
    """Set an op module's knob constants for one test (kernel_fn reads them at call time)."""

    def apply(module: ModuleType, config: dict[str, Any]) -> None:
        for name, value in config.items():
            assert hasattr(module, name), f"{module.__name__} has no knob {name}"
            monkeypatch.setattr(module, name, value)

    return apply


def _load_hopper() -> ModuleType:
    path = Path(__file__).with_name("hopper.py")
    module_spec = importlib.util.spec_from_file_location("autokernel_ci_tests_hopper", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses look their module up while being defined
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def hopper() -> ModuleType:
    """tests/ops/hopper.py, after checking this triton has an NVIDIA backend to compile with (else skip)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        get_ptxas(90).path  # noqa: B018 - resolving the path is the check
    except Exception as exc:  # noqa: BLE001 - any failure means no offline CUDA compiler here
        pytest.skip(f"triton's NVIDIA backend cannot compile here: {exc}")
    return _load_hopper()


@pytest.fixture
def compiles_for_h100(hopper, request) -> Callable[..., list[list[Any]]]:
    """compiles_for_h100(dtype, shapes, knobs=None): compile the op's kernels for sm_90 at each shape and
    assert they fit an H100 (no register spills, shared memory within 227 KB); returns the kernels."""
    op = request.module.OP

    def compile_and_check(dtype, shapes, knobs=None):
        per_shape = hopper.compile_in_subprocess(op, dtype, list(shapes), knobs)
        for shape, kernels in zip(shapes, per_shape):
            where = f"{op} {shape} {dtype} {knobs or ''}"
            assert kernels, f"{where}: kernel_fn launched no Triton kernel"
            for k in kernels:
                assert k.spill_bytes == 0, f"{where}: {k.name} spills {k.spill_bytes} B ({k.registers} registers)"
                assert k.shared <= hopper.H100_SHARED_MEM, f"{where}: {k.name} needs {k.shared} B of shared memory"
        return per_shape

    return compile_and_check


@pytest.fixture
def odd(spec) -> dict[str, int]:
    return odd_shape(spec)


@pytest.fixture
def defaults(op) -> dict[str, Any]:
    """The op module's knob values as shipped."""
    return {knob.name: getattr(op, knob.name) for knob in op.SPEC.tunables}


@pytest.fixture
def config_sample(spec) -> tuple[int, list[dict[str, Any]]]:
    """How many points of the tunable space check_config accepts, and a fixed sample of six of them."""
    return accepted_configs(spec, sample=6)
