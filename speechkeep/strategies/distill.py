"""``distill``: cross-modal knowledge distillation from the pristine text LLM (seed 002: cross-modal distillation for catastrophic forgetting and modality inequivalence in speech LLMs).

The student (the parameters of ``distill.student``: ``lora``, ``full`` or ``adaptor``) learns the
target responses (``ce``) while its output distribution over every response token stays close to what
the untouched text LLM says, through two channels:

- ``kl_t2t`` (text-to-text): student and teacher both read the text question;
- ``kl_s2t`` (speech-to-text): the student reads the spoken question, the teacher its transcript.

The teacher is the original LLM, pristine and never trained: with a LoRA student it is the same base
weights with the adapters disabled (peft's ``disable_adapter()``, no second copy in memory); with an
adaptor-only student the LLM is frozen anyway; with a full student it is a frozen copy taken before
training (one more LLM in memory: SmolLM2-135M's 134.5 M parameters are 538 MB in fp32, computed). Teacher passes run under
``torch.no_grad`` in eval mode, and their logits are computed only at response positions.

Student and teacher sequences differ in length (speech frames vs text tokens), so their response
positions are matched by order: :meth:`SpeechLLM.response_logits` lists the positions that predict a
response token row by row, and the targets of both sides must be identical token for token (checked).

Cost of a step (see ``benchmarks/bench_distill.py``): one teacher pass (or none, with the top-k cache)
serves both channels, since the s2t teacher reads the transcript and the t2t teacher the text question,
the same token sequence; the student's speech and text passes run as one forward when their lengths are
close, the teacher then in the same layout (so a LoRA student with B = 0 still gives kl_t2t exactly 0);
the KL terms are computed chunk by chunk with analytic gradients (:func:`fused_divergences`); with an
adaptor student the text pass is skipped (the frozen LLM reading text is the teacher: kl_t2t = 0).

Teacher cache (``distill.cache_top_k`` = k > 0): :meth:`Distill.begin` computes, once per teacher, training
set, temperature and k, the teacher's top-k log-probabilities per response token (the remaining mass as
one more bucket) into one file (atomic writes, a partial file every minute is continued by the next run);
the KL terms are then computed over those k + 1 buckets (:func:`top_k_divergence`; equal to the full KL
when k is the vocabulary) and no training step runs the teacher.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from speechkeep.config import Checked, ranged
from speechkeep.errors import ConfigError, SpeechkeepError
from speechkeep.strategies.base import STRATEGIES, LossTerms, Strategy, register, task_losses
from speechkeep.io import tensor_fingerprint  # noqa: F401  (re-exported: moved to speechkeep.io)

TERMS = ("ce", "kl_t2t", "kl_s2t")
log = logging.getLogger(__name__)


@dataclass
class DistillSettings(Checked):
    """Cross-modal distillation (strategy=distill)."""

    student: Literal["lora", "full", "adaptor"] = "lora"
    """Which parameters train: those of this strategy (its settings apply, e.g. lora.r)."""
    weights: dict[str, float] = ranged(default_factory=lambda: {"ce": 1.0, "kl_t2t": 1.0, "kl_s2t": 1.0}, ge=0)
    """Weight of each loss term: ce (next-token loss on the target response), kl_t2t, kl_s2t; 0 switches a term off."""
    temperature: float = ranged(2.0, gt=0)
    """Softmax temperature of both distributions in the KL terms."""
    kl: Literal["forward", "reverse", "jsd"] = "forward"
    """forward = KL(teacher || student), reverse = KL(student || teacher), jsd = Jensen-Shannon divergence."""
    t2_scale: bool = True
    """Multiply the KL terms by T^2 (keeps their gradient scale independent of the temperature)."""
    cache_top_k: int = ranged(0, ge=0)
    """Teacher cache (0 = off): before training, store the teacher's k most likely tokens per response token of
    the training set on disk (log-probabilities at the temperature, the rest of the mass as one bucket); the
    KL terms are then computed over those k + 1 buckets and no step runs the teacher."""
    cache_dir: str | None = None
    """Directory of the teacher cache files (default: speechkeep's cache, ``distill/``); a file is named by a
    fingerprint of the teacher's weights, the training texts, the temperature and k."""


def distill_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "forward",
                       temperature: float = 1.0, t2_scale: bool = True) -> torch.Tensor:
    """Mean over positions of the divergence between teacher and student next-token distributions at
    temperature T ((N, vocab) logits each): forward KL(p_t || p_s), reverse KL(p_s || p_t), or the
    Jensen-Shannon divergence; times T^2 when ``t2_scale``. The reference implementation (plain autograd);
    training uses :func:`fused_divergences`, which gives the same values and gradients (tested)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}")
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if kind == "forward":
        per_pos = (log_t.exp() * (log_t - log_s)).sum(-1)
    elif kind == "reverse":
        per_pos = (log_s.exp() * (log_s - log_t)).sum(-1)
    elif kind == "jsd":
        log_m = torch.logsumexp(torch.stack([log_s, log_t]), dim=0) - math.log(2.0)
        per_pos = 0.5 * (log_t.exp() * (log_t - log_m)).sum(-1) + 0.5 * (log_s.exp() * (log_s - log_m)).sum(-1)
    else:
        raise ValueError(f"unknown divergence {kind!r}; use forward, reverse or jsd")
    out = per_pos.mean()
    return out * temperature**2 if t2_scale else out


# Rows of (N, vocab) logits processed at once by the fused divergence on CPU: a few MB per buffer, so
# the intermediates stay in cache (one pass over RAM per input and per gradient).
_CHUNK_FLOATS = 1 << 18


def _chunk_divergence(log_s: torch.Tensor, log_t: torch.Tensor, kind: str, temperature: float):
    """Per-row divergence and its gradient with respect to the student's logits (before the 1/N and
    T^2 factors) for one chunk of rows; ``log_s``/``log_t`` are log-softmaxes at temperature T."""
    p_s = log_s.exp()
    if kind == "forward":  # KL(t || s); d/dz_s = (p_s - p_t) / T
        p_t = log_t.exp()
        per_row = (p_t * (log_t - log_s)).sum(-1)
        grad = p_s.sub_(p_t)
    elif kind == "reverse":  # KL(s || t); d/dz_s = p_s * ((log_s - log_t) - KL) / T
        diff = log_s - log_t
        per_row = (p_s * diff).sum(-1)
        grad = diff.sub_(per_row[:, None]).mul_(p_s)
    elif kind == "jsd":  # d/dz_s = p_s * (g - sum(p_s g)) / T, g = (log_s - log_m) / 2
        p_t = log_t.exp()
        log_m = torch.logaddexp(log_s, log_t) - math.log(2.0)
        log_m = torch.where(log_s == log_t, log_s, log_m)  # exact where the two agree (0 for identical logits)
        per_row = 0.5 * (p_t * (log_t - log_m)).sum(-1) + 0.5 * (p_s * (log_s - log_m)).sum(-1)
        g = (log_s - log_m).mul_(0.5)
        grad = g.sub_((p_s * g).sum(-1, keepdim=True)).mul_(p_s)
    else:
        raise ValueError(f"unknown divergence {kind!r}; use forward, reverse or jsd")
    return per_row, grad.div_(temperature)


def _save_gradients(ctx, grads, needs, scale, n, totals):
    """End of a fused forward: keep the analytic gradients (computed in the forward) for the backward and
    return the per-student totals scaled by ``scale / n``."""
    ctx.scale = scale / max(n, 1)
    ctx.save_for_backward(*[g for g in grads if g is not None])
    ctx.needs = needs
    return tuple(t * ctx.scale for t in totals)


def _scaled_gradients(ctx, grad_outputs):
    """Backward of a fused divergence: each student's saved gradient times its output's gradient."""
    saved = iter(ctx.saved_tensors)
    out = []
    for need, g_out in zip(ctx.needs, grad_outputs):
        g = next(saved) if need else None
        out.append(None if g is None else g * (g_out * ctx.scale).to(g.dtype))
    return out


class _FusedDivergences(torch.autograd.Function):
    """Divergences of several students' logits from one teacher's, computed chunk by chunk with their
    gradients in the same pass (the teacher's log-softmax once for all students)."""

    @staticmethod
    def forward(ctx, kind, temperature, scale, teacher, *students):
        n, v = teacher.shape
        chunk = n if teacher.is_cuda else max(1, _CHUNK_FLOATS // max(v, 1))
        needs = [s.requires_grad for s in students]
        grads = [torch.empty_like(s, dtype=torch.float32) if need else None for s, need in zip(students, needs)]
        totals = [teacher.new_zeros((), dtype=torch.float32) for _ in students]
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            log_t = F.log_softmax(teacher[a:b].float() / temperature, dim=-1)
            for i, s in enumerate(students):
                log_s = F.log_softmax(s[a:b].float() / temperature, dim=-1)
                per_row, grad = _chunk_divergence(log_s, log_t, kind, temperature)
                totals[i] += per_row.sum()
                if grads[i] is not None:
                    grads[i][a:b] = grad
        return _save_gradients(ctx, grads, needs, scale, n, totals)

    @staticmethod
    def backward(ctx, *grad_outputs):
        return (None, None, None, None, *_scaled_gradients(ctx, grad_outputs))


def fused_divergences(students: list[torch.Tensor], teacher_logits: torch.Tensor, kind: str = "forward",
                      temperature: float = 1.0, t2_scale: bool = True) -> list[torch.Tensor]:
    """:func:`distill_divergence` of each student's (N, vocab) logits from the same teacher logits, in one
    chunked pass (values equal up to float rounding, identical logits give exactly 0, gradients
    analytic: (p_s - p_t) / T for the forward KL)."""
    for s in students:
        if s.shape != teacher_logits.shape:
            raise ValueError(f"student logits {tuple(s.shape)} vs teacher {tuple(teacher_logits.shape)}")
    if kind not in ("forward", "reverse", "jsd"):
        raise ValueError(f"unknown divergence {kind!r}; use forward, reverse or jsd")
    scale = temperature**2 if t2_scale else 1.0
    return list(_FusedDivergences.apply(kind, float(temperature), float(scale), teacher_logits.detach(), *students))


def as_text_query(q):
    """The text version of a training query: its transcript (or its text) as the question, same response."""
    text = q.transcript if q.transcript is not None else q.text
    if not text:
        raise SpeechkeepError("distill needs each spoken training item's transcript (the manifest's text)")
    return replace(q, text=text, audio=None, speech_features=None, instruction=None)


# ---------------------------------------------------------------------- teacher top-k cache
def teacher_top_k(teacher_logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's k most likely tokens per position: (ids (N, k), log-probabilities (N, k + 1)) at the
    temperature, the last column being the log of the remaining mass (-inf when k covers the vocabulary)."""
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    k = min(int(k), log_t.shape[-1])
    vals, ids = log_t.topk(k, dim=-1)
    if k < log_t.shape[-1]:
        rest = log_t.scatter(-1, ids, float("-inf")).logsumexp(-1, keepdim=True)
    else:
        rest = vals.new_full((vals.shape[0], 1), float("-inf"))
    return ids, torch.cat([vals, rest], dim=-1)


def top_k_divergence(student_logits: torch.Tensor, ids: torch.Tensor, teacher_logp: torch.Tensor, kind: str = "forward",
                     temperature: float = 1.0, t2_scale: bool = True) -> torch.Tensor:
    """:func:`distill_divergence` over k + 1 buckets: the teacher's top-k tokens ``ids`` (N, k) and the rest.
    The student's probabilities are gathered at the same ids, its remaining mass is the last bucket; with
    k = the vocabulary the value is the full divergence (tested). The reference implementation (plain
    autograd); training uses :func:`fused_top_k_divergences`."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    k, vocab = ids.shape[-1], log_s.shape[-1]
    ids = ids.to(device=log_s.device, dtype=torch.long)
    lt = teacher_logp.to(log_s.device, torch.float32)
    if k < vocab:
        rest = log_s.scatter(-1, ids, float("-inf")).logsumexp(-1, keepdim=True)
        ls = torch.cat([log_s.gather(-1, ids), rest], dim=-1)
    else:  # no remaining mass on either side
        ls, lt = log_s.gather(-1, ids), lt[:, :k]
    out = _bucket_values(ls, lt, kind).mean()
    return out * temperature**2 if t2_scale else out


def _bucket_values(ls: torch.Tensor, lt: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-row divergence between bucket log-probabilities (student ``ls``, teacher ``lt``, (n, buckets))."""
    if kind == "forward":
        return (lt.exp() * (lt - ls)).sum(-1)
    if kind == "reverse":
        return (ls.exp() * (ls - lt)).sum(-1)
    if kind == "jsd":
        log_m = torch.logaddexp(ls, lt) - math.log(2.0)
        return 0.5 * (lt.exp() * (lt - log_m)).sum(-1) + 0.5 * (ls.exp() * (ls - log_m)).sum(-1)
    raise ValueError(f"unknown divergence {kind!r}; use forward, reverse or jsd")


class _FusedTopK(torch.autograd.Function):
    """:func:`top_k_divergence` of several students, chunk by chunk, with the gradient in the same pass:
    with G = dL/d(bucket log-probs), dL/dz_j = (G_b(j) [j in top k] + G_rest p_j / R [j not in top k]
    - p_j sum(G)) / T, R the student's mass outside the top k."""

    @staticmethod
    def forward(ctx, kind, temperature, scale, ids, teacher_logp, *students):
        n, vocab = students[0].shape
        k = ids.shape[-1]
        chunk = n if students[0].is_cuda else max(1, _CHUNK_FLOATS // max(vocab, 1))
        needs = [st.requires_grad for st in students]
        grads = [torch.empty_like(st, dtype=torch.float32) if need else None for st, need in zip(students, needs)]
        totals = [teacher_logp.new_zeros((), dtype=torch.float32) for _ in students]
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            idc, lt = ids[a:b], teacher_logp[a:b]
            if k >= vocab:
                lt = lt[:, :k]
            for i, st in enumerate(students):
                log_s = F.log_softmax(st[a:b].float() / temperature, dim=-1)
                ls_ids = log_s.gather(-1, idc)
                if k < vocab:
                    log_rest = log_s.scatter(-1, idc, float("-inf")).logsumexp(-1, keepdim=True)
                    ls = torch.cat([ls_ids, log_rest], dim=-1)
                else:
                    ls = ls_ids
                with torch.enable_grad():
                    leaf = ls.detach().requires_grad_(grads[i] is not None)
                    per_row = _bucket_values(leaf, lt, kind)
                    g_b = torch.autograd.grad(per_row.sum(), leaf)[0] if grads[i] is not None else None
                totals[i] += per_row.detach().sum()
                if g_b is not None:
                    p = log_s.exp_()
                    g_sum = g_b.sum(-1, keepdim=True)
                    if k < vocab:
                        coef = g_b[:, k:] / log_rest.exp().clamp_min(torch.finfo(torch.float32).tiny) - g_sum
                    else:
                        coef = -g_sum
                    at_ids = g_b[:, :k] - p.gather(-1, idc) * g_sum
                    grads[i][a:b] = p.mul_(coef).scatter_(-1, idc, at_ids).div_(temperature)
        return _save_gradients(ctx, grads, needs, scale, n, totals)

    @staticmethod
    def backward(ctx, *grad_outputs):
        return (None, None, None, None, None, *_scaled_gradients(ctx, grad_outputs))


def fused_top_k_divergences(students: list[torch.Tensor], ids: torch.Tensor, teacher_logp: torch.Tensor,
                            kind: str = "forward", temperature: float = 1.0, t2_scale: bool = True) -> list[torch.Tensor]:
    """:func:`top_k_divergence` of each student's (N, vocab) logits from the same cached teacher buckets, in
    one chunked pass with analytic gradients (equal values and gradients, tested)."""
    if kind not in ("forward", "reverse", "jsd"):
        raise ValueError(f"unknown divergence {kind!r}; use forward, reverse or jsd")
    dev = students[0].device
    ids = ids.to(device=dev, dtype=torch.long)
    teacher_logp = teacher_logp.to(device=dev, dtype=torch.float32)
    scale = temperature**2 if t2_scale else 1.0
    return list(_FusedTopK.apply(kind, float(temperature), float(scale), ids, teacher_logp, *students))


def _blake(*parts) -> "hashlib.blake2b":
    h = hashlib.blake2b(digest_size=20)
    for p in parts:
        h.update(p if isinstance(p, (bytes, bytearray)) else str(p).encode("utf-8"))
        h.update(b"\0")
    return h


_SAVE_EVERY_S = 60.0
"""Seconds between partial writes of a teacher cache being built."""


class TeacherCache:
    """The teacher's top-k log-probabilities per response token of a fixed set of text queries, in one
    file (written atomically; a partial file is continued by the next run with the same fingerprint)."""

    def __init__(self, path: Path, fingerprint: str, k: int, temperature: float):
        self.path, self.fingerprint, self.k, self.temperature = Path(path), fingerprint, int(k), float(temperature)
        self.index: dict[str, tuple[int, int]] = {}  # item key -> (first row, rows)
        self._ids: list[torch.Tensor] = []
        self._logp: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._rows = 0
        self.complete = False

    @classmethod
    def open(cls, path, fingerprint: str, k: int, temperature: float) -> "TeacherCache":
        """The cache at ``path`` if it holds this fingerprint (complete or partial), else an empty one."""
        c = cls(path, fingerprint, k, temperature)
        if c.path.is_file():
            try:
                d = torch.load(c.path, map_location="cpu", weights_only=True)
            except Exception as e:  # a damaged file is rebuilt, never trusted
                log.warning("teacher cache %s unreadable (%s): rebuilding it", c.path, e)
                return c
            if d.get("fingerprint") == fingerprint and d.get("k") == c.k:
                c._ids, c._logp, c._targets = [d["ids"]], [d["logp"]], [d["targets"]]
                c._rows = int(d["targets"].shape[0])
                c.index = {key: (int(a), int(n)) for key, a, n in zip(d["keys"], d["starts"].tolist(), d["lengths"].tolist())}
                c.complete = bool(d.get("complete"))
        return c

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def add(self, key: str, ids: torch.Tensor, logp: torch.Tensor, targets: torch.Tensor) -> None:
        self.index[key] = (self._rows, int(targets.shape[0]))
        self._ids.append(ids.to("cpu", torch.int32))
        self._logp.append(logp.to("cpu", torch.float32))
        self._targets.append(targets.to("cpu", torch.int32))
        self._rows += int(targets.shape[0])

    def _consolidate(self) -> None:
        if len(self._ids) > 1:
            self._ids, self._logp, self._targets = ([torch.cat(x)] for x in (self._ids, self._logp, self._targets))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._ids + self._logp + self._targets)

    def save(self, complete: bool) -> None:
        from speechkeep.io import atomic_path

        self._consolidate()
        keys = list(self.index)
        empty = (torch.zeros(0, self.k, dtype=torch.int32), torch.zeros(0, self.k + 1), torch.zeros(0, dtype=torch.int32))
        d = {"fingerprint": self.fingerprint, "k": self.k, "temperature": self.temperature, "complete": bool(complete),
             "keys": keys, "starts": torch.tensor([self.index[x][0] for x in keys], dtype=torch.long),
             "lengths": torch.tensor([self.index[x][1] for x in keys], dtype=torch.long),
             "ids": self._ids[0] if self._ids else empty[0], "logp": self._logp[0] if self._logp else empty[1],
             "targets": self._targets[0] if self._targets else empty[2]}
        with atomic_path(self.path) as tmp:
            torch.save(d, tmp)
        self.complete = bool(complete)

    def lookup(self, keys: list[str]):
        """(ids, logp, targets) of the items ``keys`` in order, or None when one is missing."""
        if any(k not in self.index for k in keys):
            return None
        self._consolidate()
        rows = torch.cat([torch.arange(a, a + n) for a, n in (self.index[k] for k in keys)])
        return self._ids[0][rows], self._logp[0][rows], self._targets[0][rows]


# The student's speech and text passes run as one forward (2B rows) when right-padding both to the
# longer one adds at most this fraction of positions (one pass over the layers instead of two).
_MERGE_SLACK = 0.15


def pad_batch(batch, length: int):
    """A prepared (right-padded) batch padded on the right to ``length`` positions."""
    from speechkeep.models.speech_llm import IGNORE_INDEX

    extra = length - batch.inputs_embeds.shape[1]
    if extra <= 0:
        return batch
    return replace(batch, inputs_embeds=F.pad(batch.inputs_embeds, (0, 0, 0, extra)),
                   attention_mask=F.pad(batch.attention_mask, (0, extra)),
                   position_ids=F.pad(batch.position_ids, (0, extra)),
                   labels=None if batch.labels is None else F.pad(batch.labels, (0, extra), value=IGNORE_INDEX))


def merge_batches(a, b):
    """Two prepared batches as one (rows of ``a`` then rows of ``b``, right-padded to the longer); the shared
    prompt prefix is the part both batches share."""
    from speechkeep.models.speech_llm import Batch

    n = max(a.inputs_embeds.shape[1], b.inputs_embeds.shape[1])
    a, b = pad_batch(a, n), pad_batch(b, n)
    p = min(a.shared_prefix, b.shared_prefix)
    if p:
        same = (a.inputs_embeds[0, :p] == b.inputs_embeds[0, :p]).all(-1) & (a.position_ids[0, :p] == b.position_ids[0, :p])
        bad = (~same).nonzero()
        p = int(bad[0]) if bad.numel() else p
    labels = None if a.labels is None or b.labels is None else torch.cat([a.labels, b.labels])
    return Batch(torch.cat([a.inputs_embeds, b.inputs_embeds]), torch.cat([a.attention_mask, b.attention_mask]),
                 torch.cat([a.position_ids, b.position_ids]), labels, a.num_speech_tokens + b.num_speech_tokens, p,
                 transcripts=a.transcripts + b.transcripts, tasks=a.tasks + b.tasks)


def split_response_logits(r, n_rows: int):
    """The response logits of rows < ``n_rows`` and of the others (renumbered from 0)."""
    from speechkeep.models.speech_llm import ResponseLogits

    k = int((r.rows < n_rows).sum())
    return (ResponseLogits(r.logits[:k], r.targets[:k], r.rows[:k]),
            ResponseLogits(r.logits[k:], r.targets[k:], r.rows[k:] - n_rows))


@register
class Distill(Strategy):
    name = "distill"
    description = "a student (lora | full | adaptor) + KL to the pristine text LLM through text and speech (seed 002)"
    Settings = DistillSettings
    terms = TERMS
    llm_changed = True

    def __init__(self, config):
        super().__init__(config)
        self._student: Strategy | None = None
        self._teacher_llm: torch.nn.Module | None = None
        self.cache: TeacherCache | None = None
        """The teacher top-k cache of this run (``distill.cache_top_k`` > 0, after :meth:`begin`)."""
        self.teacher_calls = 0
        """Teacher forward passes so far (the cache's tests count them)."""

    def check(self) -> None:
        s = self.settings
        bad = [k for k in s.weights if k not in TERMS]
        if bad:
            raise ConfigError(f"distill.weights: unknown term '{bad[0]}'; terms: {', '.join(TERMS)}")
        if not any(s.weights.get(t, 0) > 0 for t in TERMS):
            raise ConfigError("distill.weights: at least one term needs a weight > 0")
        if s.student not in STRATEGIES or s.student == self.name:
            raise ConfigError(f"distill.student: {s.student!r} is not a student strategy")

    @property
    def student(self) -> Strategy:
        if self._student is None:
            self._student = STRATEGIES[self.settings.student](self.config)
        return self._student

    def setup(self, model):
        self.check()
        if self.settings.student == "full":  # the teacher must not move with the student's weights
            self._teacher_llm = copy.deepcopy(model.llm).eval().requires_grad_(False)
        groups = self.student.setup(model)
        self.llm_changed = self.student.llm_changed
        return groups

    def frozen_modules(self):
        return {"teacher_llm": self._teacher_llm} if self._teacher_llm is not None else {}

    def export(self, model):
        self.student.export(model)

    # ------------------------------------------------------------------ teacher
    def _weights(self) -> dict[str, float]:
        return {t: float(self.settings.weights.get(t, 0.0)) for t in TERMS}

    @torch.no_grad()
    def teacher_response_logits(self, model, text_queries, layout: tuple[int, int] | None = None):
        """The pristine LLM's logits at the response positions of the text queries. ``layout`` = (length,
        shared prefix): lay the batch out as the student's text rows were (same padding, same prefix), so
        that a student equal to the teacher gives bit-identical logits."""
        self.teacher_calls += 1

        def run():
            batch = model.prepare(text_queries)
            if layout is not None:
                batch = replace(pad_batch(batch, layout[0]), shared_prefix=layout[1])
            return model.response_logits(batch)

        if self._teacher_llm is not None:  # full student: the frozen copy, through the same splicing
            student_llm, model.llm = model.llm, self._teacher_llm
            try:
                return run()
            finally:
                model.llm = student_llm
        disable = getattr(model.llm, "disable_adapter", None)
        was_training = model.llm.training
        model.llm.eval()
        try:
            if self.settings.student == "lora" and disable is not None:
                with disable():
                    return run()
            return run()
        finally:
            model.llm.train(was_training)

    def _teacher_parameters(self, model):
        if self._teacher_llm is not None:
            return [p for _, p in self._teacher_llm.named_parameters()]
        return [p for n, p in model.llm.named_parameters() if "lora_" not in n]

    @staticmethod
    def item_key(model, q) -> str:
        """What identifies a teacher text query: the token ids the teacher reads and the ones it predicts."""
        ids = model.chat.text_prompt_ids(q.text) + [-1] + model.chat.response_ids(q.response)
        return _blake(",".join(map(str, ids))).hexdigest()

    def begin(self, model, examples) -> None:
        """With ``distill.cache_top_k`` > 0: open the teacher cache of this teacher, training set,
        temperature and k, computing (or finishing) it when needed, so training steps run no teacher."""
        s, w = self.settings, self._weights()
        if s.cache_top_k <= 0 or (w["kl_t2t"] <= 0 and w["kl_s2t"] <= 0):
            return
        from speechkeep.io import cache_dir
        from speechkeep.models.speech_llm import Query

        items: dict[str, Query] = {}
        for exs in examples.values():
            for e in exs:
                q = Query(text=e.text, response=e.target)
                items.setdefault(self.item_key(model, q), q)
        t0 = time.perf_counter()
        teacher_fp = tensor_fingerprint(self._teacher_parameters(model))
        fp = _blake("teacher-top-k v1", teacher_fp, s.temperature, s.cache_top_k, *sorted(items)).hexdigest()
        root = Path(s.cache_dir) if s.cache_dir else cache_dir("distill")
        path = root / f"teacher_top{s.cache_top_k}_{fp[:24]}.pt"
        cache = TeacherCache.open(path, fp, s.cache_top_k, s.temperature)
        todo = [key for key in items if key not in cache]
        if todo:
            log.info("distill: teacher top-%d cache %s: %d of %d items to compute", s.cache_top_k, path, len(todo), len(items))
            bs = max(1, int(getattr(self.config.data, "batch_size", 8)))
            todo.sort(key=lambda key: len(items[key].text) + len(items[key].response))
            last_save = time.perf_counter()
            for a in range(0, len(todo), bs):
                keys = todo[a: a + bs]
                t = self.teacher_response_logits(model, [items[key] for key in keys])
                ids, logp = teacher_top_k(t.logits, s.cache_top_k, s.temperature)
                for i, key in enumerate(keys):
                    sel = t.rows == i
                    cache.add(key, ids[sel], logp[sel], t.targets[sel])
                if time.perf_counter() - last_save >= _SAVE_EVERY_S:  # resumable: a partial file every minute
                    cache.save(complete=False)
                    last_save = time.perf_counter()
        if todo or not cache.complete:
            cache.save(complete=True)
        log.info("distill: teacher top-%d cache %s: %d items, %.1f MB in memory and on disk (%.1f s)", s.cache_top_k,
                 path, len(items), cache.nbytes() / 1e6, time.perf_counter() - t0)
        self.cache = cache

    def _teacher_targets(self, model, text_queries, layout=None):
        """The teacher's side of the KL terms for these queries: ("full", ResponseLogits) without a cache,
        ("top_k", (ids, logp, targets)) with one (from the cache, or computed when an item is not in it)."""
        k = self.settings.cache_top_k
        if k <= 0:
            return "full", self.teacher_response_logits(model, text_queries, layout)
        got = self.cache.lookup([self.item_key(model, q) for q in text_queries]) if self.cache is not None else None
        if got is not None:
            ids, logp, targets = got
            return "top_k", (ids, logp, targets.long())
        t = self.teacher_response_logits(model, text_queries, layout)
        ids, logp = teacher_top_k(t.logits, k, self.settings.temperature)
        return "top_k", (ids, logp, t.targets)

    # ------------------------------------------------------------------ loss
    def _check_aligned(self, student, teacher_targets, teacher_rows=None) -> None:
        same = torch.equal(student.targets, teacher_targets.to(student.targets.device))
        if same and teacher_rows is not None:
            same = torch.equal(student.rows, teacher_rows.to(student.rows.device))
        if not same:
            raise SpeechkeepError("distill: the student's and the teacher's response tokens differ; "
                                  "their positions cannot be matched")

    def _kl(self, student, teacher) -> torch.Tensor:
        """One KL term between a student's and a teacher's response logits (positions checked)."""
        self._check_aligned(student, teacher.targets, teacher.rows)
        s = self.settings
        return fused_divergences([student.logits], teacher.logits, s.kl, s.temperature, s.t2_scale)[0]

    def student_passes(self, model, queries, text_queries):
        """The student's response logits on the spoken queries and, when given, on the text queries: one
        forward over both when their lengths are close (see ``_MERGE_SLACK``), else two. Returns (speech,
        text or None, speech batch, the text rows' layout (length, shared prefix) or None)."""
        sb = model.prepare(queries)
        if text_queries is None:
            return model.response_logits(sb), None, sb, None
        tb = model.prepare(text_queries)
        ls, lt = sb.inputs_embeds.shape[1], tb.inputs_embeds.shape[1]
        if 2 * max(ls, lt) <= (1 + _MERGE_SLACK) * (ls + lt):
            mb = merge_batches(sb, tb)
            r, st = split_response_logits(model.response_logits(mb), len(queries))
            return r, st, sb, (mb.inputs_embeds.shape[1], mb.shared_prefix)
        return model.response_logits(sb), model.response_logits(tb), sb, None

    def loss(self, model, queries):
        s, w = self.settings, self._weights()
        need_kl = w["kl_t2t"] > 0 or w["kl_s2t"] > 0
        text_queries = [as_text_query(q) for q in queries] if need_kl else None
        # the LLM is frozen with an adaptor student: its text pass would be the teacher's (kl_t2t exactly 0)
        text_pass = w["kl_t2t"] > 0 and s.student != "adaptor"
        r, student_text, batch, layout = self.student_passes(model, queries, text_queries if text_pass else None)
        ce = r.cross_entropy()
        terms = {"ce": ce}
        if w["kl_t2t"] > 0 and not text_pass:
            terms["kl_t2t"] = ce.new_zeros(())
        students = {}
        if w["kl_s2t"] > 0:
            students["kl_s2t"] = r
        if student_text is not None:
            students["kl_t2t"] = student_text
        if students:
            # One teacher pass (or cache lookup) serves both channels: the s2t teacher reads the
            # transcript, the t2t teacher the text question, and those are the same token sequence.
            kind, teacher = self._teacher_targets(model, text_queries, layout)
            if kind == "full":
                for st in students.values():
                    self._check_aligned(st, teacher.targets, teacher.rows)
                values = fused_divergences([st.logits for st in students.values()], teacher.logits, s.kl,
                                           s.temperature, s.t2_scale)
            else:
                ids, logp, targets = teacher
                for st in students.values():
                    self._check_aligned(st, targets)
                values = fused_top_k_divergences([st.logits for st in students.values()], ids, logp, s.kl,
                                                 s.temperature, s.t2_scale)
            terms.update(zip(students, values))
        terms = {t: terms[t] for t in TERMS if t in terms}
        return LossTerms(terms, weights={k: w[k] for k in terms}, n_tokens=r.n,
                         input_tokens=int(batch.attention_mask.sum()), per_task=task_losses(r, queries, ce))
