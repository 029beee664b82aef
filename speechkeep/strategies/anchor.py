"""``anchor``: fine-tuning pulled toward the pre-trained weights where textual importance is high.

Seed 001 finds text ability concentrated in a few percent of the LLM's parameters; ``anchor`` uses that
to protect it while the LLM trains (EWC-style, with the first-order Taylor importance
:math:`I_i = |g_i \\theta_i|` of the pre-trained LLM on text as the Fisher proxy). Next to the usual
cross-entropy, the loss has the term

    anchor = sum_i I_i (theta_i - theta0_i)^2 / sum_i I_i theta0_i^2

(weighted by ``anchor.strength``): the importance-weighted squared change of the LLM's weights relative
to their importance-weighted squared size. It is 0 at step 0, and it does not depend on the scale of the
importance scores or of the weights, so one ``anchor.strength`` means the same on SmolLM2 and Gemma3: at
strength s, a change of every important weight by a fraction f of its size costs s * f^2.

The student decides which parameters train and at which learning rates: ``full`` (every LLM weight) or
``layer_lr`` (seed 001's importance-driven per-layer rates, fed the same importance). The importance is
read from a ``speechkeep importance`` run of the pre-trained LLM with text input, or computed at start on
a seeded share of the training manifest (as ``layer_lr`` does).

Cost: the term's value and gradient are one chunked pass over the LLM's weights
(:class:`AnchorPenalty`), and the run keeps two fp32 copies of the LLM (theta0 and I) in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from speechkeep.config import Checked, ranged
from speechkeep.errors import SpeechkeepError
from speechkeep.strategies.base import STRATEGIES, Strategy, register


@dataclass
class AnchorSettings(Checked):
    """Importance-anchored fine-tuning (strategy=anchor)."""

    strength: float = ranged(1e5, ge=0)
    """Weight of the anchor term in the loss (0: the student alone). The term is scale-free (see the module doc).
    Calibration: 300 steps of full fine-tuning at lr 5e-5 moved SmolLM2's important weights by f^2 = 5.4e-6 (0.23%);
    at 1e5 that move costs 0.54, about a third of the starting cross-entropy."""
    student: Literal["full", "layer_lr"] = "full"
    """Which parameters train and how: 'full' (every LLM weight at optim.lr) or 'layer_lr' (per-layer rates)."""
    importance: str | None = None
    """A `speechkeep importance` run of the pre-trained LLM with text input; None: compute it at start."""
    fraction: float = ranged(1 / 30, gt=0, le=1)
    """Share of the training manifest used when computing importance at start."""
    batch_size: int = ranged(8, ge=1)
    """Batch size of that importance pass."""


class AnchorPenalty(torch.autograd.Function):
    """sum_i w_i (p_i - p0_i)^2 * scale over lists of tensors, with its gradient 2 * scale * w * (p - p0).

    Memory traffic is the cost (three fp32 copies of the LLM are read every step), so the forward pass
    walks each tensor in cache-sized chunks: p - p0 and w * (p - p0) never leave the cache, the value is
    summed from them, and the gradient is written once, already scaled; the backward pass returns it
    (no autograd graph over the weights, no second pass)."""

    CHUNK = 1 << 16
    """Elements per chunk (256 KiB of fp32: a few such buffers fit a core's L2 cache)."""

    @staticmethod
    def forward(ctx, scale: float, anchors: list, weights: list, *params):
        total = params[0].new_zeros((), dtype=torch.float32)
        kept, c, step = [], 2.0 * scale, AnchorPenalty.CHUNK
        with torch.no_grad():
            for k, (p, p0, w) in enumerate(zip(params, anchors, weights)):
                flat, a, ww = p.detach().reshape(-1), p0.reshape(-1), w.reshape(-1)
                g = torch.empty(flat.numel(), dtype=torch.float32, device=flat.device) if ctx.needs_input_grad[3 + k] else None
                for s in range(0, flat.numel(), step):
                    d = flat[s: s + step].float() - a[s: s + step]
                    wd = d * ww[s: s + step]
                    total += torch.dot(wd, d)
                    if g is not None:
                        torch.mul(wd, c, out=g[s: s + step])
                kept.append(None if g is None else g.view(p.shape))
        ctx.kept, ctx.dtypes = kept, [p.dtype for p in params]
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):
        one = bool(grad_out == 1)
        grads = [None if g is None else (g if one else g.mul_(grad_out)).to(dt) for g, dt in zip(ctx.kept, ctx.dtypes)]
        ctx.kept = None
        return (None, None, None, *grads)


