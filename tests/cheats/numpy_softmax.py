"""Computes softmax in numpy on the host and hands the result back as a tensor."""

import numpy as np
import torch


def kernel_fn(x):
    a = np.asarray(x.float().cpu())
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return torch.tensor(e / e.sum(axis=-1, keepdims=True), dtype=x.dtype, device=x.device)
