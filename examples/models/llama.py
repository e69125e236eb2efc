"""A compact LLaMA-style decoder in plain PyTorch: RMSNorm, rotary embedding, causal attention, SwiGLU MLP.

Written the way the reference implementations are: the norm and the rotary embedding compute in fp32
and cast back, the MLP is `down(silu(gate(x)) * up(x))`, attention is `F.scaled_dot_product_attention`.
The rotary embedding rotates interleaved pairs (x[2i], x[2i+1]), as Meta's original code does with
complex numbers, which is the layout of the built-in `rope(x[B, H, S, D], cos[S, D/2], sin[S, D/2])`.

`build()` gives the ~160M-parameter default (batch 8 × 2048 tokens); `build_tiny()` a model small
enough for the Triton interpreter on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 32000
    dim: int = 768
    n_layers: int = 16
    n_heads: int = 12
    hidden_dim: int = 2048
    max_seq_len: int = 2048
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0


SIZES = {
    "default": LlamaConfig(),
    "tiny": LlamaConfig(vocab_size=64, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_seq_len=16),
}
# (batch, tokens) of the example inputs per size
INPUTS = {"default": (8, 2048), "tiny": (1, 8)}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return h.type_as(x) * self.weight


class RotaryEmbedding(nn.Module):
    """Rotates the pairs (x[2i], x[2i+1]) of x[B, H, S, D] by the angle s · θ^(−2i/D) of position s."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq_len = x.shape[2]
        cos, sin = self.cos[:seq_len].float(), self.sin[:seq_len].float()
        x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
        return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.dim // cfg.n_heads
        self.q_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.o_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.rotary = RotaryEmbedding(self.head_dim, cfg.max_seq_len, cfg.rope_theta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        q, k = self.rotary(q), self.rotary(k)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.down_proj = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x))
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(_init_weights)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.output(self.norm(h))


def _init_weights(module: nn.Module) -> None:
    # Small random weights keep activations of a random model in a realistic range; the norms get
    # random gains so that a kernel which ignored its weight would be caught.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    elif isinstance(module, RMSNorm):
        nn.init.normal_(module.weight, mean=1.0, std=0.1)


def build(size: str = "default", batch: int | None = None, seq_len: int | None = None,
          seed: int = 0) -> tuple[Llama, tuple[torch.Tensor]]:
    """The model (in fp32, on the CPU; callers move and cast it) and example inputs: token ids [batch, seq_len]."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    cfg = SIZES[size]
    default_batch, default_seq = INPUTS[size]
    batch, seq_len = batch or default_batch, seq_len or default_seq
    if seq_len > cfg.max_seq_len:
        raise ValueError(f"seq_len {seq_len} is longer than the model's max_seq_len {cfg.max_seq_len}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Llama(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len), generator=generator)
    return model, (tokens,)


def build_tiny(batch: int | None = None, seq_len: int | None = None,
               seed: int = 0) -> tuple[Llama, tuple[torch.Tensor]]:
    return build("tiny", batch=batch, seq_len=seq_len, seed=seed)
