"""The speech adaptor: frame stacking + MLP (LLaMA-Omni / SLAM-LLM "linear" projector).

k consecutive encoder frames are concatenated (the remainder is dropped, or zero-padded) and mapped
by Linear(k*d_enc -> hidden) -> ReLU -> Linear(hidden -> d_llm). With Whisper's 50 frames/s and
k=5 that is 10 speech tokens per second.

Two outputs (``AdaptorConfig.output``):

* ``embeddings`` — the MLP outputs go to the LLM as they are (LLaMA-Omni, SLAM-LLM);
* ``ctc`` — the MLP outputs are scored against the LLM's own (frozen) token embeddings plus a
  learned blank: CTC logits over a vocabulary of LLM tokens (``ctc_vocab``, a buffer saved with the
  weights; :mod:`speechkeep.models.ctc_head`). The adaptor is trained with CTC (:mod:`speechkeep.align.ctc`), and the LLM receives, for
  every token the greedy CTC path emits (non-blank frames, repeats merged), the
  posterior-weighted average of the token embeddings (LegoSLM-style, ``ctc_emit='soft'``; gradients
  flow through the posteriors) or the embedding of the best token (``'hard'``). The LLM thus reads
  in-distribution inputs: about one embedding per spoken token, each close to a real token's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from speechkeep.config import Checked, check_ranges, ranged
from speechkeep.models.ctc_head import CTCHead


@dataclass
class AdaptorConfig(Checked):
    """Shape of the frame-stacking MLP adaptor."""

    stack_frames: int = ranged(5, ge=1)
    """k: consecutive encoder frames concatenated into one speech token (LLaMA-Omni: 5)."""
    hidden_size: int = ranged(2048, ge=1)
    """Width of the MLP's hidden layer (LLaMA-Omni: 2048)."""
    remainder: Literal["drop", "pad"] = "drop"
    """What to do with the last T mod k frames: drop them, or zero-pad to a full group."""
    output: Literal["embeddings", "ctc"] = "embeddings"
    """'embeddings': the MLP outputs are the LLM's speech inputs; 'ctc': they are CTC-decoded onto the LLM's token embeddings (see the module docstring)."""
    ctc_vocab_size: int = ranged(0, ge=0)
    """output='ctc': number of LLM tokens the CTC head can emit (the ids are the ctc_vocab buffer, set by the alignment stage)."""
    ctc_emit: Literal["soft", "hard"] = "soft"
    """output='ctc': what the LLM gets per emitted token: posterior-weighted token embeddings ('soft') or the best token's embedding ('hard')."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.output not in ("embeddings", "ctc"):
            raise ValueError(f"output must be 'embeddings' or 'ctc', got {self.output!r}")
        if self.ctc_emit not in ("soft", "hard"):
            raise ValueError(f"ctc_emit must be 'soft' or 'hard', got {self.ctc_emit!r}")
        if self.output == "ctc" and self.ctc_vocab_size < 1:
            raise ValueError("output='ctc' needs ctc_vocab_size >= 1 (the number of LLM tokens the CTC head emits)")


class FrameStackAdaptor(CTCHead, nn.Module):
    """Maps variable-length encoder frames to LLM input embeddings (the CTC output: :class:`CTCHead`)."""

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
        if self.config.output == "ctc":
            self.init_ctc_head(d_llm, self.config.ctc_vocab_size)

    @property
    def is_ctc(self) -> bool:
        return self.config.output == "ctc"

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

    def frame_outputs(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each ``(T_i, d_encoder)`` -> MLP outputs ``(num_tokens(T_i), d_llm)``; one matmul for the batch."""
        if not frames:
            return []
        dtype = self.proj[0].weight.dtype
        stacked = [self.stack(f.to(dtype)) for f in frames]
        out = self.proj(torch.cat(stacked, dim=0))
        return list(torch.split(out, [s.shape[0] for s in stacked], dim=0))

    def forward(self, frames: list[torch.Tensor], token_embedding: nn.Module | None = None) -> list[torch.Tensor]:
        """Each ``(T_i, d_encoder)`` -> LLM inputs: ``(num_tokens(T_i), d_llm)`` MLP outputs, or with
        ``output='ctc'`` one embedding per CTC-emitted token (``token_embedding``: the LLM's input
        embedding layer, required then)."""
        outs = self.frame_outputs(frames)
        if not self.is_ctc:
            return outs
        if token_embedding is None:
            raise ValueError("a CTC adaptor needs the LLM's token_embedding to build its outputs")
        vocab_emb = self.vocab_embeddings(token_embedding)
        return [self._emit(h, vocab_emb) for h in outs]
