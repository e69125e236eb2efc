"""Looks clean itself; a helper module in its folder switches the operator recorder off."""

import torch
from helpers.dispatch import quietly


def kernel_fn(x):
    with quietly():
        return torch.softmax(x, dim=-1)
