"""The built-in op library: one module per op family, each exporting `SPEC` (an `OpSpec`).

Modules are imported on first use so that the CLI starts without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from autokernel_ci.errors import TaskError

if TYPE_CHECKING:
    from autokernel_ci.ops.base import OpSpec

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
