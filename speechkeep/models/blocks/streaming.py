"""What an inserted block needs beyond the LLM's own forward arguments: the number of positions it has
already seen in an incremental (KV-cached) pass, its causal convolutions' left context, and which
positions are speech.

- Per-block state lives on the Hugging Face cache object of the pass (``cache.__dict__``), keyed by the
  block, so it lives and dies with that cache: no cache = a full pass from position 0.
- Speech positions: :func:`speech_positions` sets a (batch, length) bool mask for the duration of an LLM
  call (:class:`~speechkeep.models.speech_llm.SpeechLLM` sets it in ``hidden_states`` and ``generate``);
  positions beyond its length (generated tokens) are text.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

_SPEECH: ContextVar[torch.Tensor | None] = ContextVar("speechkeep_speech_positions", default=None)
_STATE_KEY = "_speechkeep_block_state"


@contextmanager
def speech_positions(mask: torch.Tensor | None):
    """Within the block, ``mask`` (batch, length; True = a speech position) is what :func:`speech_mask` reads."""
    token = _SPEECH.set(mask)
    try:
        yield
    finally:
        _SPEECH.reset(token)


def block_state(cache, block: nn.Module) -> dict | None:
    """The block's state in ``cache`` (None without a cache; an empty dict on the first call)."""
    if cache is None:
        return None
    states = cache.__dict__.get(_STATE_KEY)
    if states is None:
        states = cache.__dict__[_STATE_KEY] = {}
        _follow_row_edits(cache, states)
    return states.setdefault(id(block), {})


def _follow_row_edits(cache, states: dict) -> None:
    """Make the cache's row edits (beam search's ``reorder_cache``, ``batch_repeat_interleave``,
    ``batch_select_indices``) apply to the blocks' state tensors too (dim 0 is the batch), and make
    ``crop`` (assisted decoding) a clear error: a convolution's left context cannot be rewound."""

    def rows(fn):
        for st in states.values():
            for k, v in list(st.items()):
                if isinstance(v, torch.Tensor):
                    st[k] = fn(v)

    def wrap(name, edit):
        orig = getattr(cache, name, None)
        if orig is None:
            return

        def method(arg):
            orig(arg)
            rows(lambda v: edit(v, arg))

        setattr(cache, name, method)

    wrap("reorder_cache", lambda v, idx: v.index_select(0, idx.to(v.device)))
    wrap("batch_repeat_interleave", lambda v, n: v.repeat_interleave(n, dim=0))
    wrap("batch_select_indices", lambda v, idx: v[idx.to(v.device)])
    if getattr(cache, "crop", None) is not None:
        orig_crop = cache.crop

        def crop(n):
            if any(isinstance(v, torch.Tensor) for st in states.values() for v in st.values()):
                raise NotImplementedError("this up-scaled LLM's cache cannot be cropped (assisted/speculative decoding): "
                                          "its E-Branchformer convolutions' left context cannot be rewound")
            orig_crop(n)
            length = cache.get_seq_length()
            for st in states.values():
                if "len" in st:
                    st["len"] = length

        cache.crop = crop


def past_length(state: dict | None) -> int:
    return 0 if not state else int(state.get("len", 0))


def speech_mask(batch: int, past: int, length: int, device) -> torch.Tensor | None:
    """(batch, length) bool: which of positions [past, past + length) are speech; None when no speech mask is
    set (no speech in the batch: a speech-only block then passes every position through unchanged, see
    :mod:`speechkeep.models.upscaling`)."""
    m = _SPEECH.get()
    if m is None:
        return None
    out = torch.zeros(m.shape[0], length, dtype=torch.bool, device=device)
    if past < m.shape[1]:
        seen = m[:, past: past + length].to(device)
        out[:, : seen.shape[1]] = seen
    if out.shape[0] != batch:
        if batch < out.shape[0]:  # a shared prompt prefix run once (its rows are identical and text)
            out = out[:1].expand(batch, -1)
        elif batch % out.shape[0] == 0:  # rows expanded for generation (num_return_sequences)
            out = out.repeat_interleave(batch // out.shape[0], dim=0)
        else:
            raise ValueError(f"speech positions of {out.shape[0]} rows for a batch of {batch}")
    return out


def valid_positions(attention_mask, q_len: int, past: int = 0) -> torch.Tensor | None:
    """(batch, q_len) bool: positions that are not padding, read from the diagonal of the LLM's 4-D
    attention mask (a pad position may not attend to itself); None when the mask does not say
    (no mask, or a kernel-specific mask object). ``past``: positions already in the cache. A dynamic
    cache's mask ends at the current positions; a static cache's (``cache_implementation='static'``)
    spans its whole preallocated length, so the current positions start at ``past``."""
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4 or attention_mask.shape[-2] != q_len:
        return None
    kv = attention_mask.shape[-1]
    if kv < q_len:
        return None
    start = min(past, kv - q_len)
    rows = torch.arange(q_len, device=attention_mask.device)
    diag = attention_mask[:, 0, rows, start + rows]
    return diag if diag.dtype == torch.bool else diag == 0


class CausalDepthwiseConv(nn.Module):
    """Depthwise 1-D convolution over time that sees only the current and the k-1 previous positions
    (left padding only). In an incremental pass it keeps the last k-1 inputs as its left context."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, padding=0, bias=bias)

    def forward(self, x: torch.Tensor, state: dict | None = None, key: str = "conv") -> torch.Tensor:
        """x: (batch, time, channels) -> same shape; ``state``: the block's cache state (or None)."""
        k = self.kernel_size
        prev = state.get(key) if state else None
        if prev is None:
            prev = x.new_zeros(x.shape[0], k - 1, x.shape[2])
        elif prev.shape[0] != x.shape[0]:  # a shared prefix's state, its cache repeated over the batch
            prev = prev.repeat_interleave(x.shape[0] // prev.shape[0], dim=0)
        full = torch.cat([prev.to(x.dtype), x], dim=1)
        if state is not None:
            state[key] = full[:, full.shape[1] - (k - 1):]
        return self.conv(full.transpose(1, 2)).transpose(1, 2)
