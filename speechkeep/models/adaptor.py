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

Two architectures on top of the frame stacking (``AdaptorConfig.arch``):

* ``mlp`` — Linear -> ReLU -> Linear, each stacked frame on its own (the default, and every adaptor
  saved before this option existed);
* ``transformer`` / ``conformer`` — Linear(k*d_enc -> hidden) -> a convolutional relative-position
  embedding (depthwise convolution over the stacked frames, residual, as in wav2vec 2.0) -> ``layers``
  pre-norm Transformer encoder layers (``heads`` attention heads, feed-forward ``ffn_size``) over the
  stacked frames of each utterance (padding masked) -> LayerNorm -> Linear(hidden -> d_llm).
  ``conformer`` adds a Conformer convolution module (pointwise + GLU, depthwise convolution of width
  ``conv_kernel``, LayerNorm, SiLU, pointwise; residual) after each layer's attention block.
  Every stacked frame then sees its context (the MLP sees 100 ms of speech), which CTC over many
  tokens needs when a token's sound spans more than one stacked frame.
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
    arch: Literal["mlp", "transformer", "conformer"] = "mlp"
    """Layers on top of the frame stacking: 'mlp' (Linear-ReLU-Linear per stacked frame), 'transformer' or 'conformer' (a small encoder over the stacked frames; see the module docstring)."""
    layers: int = ranged(2, ge=1)
    """arch='transformer'/'conformer': encoder layers."""
    heads: int = ranged(4, ge=1)
    """arch='transformer'/'conformer': attention heads (hidden_size must be divisible by it)."""
    ffn_size: int = ranged(1024, ge=1)
    """arch='transformer'/'conformer': feed-forward width of each layer."""
    conv_kernel: int = ranged(15, ge=1)
    """arch='transformer'/'conformer': width (in stacked frames) of the positional and Conformer depthwise convolutions (odd)."""
    dropout: float = ranged(0.1, ge=0, lt=1)
    """arch='transformer'/'conformer': dropout in the encoder layers during training."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.output not in ("embeddings", "ctc"):
            raise ValueError(f"output must be 'embeddings' or 'ctc', got {self.output!r}")
        if self.ctc_emit not in ("soft", "hard"):
            raise ValueError(f"ctc_emit must be 'soft' or 'hard', got {self.ctc_emit!r}")
        if self.arch not in ("mlp", "transformer", "conformer"):
            raise ValueError(f"arch must be 'mlp', 'transformer' or 'conformer', got {self.arch!r}")
        if self.arch != "mlp" and self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads})")
        if self.arch != "mlp" and self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {self.conv_kernel}")
        if self.output == "ctc" and self.ctc_vocab_size < 1:
            raise ValueError("output='ctc' needs ctc_vocab_size >= 1 (the number of LLM tokens the CTC head emits)")


class FrameStackAdaptor(CTCHead, nn.Module):
    """Maps variable-length encoder frames to LLM input embeddings (the CTC output: :class:`CTCHead`)."""

    def __init__(self, d_encoder: int, d_llm: int, config: AdaptorConfig | None = None):
        super().__init__()
        self.config = config or AdaptorConfig()
        k = self.config.stack_frames
        self.d_encoder, self.d_llm = d_encoder, d_llm
        if self.config.arch == "mlp":
            self.proj = nn.Sequential(
                nn.Linear(k * d_encoder, self.config.hidden_size),
                nn.ReLU(),
                nn.Linear(self.config.hidden_size, d_llm),
            )
        else:
            self.encoder = StackedFrameEncoder(k * d_encoder, d_llm, self.config)
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
        if self.config.arch != "mlp":
            stacked = [self.stack(f.to(self.encoder.inp.weight.dtype)) for f in frames]
            return self.encoder(stacked)
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


class _ConvModule(nn.Module):
    """Conformer convolution module: LayerNorm, pointwise (2x) + GLU, depthwise conv, LayerNorm, SiLU, pointwise."""

    def __init__(self, d: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, 2 * d)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.norm2 = nn.LayerNorm(d)
        self.pw2 = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        y = nn.functional.glu(self.pw1(self.norm(x)), dim=-1) * keep
        y = self.dw(y.transpose(1, 2)).transpose(1, 2)
        return x + self.drop(self.pw2(nn.functional.silu(self.norm2(y))))


class StackedFrameEncoder(nn.Module):
    """Linear -> convolutional position embedding -> Transformer (or Conformer) layers -> LayerNorm -> Linear,
    over each utterance's stacked frames (a padded batch with a key-padding mask)."""

    def __init__(self, d_in: int, d_out: int, cfg: AdaptorConfig):
        super().__init__()
        d = cfg.hidden_size
        self.inp = nn.Linear(d_in, d)
        self.pos_conv = nn.Conv1d(d, d, cfg.conv_kernel, padding=cfg.conv_kernel // 2, groups=16 if d % 16 == 0 else 1)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, cfg.heads, cfg.ffn_size, cfg.dropout, activation="gelu", batch_first=True,
                                       norm_first=True) for _ in range(cfg.layers))
        self.convs = nn.ModuleList(_ConvModule(d, cfg.conv_kernel, cfg.dropout) for _ in range(cfg.layers)) \
            if cfg.arch == "conformer" else None
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, d_out)

    def forward(self, stacked: list[torch.Tensor]) -> list[torch.Tensor]:
        lens = [s.shape[0] for s in stacked]
        x = self.inp(nn.utils.rnn.pad_sequence(stacked, batch_first=True))
        pad = torch.arange(x.shape[1], device=x.device)[None, :] >= torch.tensor(lens, device=x.device)[:, None]
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        x = x * keep
        x = x + nn.functional.gelu(self.pos_conv(x.transpose(1, 2)).transpose(1, 2)) * keep
        for i, layer in enumerate(self.layers):
            x = layer(x, src_key_padding_mask=pad)
            if self.convs is not None:
                x = self.convs[i](x, keep)
        y = self.out(self.norm(x))
        return [y[i, :n] for i, n in enumerate(lens)]
