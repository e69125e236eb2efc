"""Kernel tasks: what the bot may edit or must guard, built from a built-in op, a config entry or a
KernelBench-style file — and model targets to profile and verify.

Every task carries an `OpSpec` (see `ops/base.py`): the reference maths, the input factory, shapes,
dtypes and tolerances. The correctness gate and the timing harness read only that, so the three
ways of making a task are treated alike from there on.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autokernel_ci.errors import TaskError

if TYPE_CHECKING:  # keeps torch out of CLI start-up
    from autokernel_ci.config import Config, KernelEntry
    from autokernel_ci.ops.base import OpSpec


@dataclass
class KernelTask:
    name: str
    kind: str  # "builtin" | "config" | "kernelbench"
    spec: OpSpec
    path: Path | None = None  # the kernel file in the user's repo, when there is one
    entry: str = "kernel_fn"
    root: Path | None = None  # put on sys.path so the user's modules import
    op: str | None = None
    inputs: str | None = None  # module:callable for config tasks
    reference: str | None = None  # module:callable for config tasks (run only inside a sandboxed worker)
    kernelbench: Path | None = None
    risk: str = "low"
    allow: tuple[str, ...] = ()
    baselines: tuple[str, ...] = ("eager", "vendor", "compile")

    def to_wire(self) -> dict[str, Any]:
        """What a worker process needs to rebuild this task: the candidate's worker uses the inputs side;
        the reference worker (`mode: reference`) also the reference."""
        return {
            "name": self.name,
            "kind": self.kind,
            "op": self.op,
            "entry": self.entry,
            "root": str(self.root) if self.root else None,
            "inputs": self.inputs,
            "reference": self.reference,
            "kernelbench": str(self.kernelbench) if self.kernelbench else None,
            "dims": list(self.spec.dims),
        }


@dataclass
class ModelTarget:
    name: str
    factory: str
    dtype: str = "bf16"
    swap: list[str] = field(default_factory=list)
    tolerance: tuple[float, float] | None = None
    root: Path | None = None


def builtin_task(op: str) -> KernelTask:
    from autokernel_ci.ops import get_op

    spec = get_op(op)
    return KernelTask(name=op, kind="builtin", spec=spec, op=op, risk=spec.risk, allow=spec.allowed_ops)


def config_task(entry: KernelEntry, cfg: Config) -> KernelTask:
    root = cfg.root
    path = root / entry.path
    if entry.kernelbench:
        task = kernelbench_task(root / entry.kernelbench)
        return replace(task, name=entry.name, path=path, root=root, entry=entry.entry or "ModelNew",
                       allow=tuple(entry.allow), risk=entry.risk or task.risk)
    if entry.op:
        task = builtin_task(entry.op)
        spec = task.spec
        overrides: dict[str, Any] = {}
        if entry.shapes:
            overrides["test_shapes"] = tuple(entry.shapes)
        if entry.bench_shapes:
            overrides["bench_shapes"] = tuple(entry.bench_shapes)
        if entry.dtypes:
            overrides["dtypes"] = tuple(entry.dtypes)
        if entry.tolerance:
            overrides["tolerances"] = {**spec.tolerances, **entry.tolerance}
        if overrides:
            spec = replace(spec, **overrides)
        return replace(task, name=entry.name, spec=spec, path=path, root=root, entry=entry.entry or "kernel_fn",
                       allow=tuple(spec.allowed_ops) + tuple(entry.allow), risk=entry.risk or spec.risk)
    return custom_task(entry, root)


def custom_task(entry: KernelEntry, root: Path) -> KernelTask:
    """A task whose reference and input factory are the user's own `module:callable`s. They are
    repository code: this process never imports them; the sandboxed reference worker runs them."""
    from autokernel_ci.ops.base import DEFAULT_TOLERANCES, OpSpec

    reference = InSandbox(entry.reference or "", root)
    make_inputs = InSandbox(entry.inputs or "", root)
    dims = tuple(entry.shapes[0].keys())
    spec = OpSpec(
        name=entry.name,
        signature=f"{entry.entry or 'kernel_fn'}(...) like {entry.reference}",
        family="custom",
        dims=dims,
        reference=reference,
        make_inputs=make_inputs,
        bytes_moved=lambda shape, dtype: None,  # type: ignore[arg-type,return-value]
        flops=lambda shape, dtype: None,  # type: ignore[arg-type,return-value]
        test_shapes=tuple(entry.shapes),
        bench_shapes=tuple(entry.bench_shapes),
        dtypes=tuple(entry.dtypes or ("fp32",)),
        tolerances={**DEFAULT_TOLERANCES, **entry.tolerance},
        risk=entry.risk or "low",
    )
    return KernelTask(name=entry.name, kind="config", spec=spec, path=root / entry.path, root=root,
                      entry=entry.entry or "kernel_fn", inputs=entry.inputs, reference=entry.reference, risk=spec.risk,
                      allow=tuple(entry.allow))


def kernelbench_task(path: Path) -> KernelTask:
    """A KernelBench-style file: `Model`, `get_inputs()`, `get_init_inputs()`; candidates define `ModelNew`."""
    from autokernel_ci.ops.base import OpSpec

    path = Path(path)
    if not path.is_file():
        raise TaskError(f"file not found: {path}")
    defined = top_level_names(path)
    for required in ("Model", "get_inputs", "get_init_inputs"):
        if required not in defined:
            raise TaskError(f"{path}: a KernelBench-style task defines Model, get_inputs and get_init_inputs; "
                            f"{required} is missing")
    target = f"{path.resolve()}:Model"
    spec = OpSpec(
        name=path.stem,
        signature="class ModelNew(nn.Module) with the same __init__ and forward as Model",
        family="kernelbench",
        dims=(),
        reference=InSandbox(target, path.parent),
        make_inputs=InSandbox(f"{path.resolve()}:get_inputs", path.parent),
        bytes_moved=lambda shape, dtype: None,  # type: ignore[arg-type,return-value]
        flops=lambda shape, dtype: None,  # type: ignore[arg-type,return-value]
        test_shapes=({},),
        bench_shapes=({},),
        dtypes=("fp32",),
        tolerances={"fp32": (1e-4, 1e-4)},
        stability_kinds=(),
    )
    return KernelTask(name=path.stem, kind="kernelbench", spec=spec, root=path.parent.resolve(), entry="ModelNew",
                      kernelbench=path.resolve())


def kernelbench_inputs(module: Any):
    """Inputs of a KernelBench file are whatever get_inputs() draws; we seed torch's RNG from the generator."""

    def make_inputs(shape, dtype, generator, kind="normal"):
        import torch

        torch.manual_seed(generator.initial_seed() + 1)
        return tuple(a.to(generator.device) if isinstance(a, torch.Tensor) else a for a in module.get_inputs())

    return make_inputs