@register
class Anchor(Strategy):
    name = "anchor"
    description = "full | layer_lr student + an L2 pull toward the pre-trained weights weighted by textual importance"
    Settings = AnchorSettings
    llm_changed = True
    terms = ("ce", "anchor")

    def __init__(self, config):
        super().__init__(config)
        self._student: Strategy | None = None
        self.names: list[str] = []
        self.anchors: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] = []
        self.scale = 0.0
        """strength / sum_i I_i theta0_i^2."""

    @property
    def student(self) -> Strategy:
        if self._student is None:
            self._student = STRATEGIES[self.settings.student](self.config)
        return self._student

    def check(self):
        if self.settings.importance:
            from speechkeep.importance.runs import load_summary

            load_summary(self.settings.importance)
        self.student.check()

    def inputs(self):
        return ([self.settings.importance] if self.settings.importance else []) + self.student.inputs()

    def importance_scores(self, model) -> dict[str, torch.Tensor]:
        """Per-parameter textual importance of the pre-trained LLM (plain LLM parameter names)."""
        from speechkeep.importance.runs import pretrained_text_importance

        s = self.settings
        return pretrained_text_importance(model, s.importance, self.config, s.fraction, s.batch_size)

    def setup(self, model):
        scores = self.importance_scores(model)
        params = dict(model.llm.named_parameters())
        missing = [n for n in params if n not in scores]
        if missing:
            raise SpeechkeepError(f"anchor: the importance scores have no entry for {missing[0]} "
                                  "(importance of another model?)")
        for n, p in params.items():
            if tuple(scores[n].shape) != tuple(p.shape):
                raise SpeechkeepError(f"anchor: importance of {n} is {tuple(scores[n].shape)}, the parameter {tuple(p.shape)}")
        if self.settings.student == "layer_lr" and not self.student.settings.importance:
            from speechkeep.importance.summary import summarize

            per_layer = summarize(scores)["per_layer"]
            self.student.layer_importance = lambda _model: per_layer  # the same importance, computed once
        groups = self.student.setup(model)
        self.names = list(params)
        self.anchors = [params[n].detach().float().clone() for n in self.names]
        self.weights = [scores[n].float().to(params[n].device) for n in self.names]
        z = sum(float(torch.dot((w * a).flatten(), a.flatten())) for w, a in zip(self.weights, self.anchors))
        if not z > 0:
            raise SpeechkeepError("anchor: the importance scores are all zero: nothing to anchor to")
        self.scale = self.settings.strength / z
        return groups

    def penalty(self, model) -> torch.Tensor:
        """The weighted anchor term (strength included) of the model's current LLM weights."""
        params = dict(model.llm.named_parameters())
        ps = [params[n] for n in self.names]
        if self.anchors and self.anchors[0].device != ps[0].device:  # moved by accelerator.prepare
            self.anchors = [a.to(p.device) for a, p in zip(self.anchors, ps)]
            self.weights = [w.to(p.device) for w, p in zip(self.weights, ps)]
        return AnchorPenalty.apply(self.scale, self.anchors, self.weights, *ps)

    def loss(self, model, queries):
        out = super().loss(model, queries)
        if self.settings.strength > 0:
            out.terms["anchor"] = self.penalty(model)
        else:
            out.terms["anchor"] = out.terms["ce"].new_zeros(())
        return out

    def export(self, model):
        self.student.export(model)
