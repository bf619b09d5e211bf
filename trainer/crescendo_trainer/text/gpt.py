"""The built-in language model ("gpt"): a small byte-level GPT, its loss and its evaluation.

This module owns the architecture, shaped like nanoGPT (Karpathy, github.com/karpathy/nanoGPT,
after GPT-2: Radford et al. 2019): token plus learned position embeddings, `layers` pre-LayerNorm
blocks (causal self-attention through `scaled_dot_product_attention(is_causal=True)`, then a
GELU MLP 4× wide), a final LayerNorm and a head tied to the token embedding. No BatchNorm: the
loss of a sequence does not depend on the others in its micro-batch, so it does not depend on how
the global batch is split across processes. The defaults (0.44 M parameters) take ~45 ms for one
AdamW step (forward, backward, update) at batch 32 × seq 64 on two CPU cores (torch 2.13 CPU;
median of 40 steps 44.6 ms, fastest 42.5 ms).

It also owns the validation score: `lm_loss_sums` returns the summed token loss and the token
count of one rank's stripe of the first `sequences` validation windows, so the caller can
all-reduce both and divide; `evaluate_lm` does that for a single process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn

from crescendo_trainer.text.windows import TokenWindows

INIT_STD = 0.02  # GPT-2's weight initialisation


@dataclass(frozen=True, kw_only=True)
class GptConfig:
    vocab_size: int = 256  # byte-level tokens (text.corpus.VOCAB_SIZE)
    seq_len: int  # the context: positions learned, the longest input (spec.language.seqLen)
    layers: int = 2  # depth; with width 128 a step at 32 × 64 takes ~45 ms on two CPU cores
    heads: int = 4  # 32-wide heads at width 128
    width: int = 128  # residual width: 0.44 M parameters in all (the cost grows as width²)
    dropout: float = 0.0  # none: 0.44 M parameters are too few to memorise 10 M tokens

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "layers", "heads", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"GptConfig.{name} must be >= 1 (got {getattr(self, name)})")
        if self.width % self.heads:
            raise ValueError(
                f"GptConfig.width={self.width} must be a multiple of heads={self.heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GptConfig.dropout must be in [0, 1) (got {self.dropout})")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GptConfig) -> None:
        super().__init__()
        self.heads, self.dropout = config.heads, config.dropout
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = (
            part.view(n, t, self.heads, c // self.heads).transpose(1, 2)
            for part in self.qkv(x).split(c, dim=2)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        out: torch.Tensor = self.resid_dropout(self.proj(y.transpose(1, 2).reshape(n, t, c)))
        return out


class Mlp(nn.Module):
    def __init__(self, config: GptConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.width, 4 * config.width)
        self.proj = nn.Linear(4 * config.width, config.width)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dropout(self.proj(F.gelu(self.fc(x))))
        return out


class Block(nn.Module):
    def __init__(self, config: GptConfig) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(config.width), CausalSelfAttention(config)
        self.ln2, self.mlp = nn.LayerNorm(config.width), Mlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        out: torch.Tensor = x + self.mlp(self.ln2(x))
        return out


class Gpt(nn.Module):
    """idx (N×T int64, T <= seq_len) -> logits (N×T×vocab_size)."""

    def __init__(self, config: GptConfig) -> None:
        super().__init__()
        self.config = config
        self.tokens = nn.Embedding(config.vocab_size, config.width)
        self.positions = nn.Embedding(config.seq_len, config.width)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.vocab_size, bias=False)
        # Tied (Press & Wolf 2017): one matrix reads and writes tokens; a quarter fewer weights.
        self.head.weight = self.tokens.weight
        self.apply(_init_weights)
        # GPT-2's scaled residual init: each block adds two projections to the residual stream,
        # so their std shrinks by sqrt(2 * layers) to keep the stream's variance at init ~1.
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(parameter, 0.0, INIT_STD / math.sqrt(2 * config.layers))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.config.seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than seq_len={self.config.seq_len}")
        positions = torch.arange(t, device=idx.device)
        x = self.dropout(self.tokens(idx) + self.positions(positions))
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.ln_f(x))
        return logits


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, INIT_STD)


def build_gpt(seq_len: int) -> Gpt:
    """The built-in "gpt" with the default config; the caller seeds torch first (`spec.seed`)."""
    return Gpt(GptConfig(seq_len=seq_len))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy over every token of the batch (nats)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def lm_loss_sums(
    model: nn.Module,
    windows: TokenWindows,
    sequences: int,
    device: torch.device,
    batch: int = 64,
    rank: int = 0,
    world: int = 1,
) -> tuple[float, int]:
    """(summed token loss, tokens) over windows `range(rank, sequences, world)`, in eval mode.

    The first `sequences` windows of the split (at most all of them) are the same every call,
    so successive scores are comparable; the ranks' stripes partition them, so the all-reduced
    sums divided give the mean over all of them at any world size. The model's previous
    training mode is restored.
    """
    if sequences < 1 or batch < 1 or not 0 <= rank < world:
        raise ValueError(
            f"need sequences >= 1, batch >= 1 and 0 <= rank < world "
            f"(got {sequences}, {batch}, {rank}, {world})"
        )
    stripe = list(range(rank, min(sequences, len(windows)), world))
    was_training = model.training
    model.eval()
    # Summed on the device, read once: one host sync per evaluation, not per batch.
    total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for begin in range(0, len(stripe), batch):
            x, y = windows.__getitems__(stripe[begin : begin + batch])
            logits = model(x.to(device))
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.to(device).reshape(-1), reduction="sum"
            ).double()
    finally:
        model.train(was_training)
    return float(total.item()), len(stripe) * windows.seq_len


def evaluate_lm(
    model: nn.Module, windows: TokenWindows, sequences: int, device: torch.device, batch: int = 64
) -> tuple[float, float]:
    """(mean validation loss, perplexity = exp(loss)) of one process over `sequences` windows."""
    total, tokens = lm_loss_sums(model, windows, sequences, device, batch)
    loss = total / tokens
    return loss, math.exp(loss)
