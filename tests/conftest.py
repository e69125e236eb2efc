"""Shared fixtures. On a machine without CUDA, Triton kernels run under the interpreter."""

from __future__ import annotations

import os

# Must be set before triton is first imported anywhere in the test process.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass
