"""Computes softmax through torch.sparse.softmax on a sparse copy of the input."""

import torch


def kernel_fn(x):
    return torch.sparse.softmax(x.to_sparse(), dim=-1).to_dense()
