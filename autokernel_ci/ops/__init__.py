"""The built-in op library: one module per op family, each exporting `SPEC` (an `OpSpec`).

Modules are imported on first use so that the CLI starts without importing torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING

from autokernel_ci.errors import TaskError

if TYPE_CHECKING:
    from autokernel_ci.ops.base import OpSpec

# Everything after this line of an op module is the op's starter kernel: a standalone candidate file.
KERNEL_FILE_MARKER = "# === kernel file ==="
_NOQA = re.compile(r"  # noqa: [A-Z0-9, ]+(?=\n|$)")

# The registry: adding an op is one module and one line here.
OP_NAMES: tuple[str, ...] = (
    "rmsnorm",
    "layernorm",
    "softmax",
    "cross_entropy",
    "rope",
    "swiglu",
    "add_rmsnorm",
    "matmul",
)


def get_op(name: str) -> OpSpec:
    if name not in OP_NAMES:
        raise TaskError(f"unknown built-in op {name!r}; the built-ins are: {', '.join(OP_NAMES)}")
    return importlib.import_module(f"autokernel_ci.ops.{name}").SPEC


def is_builtin(name: str) -> bool:
    return name in OP_NAMES


def starter_source(name: str) -> str:
    """The op's starter kernel file: the text after the marker line of `ops/<name>.py`.

    It is a standalone Python file (its own imports, knobs, kernels and `kernel_fn`) that the
    proposers edit and the harness runs as a candidate. Read from the source, not imported.
    """
    if name not in OP_NAMES:
        raise TaskError(f"unknown built-in op {name!r}; the built-ins are: {', '.join(OP_NAMES)}")
    spec = importlib.util.find_spec(f"autokernel_ci.ops.{name}")
    if spec is None or spec.origin is None:
        raise TaskError(f"cannot find the source of built-in op {name!r}")
    text = Path(spec.origin).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip() == KERNEL_FILE_MARKER:
            # The lint waivers an import below the spec needs inside the package mean nothing standalone.
            body = "".join(_NOQA.sub("", line) for line in lines[i + 1:])
            return body.lstrip("\n")
    raise TaskError(f"built-in op {name!r} has no starter kernel (no {KERNEL_FILE_MARKER!r} line in {spec.origin})")
