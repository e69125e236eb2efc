"""Example models in plain PyTorch (no downloads) that `autokernel-ci profile` and `verify` run on."""
