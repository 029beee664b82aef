"""The CTC output of the speech adaptor (``AdaptorConfig.output='ctc'``): MLP outputs scored against
the LLM's own (frozen) token embeddings plus a learned blank, greedy CTC decoding, and what the LLM
reads per emitted token (posterior-weighted token embeddings, or the best token's).

:class:`CTCHead` is a mixin of :class:`~speechkeep.models.adaptor.FrameStackAdaptor`: its buffer
``ctc_vocab`` and its ``blank`` layer live on the adaptor module itself (the saved weights' names are
``ctc_vocab`` and ``blank.*``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def ctc_vocabulary(token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """The CTC vocabulary: every LLM token id occurring in the transcripts, sorted."""
    return torch.tensor(sorted({t for ids in token_ids for t in ids}), dtype=torch.long)


def ctc_feasible(n_frames: int, labels: Sequence[int]) -> bool:
    """Whether CTC can align ``labels`` to ``n_frames`` outputs (repeats need a blank between)."""
    repeats = sum(a == b for a, b in zip(labels, labels[1:]))
    return 0 < len(labels) and len(labels) + repeats <= n_frames


def ctc_loss(adaptor, frames: list[torch.Tensor], targets: list[list[int]], vocab_emb: torch.Tensor,
             compact: bool = True) -> torch.Tensor:
    """Mean CTC loss (per target token, then over the batch) of a batch; targets are CTC labels (1..V).

    ``compact`` (the default) is the same loss, cheaper for a large vocabulary: CTC's forward-backward only
    reads the log-probabilities of the blank and of the labels in the batch's targets, so the softmax is
    normalized over all 1+V classes once per frame (a log-sum-exp on the unpadded frames) and only those
    columns (typically a few thousand of tens of thousands), plus one column with the rest of the
    probability mass, enter the padded CTC computation. Values and
    gradients equal the full computation's (``compact=False``) up to float rounding (tested)."""
    hs = adaptor.frame_outputs(frames)
    lens = torch.tensor([h.shape[0] for h in hs])
    logits = adaptor.ctc_logits(torch.cat(hs), vocab_emb).float()
    tgt = torch.tensor([t for ts in targets for t in ts], dtype=torch.long, device=logits.device)
    tlen = torch.tensor([len(ts) for ts in targets], dtype=torch.long)
    if compact:
        used = torch.unique(tgt)  # sorted labels 1..V of this batch
        cols = torch.cat([used.new_zeros(1), used])
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        logp = logits[:, cols] - lse
        if cols.numel() < logits.shape[1]:
            # one more column holding the remaining probability mass, so each frame's compact distribution sums to
            # 1: torch's CTC backward returns exp(log_probs) - posteriors, which is the true gradient only when
            # composed with a normalization over all the columns it sees (with it, the gradients are exact)
            rest = torch.logsumexp(logits.index_fill(1, cols, float("-inf")), dim=-1, keepdim=True) - lse
            logp = torch.cat([logp, rest], dim=-1)
        tgt = torch.searchsorted(used, tgt) + 1
    else:
        logp = torch.log_softmax(logits, dim=-1)
    padded = nn.utils.rnn.pad_sequence(list(torch.split(logp, lens.tolist())), batch_first=False)
    return nn.functional.ctc_loss(padded, tgt, lens, tlen, blank=0, reduction="mean", zero_infinity=True)


class CTCHead:
    """CTC over a vocabulary of LLM tokens (index 0 = blank, i = ``ctc_vocab[i-1]``). The host module
    provides ``config`` (an ``AdaptorConfig``) and ``frame_outputs``."""

    def init_ctc_head(self, d_llm: int, vocab_size: int) -> None:
        self.register_buffer("ctc_vocab", torch.zeros(vocab_size, dtype=torch.long))
        self.blank = nn.Linear(d_llm, 1)

    def has_ctc_vocabulary(self) -> bool:
        """Whether the CTC vocabulary was set (a new head's ``ctc_vocab`` is all zeros)."""
        return bool(self.ctc_vocab.any())

    def set_ctc_vocabulary(self, token_ids: torch.Tensor) -> None:
        """Give a new CTC head its vocabulary (sorted LLM token ids; the size may differ from the
        config's, which is updated: no weight depends on it, only the ``ctc_vocab`` buffer)."""
        self.ctc_vocab = token_ids.to(dtype=torch.long, device=self.ctc_vocab.device).clone()
        self.config.ctc_vocab_size = int(token_ids.numel())

    def vocab_embeddings(self, token_embedding: nn.Module) -> torch.Tensor:
        """(V, d_llm): the LLM's input embeddings of the CTC vocabulary (what the LLM reads)."""
        return token_embedding(self.ctc_vocab)

    def ctc_logits(self, hidden: torch.Tensor, vocab_emb: torch.Tensor) -> torch.Tensor:
        """(n, d_llm) MLP outputs -> (n, 1 + V) CTC logits, index 0 = blank, i = ``ctc_vocab[i-1]``."""
        return torch.cat([self.blank(hidden), hidden @ vocab_emb.to(hidden.dtype).T], dim=-1)

    @staticmethod
    def greedy_runs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy CTC path of (n, 1+V) logits -> (run id of each frame: the index of the emitted token it
        belongs to, -1 for blank frames; the emitted CTC labels, one per run of equal non-blank labels)."""
        best = logits.argmax(-1)
        prev = torch.cat([best.new_full((1,), -1), best[:-1]])
        starts = (best != 0) & (best != prev)
        run = torch.cumsum(starts.long(), 0) - 1
        run = torch.where(best != 0, run, torch.full_like(run, -1))
        return run, best[starts]

    def ctc_decode(self, frames: list[torch.Tensor], token_embedding: nn.Module) -> list[list[int]]:
        """Greedy CTC transcription of each utterance as LLM token ids."""
        vocab_emb = self.vocab_embeddings(token_embedding)
        out = []
        for h in self.frame_outputs(frames):
            _, labels = self.greedy_runs(self.ctc_logits(h, vocab_emb))
            out.append(self.ctc_vocab[labels - 1].tolist())
        return out

    def _emit(self, hidden: torch.Tensor, vocab_emb: torch.Tensor) -> torch.Tensor:
        """One LLM input embedding per token of the greedy CTC path (at least one per utterance)."""
        logits = self.ctc_logits(hidden, vocab_emb).float()
        run, labels = self.greedy_runs(logits.detach())
        if labels.numel() == 0:  # all blank: the frame least sure it is blank
            run = torch.full_like(run, -1)
            run[logits[:, 0].argmin()] = 0
            labels = logits[:, 1:].argmax(-1)[run == 0] + 1
        n = int(labels.numel())
        if self.config.ctc_emit == "hard":
            return vocab_emb[labels - 1].to(hidden.dtype)
        keep = run >= 0
        probs = torch.softmax(logits[keep, 1:], dim=-1)  # renormalized over the tokens (no blank)
        mean = probs.new_zeros(n, probs.shape[1]).index_add(0, run[keep], probs)
        mean = mean / torch.bincount(run[keep], minlength=n).clamp_min(1).unsqueeze(1).to(mean.dtype)
        return (mean @ vocab_emb.float()).to(hidden.dtype)

