"""A small pre-norm transformer with an optional key/value cache for step-by-step causal decoding.

Written out (rather than ``nn.TransformerEncoder``) so that training, batched rollout and re-scoring run the same
kernels: PyTorch's inference fast path differs numerically from its training path, which would make a
re-scored log-prob differ from the sampling one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Linear(ff, dim))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, causal: bool = False, cache: dict | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (B, T, D). With ``cache`` (a dict kept by the caller), ``x`` holds only new positions and
        attends to the cached keys/values as well (causal decoding one step at a time). ``mask``: (T, T) bool,
        True where a query position may attend to a key position (not with ``causal``)."""
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], 2)
                v = torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        is_causal = causal and t > 1
        if is_causal and k.shape[2] != t:
            raise ValueError("causal attention with a cache needs one new position per call")
        drop = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=drop)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, t, d)), drop, self.training)
        return x + F.dropout(self.ff(self.norm2(x)), drop, self.training)


class Transformer(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, ff: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer dim {dim} must be divisible by heads {heads}")
        self.blocks = nn.ModuleList(Block(dim, heads, ff or 2 * dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, causal: bool = False, caches: list[dict] | None = None, mask=None) -> torch.Tensor:
        for i, blk in enumerate(self.blocks):
            x = blk(x, causal=causal, cache=None if caches is None else caches[i], mask=mask)
        return self.norm(x)
