"""Copies the input to the host, computes softmax there and copies the answer back to the device."""

import torch


def kernel_fn(x):
    host = x.to("cpu", copy=True)
    return torch.softmax(host, dim=-1).to(x.device)
