"""The strategy interface and registry.

A strategy is one module that owns everything about it (see the README's "Adding a strategy"):

- ``name``, ``description`` and ``Settings`` (its settings dataclass, a :class:`~speechkeep.config.Checked`
  dataclass with a docstring per field: reachable as ``<name>.<field>`` in YAML and ``key=value``,
  listed by ``speechkeep train --help``; the core train config imports no strategy);
- :meth:`Strategy.check` (fast checks before the model loads) and :meth:`Strategy.inputs` (files the run reads);
- :meth:`Strategy.setup`: which parameters train, in which optimizer groups, at which learning rates;
  structural changes of the model go through :meth:`SpeechLLM.apply_transform
  <speechkeep.models.speech_llm.SpeechLLM.apply_transform>` so a saved model re-applies them on load;
- :meth:`Strategy.frozen_modules`: modules the loss uses but never trains (a teacher): the engine puts
  them on the accelerator's device after ``accelerator.prepare`` and keeps them in eval mode;
- :meth:`Strategy.begin`: work before the first step that needs the training set (a teacher cache);
- :meth:`Strategy.loss`: the named loss terms (``ce``, ``kl_t2t``, ...) and their weights; the engine
  sums them and logs every term and every task's loss;
- :meth:`Strategy.export`: what the final save holds (e.g. LoRA merged or not);
- optionally :meth:`Strategy.prepare_examples` (filter/annotate the training examples once, e.g. CTC's
  vocabulary), :meth:`Strategy.evaluate` (monitoring every ``eval_every`` steps, ``eval_<name>`` columns)
  and :meth:`Strategy.summary` (extra facts in ``summary.json``).

Registering a second strategy under a name already taken is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch

from speechkeep.errors import ConfigError

if TYPE_CHECKING:
    from speechkeep.models.speech_llm import Query, ResponseLogits, SpeechLLM

STRATEGIES: dict[str, type["Strategy"]] = {}


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type["Strategy"]) -> type["Strategy"]:
    """Class decorator: make a strategy available as ``strategy=<cls.name>``.

    A name already registered by another class is a :class:`ValueError` (a second strategy never
    silently replaces the first)."""
    if not cls.name or not isinstance(cls.name, str):
        raise ValueError(f"strategy {_qualname(cls)} has no name")
    prev = STRATEGIES.get(cls.name)
    if prev is not None and _qualname(prev) != _qualname(cls):
        raise ValueError(f"strategy name '{cls.name}' is already registered by {_qualname(prev)}; "
                         f"{_qualname(cls)} needs another name")
    if cls.Settings is not None and cls.name in _CORE_KEYS:
        raise ValueError(f"strategy name '{cls.name}' would hide the train config key '{cls.name}'")
    STRATEGIES[cls.name] = cls
    return cls


# Top-level keys of the train config a strategy's settings section must not shadow.
_CORE_KEYS = {"model", "init_from", "strategy", "sections", "optim", "data", "output_dir", "max_steps", "max_minutes",
              "save_every", "log_every", "eval_every", "resume", "overwrite", "seed", "precision"}


def unregister(name: str) -> None:
    """Remove a strategy (tests of the registry)."""
    STRATEGIES.pop(name, None)


def strategy_settings() -> dict[str, type]:
    """name -> settings dataclass of every registered strategy that has settings (the train config's sections)."""
    return {n: c.Settings for n, c in STRATEGIES.items() if c.Settings is not None}


def get_strategy(name: str, config: Any) -> "Strategy":
    """The strategy ``name`` for a run of ``config`` (a :class:`~speechkeep.train.config.TrainConfig`)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}'; available: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](config)


@dataclass
class LossTerms:
    """What :meth:`Strategy.loss` returns for one micro-batch: a named sum of loss terms."""

    terms: dict[str, torch.Tensor]
    """name -> scalar tensor (e.g. ``ce``, ``kl_t2t``); the training loss is sum(weight * term)."""
    weights: dict[str, float] = field(default_factory=dict)
    """name -> weight of the term in the sum (1 when absent)."""
    n_tokens: int = 0
    """Target tokens of the micro-batch."""
    input_tokens: int = 0
    """Input positions of the micro-batch (throughput)."""
    per_task: dict[str, tuple[float, int]] = field(default_factory=dict)
    """task -> (summed cross-entropy of its response tokens, their number): the engine logs each task's mean."""

    def total(self) -> torch.Tensor:
        """sum(weight * term); a single term of weight 1 is returned as is (bit-identical gradients)."""
        out = None
        for name, t in self.terms.items():
            w = self.weights.get(name, 1.0)
            t = t if w == 1.0 else t * w
            out = t if out is None else out + t
        if out is None:
            raise ValueError("a strategy's loss returned no terms")
        return out


def task_losses(r: "ResponseLogits", queries: Sequence["Query"], mean_ce: torch.Tensor) -> dict[str, tuple[float, int]]:
    """Per task, (summed cross-entropy, tokens) of the response tokens of its queries (detached; the
    one-task case reuses ``mean_ce`` and costs nothing)."""
    tasks = [q.task or "all" for q in queries]
    if len(set(tasks)) == 1:
        return {tasks[0]: (float(mean_ce.detach()) * r.n, r.n)}
    with torch.no_grad():
        per_pos = torch.nn.functional.cross_entropy(r.logits.detach(), r.targets, reduction="none")
        out: dict[str, list] = {}
        for t in sorted(set(tasks)):
            rows = torch.tensor([i for i, x in enumerate(tasks) if x == t], device=r.rows.device)
            sel = torch.isin(r.rows, rows)
            n = int(sel.sum())
            if n:
                out[t] = [float(per_pos[sel].sum()), n]
    return {t: (v[0], v[1]) for t, v in out.items()}


class Strategy:
    """Decides which parameters train (and how), and computes the training loss (see the module doc).

    Subclasses set ``name``, ``description`` and optionally ``Settings``, override :meth:`setup`, and
    may override the other hooks. ``self.settings`` is the run's instance of ``Settings``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Settings: ClassVar[type | None] = None
    """The strategy's settings dataclass (a ``Checked`` dataclass, every field documented), or None."""
    terms: ClassVar[tuple[str, ...]] = ("ce",)
    """Names of the loss terms :meth:`loss` returns (metrics.csv columns ``term_<name>``)."""
    llm_changed: ClassVar[bool] = False
    """Whether training changes the LLM's own weights (then the final save includes them)."""

    def __init__(self, config: Any):
        self.config = config
        """The run's TrainConfig (optim, data, seed, ...)."""
        sections = getattr(config, "sections", None) or {}
        self.settings = sections.get(self.name) if self.Settings is not None else None
        if self.Settings is not None and self.settings is None:
            self.settings = self.Settings()

    # ------------------------------------------------------------------ before the model loads
    def check(self) -> None:
        """Fast checks of the settings and the files they name (raise a SpeechkeepError)."""

    def inputs(self) -> list[str]:
        """Paths the run reads (the output directory may not be one of them or inside one)."""
        return []

    # ------------------------------------------------------------------ training
    def adaptor_group(self, model: "SpeechLLM") -> dict[str, Any]:
        opt = self.config.optim
        for p in model.adaptor.parameters():
            p.requires_grad_(True)
        return {"name": "adaptor", "params": list(model.adaptor.parameters()),
                "lr": opt.adaptor_lr if opt.adaptor_lr is not None else opt.lr}

    def setup(self, model: "SpeechLLM") -> list[dict[str, Any]]:
        """Freeze/unfreeze/transform the model; return the optimizer groups ``{"name", "params", "lr"}``."""
        raise NotImplementedError

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        """Modules the loss uses but never trains (e.g. a teacher LLM), created in :meth:`setup`: the
        engine moves them to the accelerator's device after ``accelerator.prepare``, in eval mode."""
        return {}

    def begin(self, model: "SpeechLLM", examples: dict[str, list]) -> None:
        """Called once before the first step, with the model on its device and the training examples (task ->
        list of :class:`~speechkeep.train.data.Example`): e.g. to precompute a teacher cache. The engine calls
        it on the main process first, then on the others."""

    def loss(self, model: "SpeechLLM", queries: Sequence["Query"]) -> LossTerms:
        """The named loss terms of one micro-batch (default: ``ce``, the token-mean cross-entropy of the
        response tokens, from :meth:`SpeechLLM.response_logits`)."""
        batch = model.prepare(queries)
        r = model.response_logits(batch)
        ce = r.cross_entropy()
        return LossTerms({"ce": ce}, n_tokens=r.n, input_tokens=int(batch.attention_mask.sum()),
                         per_task=task_losses(r, queries, ce))

    def export(self, model: "SpeechLLM") -> None:
        """Called before the final save (e.g. to merge LoRA)."""

    # ------------------------------------------------------------------ optional: data, monitoring, summary
    eval_metrics: ClassVar[tuple[str, ...]] = ()
    """Names of what :meth:`evaluate` returns (metrics.csv columns ``eval_<name>``)."""

    def prepare_examples(self, model: "SpeechLLM", per_task: dict[str, list], features) -> dict[str, list]:
        """Once, after :meth:`setup` and before the first batch (also on resume): filter or annotate the
        training examples (task -> list of :class:`~speechkeep.train.data.Example`); ``features(paths)``
        returns their encoder frames. Must be deterministic (a resumed run rebuilds the same batches).
        Default: unchanged."""
        return per_task

    def evaluate(self, model: "SpeechLLM") -> dict[str, float]:
        """The strategy's own monitoring evaluation, run by the main process every ``eval_every`` steps and
        at the last step (never used to pick a checkpoint); keys from :attr:`eval_metrics`."""
        return {}

    def summary(self) -> dict[str, Any]:
        """Extra facts for the run's ``summary.json`` (e.g. how many examples were usable)."""
        return {}


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