def kernelbench_model(module: Any, cls: Any, seed: int, device: Any):
    """Build Model or ModelNew the same way on both sides (same seed, same init inputs) so that their
    parameters are equal."""
    import torch

    torch.manual_seed(seed)
    return cls(*module.get_init_inputs()).to(device)


def kernelbench_reference(module: Any):
    def reference(*args, seed: int = 0):
        import torch

        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        model = kernelbench_model(module, module.Model, seed, device).double()
        with torch.no_grad():
            return model(*args)

    return reference


def resolve_task(task: str, config_path: Path | None = None) -> KernelTask:
    """TASK is a KernelBench-style file, a kernel named in the config, or a built-in op name."""
    from autokernel_ci.config import find_config, load_config
    from autokernel_ci.ops import OP_NAMES, is_builtin

    candidate_file = Path(task)
    if task.endswith(".py"):
        if not candidate_file.is_file():
            raise TaskError(f"task file not found: {task}")
        return kernelbench_task(candidate_file)
    path = config_path or find_config()
    if path is not None:
        cfg = load_config(path)
        entry = cfg.kernel(task)
        if entry is not None:
            return config_task(entry, cfg)
    if is_builtin(task):
        return builtin_task(task)
    import difflib

    known = list(OP_NAMES) + ([k.name for k in load_config(path).kernels] if path else [])
    close = difflib.get_close_matches(task, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f" or a kernel in {path}" if path else ""
    raise TaskError(f"unknown task {task!r}{hint}: expected a built-in op ({', '.join(OP_NAMES)}){where}, "
                    "or a KernelBench-style .py file")


def task_inputs_from_wire(wire: dict[str, Any], reference: bool = False):
    """In a worker: rebuild the input factory and, for KernelBench, the module (for a config task's
    reference worker, `reference`: the reference callable) from `to_wire()`."""
    root = wire.get("root")
    if root and root not in sys.path:
        sys.path.insert(0, root)
    if wire["kind"] == "kernelbench":
        module = load_module_from_path(Path(wire["kernelbench"]))
        return kernelbench_inputs(module), module
    if wire.get("op"):
        from autokernel_ci.ops import get_op

        return get_op(wire["op"]).make_inputs, None
    make_inputs = load_callable(wire["inputs"], Path(root) if root else None)
    return make_inputs, (load_callable(wire["reference"], Path(root) if root else None) if reference else None)


class InSandbox:
    """A `module:callable` of the user's repository, named but never imported in this process: only a
    sandboxed worker calls it (`harness.sandbox`). Calling it here is a harness bug, said as such."""

    def __init__(self, target: str, root: Path | None) -> None:
        self.target, self.root = target, root

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from autokernel_ci.errors import HarnessError

        raise HarnessError(f"{self.target} is repository code: it runs only inside the sandboxed worker")

    def __repr__(self) -> str:
        return f"InSandbox({self.target!r})"

    def source_text(self) -> str:
        """The callable's source, read from its file without importing it ('' when not found)."""
        import ast

        module, _, attr = self.target.rpartition(":")[0], None, self.target.rpartition(":")[2]
        path = Path(module) if module.endswith(".py") else _module_file(module, self.root)
        if path is None or not path.is_file():
            return ""
        text = path.read_text(errors="replace")
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return ""
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == attr:
                return ast.get_source_segment(text, node) or ""
        return ""


def _module_file(module: str, root: Path | None) -> Path | None:
    if root is None:
        return None
    base = Path(root, *module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def top_level_names(path: Path) -> set[str]:
    """The names a Python file defines or assigns at its top level, read from its source."""
    import ast

    try:
        tree = ast.parse(Path(path).read_text(errors="replace"), filename=str(path))
    except SyntaxError as exc:
        raise TaskError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def load_callable(target: str, root: Path | None):
    module_name, _, attr = target.partition(":")
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module failed to import: say which and why
        raise TaskError(f"cannot import {module_name!r} for {target!r}: {type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TaskError(f"{module_name!r} has no attribute {attr!r} (from {target!r})") from None


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the file from its source every time, never through a cached .pyc: a kernel file
    rewritten within the same second at the same size (a tuner changing 1024 to 2048) would
    otherwise run the bytecode of its previous version. Nor is a .pyc written for it."""

    def get_code(self, fullname: str):
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)


def load_module_from_path(path: Path, name: str | None = None):
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"file not found: {path}")
    name = name or f"_autokernel_task_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path, loader=_SourceOnlyLoader(name, str(path)))
    if spec is None or spec.loader is None:
        raise TaskError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise TaskError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        raise TaskError(f"{path}: failed to import: {type(exc).__name__}: {exc}") from None
    return module
