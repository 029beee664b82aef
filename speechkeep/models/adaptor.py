"""The speech adaptor: frame stacking + MLP (LLaMA-Omni / SLAM-LLM "linear" projector).

k consecutive encoder frames are concatenated (the remainder is dropped, or zero-padded) and mapped
by Linear(k*d_enc -> hidden) -> ReLU -> Linear(hidden -> d_llm). With Whisper's 50 frames/s and
k=5 that is 10 speech tokens per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass
class AdaptorConfig:
    """Shape of the frame-stacking MLP adaptor."""

    stack_frames: int = 5
    """k: consecutive encoder frames concatenated into one speech token (LLaMA-Omni: 5)."""
    hidden_size: int = 2048
    """Width of the MLP's hidden layer (LLaMA-Omni: 2048)."""
    remainder: Literal["drop", "pad"] = "drop"
    """What to do with the last T mod k frames: drop them, or zero-pad to a full group."""

    def __post_init__(self) -> None:
        if self.stack_frames < 1:
            raise ValueError(f"stack_frames must be >= 1, got {self.stack_frames}")
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {self.hidden_size}")


class FrameStackAdaptor(nn.Module):
    """Maps variable-length encoder frames to LLM input embeddings."""

    def __init__(self, d_encoder: int, d_llm: int, config: AdaptorConfig | None = None):
        super().__init__()
        self.config = config or AdaptorConfig()
        k = self.config.stack_frames
        self.d_encoder, self.d_llm = d_encoder, d_llm
        self.proj = nn.Sequential(
            nn.Linear(k * d_encoder, self.config.hidden_size),
            nn.ReLU(),
            nn.Linear(self.config.hidden_size, d_llm),
        )

    def num_tokens(self, n_frames: int) -> int:
        """Speech tokens produced from ``n_frames`` encoder frames."""
        k = self.config.stack_frames
        n = n_frames // k if self.config.remainder == "drop" else -(-n_frames // k)
        return max(n, 1)

    def stack(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, d) -> (num_tokens(T), k*d)."""
        k = self.config.stack_frames
        n = self.num_tokens(frames.shape[0])
        need = n * k
        if frames.shape[0] < need:
            frames = nn.functional.pad(frames, (0, 0, 0, need - frames.shape[0]))
        return frames[:need].reshape(n, k * frames.shape[1])

    def forward(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each ``(T_i, d_encoder)`` -> ``(num_tokens(T_i), d_llm)``; one matmul for the whole batch."""
        if not frames:
            return []
        dtype = self.proj[0].weight.dtype
        stacked = [self.stack(f.to(dtype)) for f in frames]
        out = self.proj(torch.cat(stacked, dim=0))
        return list(torch.split(out, [s.shape[0] for s in stacked], dim=0))
