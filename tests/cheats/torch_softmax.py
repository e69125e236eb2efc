"""Calls torch.softmax instead of launching a kernel of its own."""

import torch


def kernel_fn(x):
    return torch.softmax(x, dim=-1)
