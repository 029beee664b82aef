"""``distill``: cross-modal knowledge distillation from the pristine text LLM (seed 002, METHODS.md §4).

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

Status: the strategy, its loss and its tests are here; the measured comparison against ``lora`` and
``full`` on the 1,205 clean held-out questions, the teacher top-k cache and the step-time benchmark are
still to come (issue 14).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F

from speechkeep.config import Checked, ranged
from speechkeep.errors import ConfigError, SpeechkeepError
from speechkeep.strategies.base import STRATEGIES, LossTerms, Strategy, register, task_losses

TERMS = ("ce", "kl_t2t", "kl_s2t")


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


def distill_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "forward",
                       temperature: float = 1.0, t2_scale: bool = True) -> torch.Tensor:
    """Mean over positions of the divergence between teacher and student next-token distributions at
    temperature T ((N, vocab) logits each): forward KL(p_t || p_s), reverse KL(p_s || p_t), or the
    Jensen-Shannon divergence; times T^2 when ``t2_scale``."""
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


def as_text_query(q):
    """The text version of a training query: its transcript (or its text) as the question, same response."""
    text = q.transcript if q.transcript is not None else q.text
    if not text:
        raise SpeechkeepError("distill needs each spoken training item's transcript (the manifest's text)")
    return replace(q, text=text, audio=None, speech_features=None, instruction=None)


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

    # ------------------------------------------------------------------ loss
    @torch.no_grad()
    def teacher_response_logits(self, model, text_queries):
        """The pristine LLM's logits at the response positions of the text queries."""
        if self._teacher_llm is not None:  # full student: the frozen copy, through the same splicing
            student_llm, model.llm = model.llm, self._teacher_llm
            try:
                return model.response_logits(model.prepare(text_queries))
            finally:
                model.llm = student_llm
        disable = getattr(model.llm, "disable_adapter", None)
        was_training = model.llm.training
        model.llm.eval()
        try:
            if self.settings.student == "lora" and disable is not None:
                with disable():
                    return model.response_logits(model.prepare(text_queries))
            return model.response_logits(model.prepare(text_queries))
        finally:
            model.llm.train(was_training)

    def _kl(self, student, teacher) -> torch.Tensor:
        if not torch.equal(student.targets, teacher.targets) or not torch.equal(student.rows, teacher.rows):
            raise SpeechkeepError("distill: the student's and the teacher's response tokens differ; "
                                  "their positions cannot be matched")
        s = self.settings
        return distill_divergence(student.logits, teacher.logits, s.kl, s.temperature, s.t2_scale)

    def loss(self, model, queries):
        w = {t: float(self.settings.weights.get(t, 0.0)) for t in TERMS}
        batch = model.prepare(queries)
        r = model.response_logits(batch)
        ce = r.cross_entropy()
        terms = {"ce": ce}
        need_teacher = w["kl_t2t"] > 0 or w["kl_s2t"] > 0
        if need_teacher:
            text_queries = [as_text_query(q) for q in queries]
            teacher = self.teacher_response_logits(model, text_queries)
            if w["kl_s2t"] > 0:
                terms["kl_s2t"] = self._kl(r, teacher)
            if w["kl_t2t"] > 0:
                student_text = model.response_logits(model.prepare(text_queries))
                terms["kl_t2t"] = self._kl(student_text, teacher)
        return LossTerms(terms, weights={k: w[k] for k in terms}, n_tokens=r.n,
                         input_tokens=int(batch.attention_mask.sum()), per_task=task_losses(r, queries, ce))
