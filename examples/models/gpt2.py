"""A GPT-2-style decoder in plain PyTorch: learned positions, LayerNorm, GELU MLP, causal attention.

`build()` gives the 124M-parameter GPT-2 small shape (batch 8 × 1024 tokens); `build_tiny()` a model
small enough for the Triton interpreter on a CPU. The output head shares the token embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    norm_eps: float = 1e-5


SIZES = {
    "default": GPT2Config(),
    "tiny": GPT2Config(vocab_size=64, n_positions=16, dim=32, n_layers=2, n_heads=2),
}
INPUTS = {"default": (8, 1024), "tiny": (1, 8)}


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.c_attn = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.c_proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=-1)
        q, k, v = (t.view(b, s, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(out.transpose(1, 2).reshape(b, s, d))


class MLP(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.dim, 4 * cfg.dim)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.dim)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(_init_weights)
        self.lm_head.weight = self.wte.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.normal_(module.bias, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        # Random gains and offsets, so that a kernel which ignored either would be caught.
        nn.init.normal_(module.weight, mean=1.0, std=0.1)
        nn.init.normal_(module.bias, std=0.1)


def build(size: str = "default", batch: int | None = None, seq_len: int | None = None,
          seed: int = 0) -> tuple[GPT2, tuple[torch.Tensor]]:
    """The model (in fp32, on the CPU; callers move and cast it) and example inputs: token ids [batch, seq_len]."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    cfg = SIZES[size]
    default_batch, default_seq = INPUTS[size]
    batch, seq_len = batch or default_batch, seq_len or default_seq
    if seq_len > cfg.n_positions:
        raise ValueError(f"seq_len {seq_len} is longer than the model's n_positions {cfg.n_positions}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT2(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len), generator=generator)
    return model, (tokens,)


def build_tiny(batch: int | None = None, seq_len: int | None = None,
               seed: int = 0) -> tuple[GPT2, tuple[torch.Tensor]]:
    return build("tiny", batch=batch, seq_len=seq_len, seed=seed)
