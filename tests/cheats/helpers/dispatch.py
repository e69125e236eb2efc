"""The sibling_module cheat's helper: the recorder switched off from a file the candidate imports."""

import torch


def quietly():
    return torch._C._DisableTorchDispatch()
