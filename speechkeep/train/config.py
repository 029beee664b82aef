"""``speechkeep train`` configuration.

The core config names no strategy: each strategy's settings dataclass (``Strategy.Settings``, in the
strategy's own module) is a plugin section of :class:`TrainConfig`, reachable as ``<strategy>.<key>``
in YAML and ``key=value`` overrides (``lora.r=16``) and listed by ``speechkeep train --help``; the
sections are looked up in the strategy registry (:mod:`speechkeep.strategies`) when a config is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from speechkeep.config import Checked, ranged
from speechkeep.errors import RangeError
from speechkeep.models.speech_llm import SpeechLLMConfig


@dataclass
class OptimConfig(Checked):
    """AdamW with warmup + schedule."""

    lr: float = ranged(1e-4, gt=0)
    """Peak learning rate of the LLM's trainable parameters (and of the adaptor unless adaptor_lr is set)."""
    adaptor_lr: float | None = ranged(None, ge=0)
    """Peak learning rate of the adaptor; None uses lr."""
    weight_decay: float = ranged(0.0, ge=0)
    """AdamW weight decay."""
    beta1: float = ranged(0.9, ge=0, lt=1)
    """AdamW beta1."""
    beta2: float = ranged(0.999, ge=0, lt=1)
    """AdamW beta2."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warmup (every parameter group is scaled by the same factor)."""
    warmup_ratio: float = ranged(0.03, ge=0, le=1)
    """Fraction of max_steps spent warming up linearly from 0."""
    warmup_steps: int | None = ranged(None, ge=0)
    """Warmup length in optimizer steps; None: warmup_ratio * max_steps."""
    min_lr_ratio: float = ranged(0.0, ge=0, le=1)
    """cosine/linear: the learning rate decays to this fraction of the peak at max_steps (0: to zero)."""
    grad_accum: int = ranged(1, ge=1)
    """Micro-batches accumulated per optimizer step."""
    max_grad_norm: float = ranged(1.0, ge=0)
    """Gradient clipping norm (0 disables)."""


@dataclass
class DataConfig(Checked):
    """What the model trains on."""

    train: str = ""
    """Training manifest (manifest.jsonl written by `speechkeep data build`)."""
    tasks: dict[str, float] = ranged(default_factory=lambda: {"qa": 1.0}, ge=0)
    """Task mixture, task -> weight (share of the manifest per epoch): 'qa' (spoken question -> teacher
    response), 'asr' (speech -> transcript), 't2t' (text question -> teacher response)."""
    asr_instruction: str = "Transcribe the audio."
    """Text after the speech in the user turn for the 'asr' task."""
    split: str | None = None
    """Use only manifest rows of this split (None: all rows)."""
    limit: int | None = ranged(None, ge=1)
    """Use only the first N rows of the manifest."""
    batch_size: int = ranged(8, ge=1)
    """Examples per micro-batch."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding)."""
    features_dir: str | None = None
    """Encoder-feature cache directory to read; None: <manifest dir>/features. Features missing there are computed
    into speechkeep's own cache (the data directory is never written to)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tasks and not any(w > 0 for w in self.tasks.values()):
            raise RangeError("tasks", self.tasks, "a mixture with at least one weight > 0")


@dataclass
class TrainConfig(Checked):
    """One training run."""

    model: SpeechLLMConfig = field(default_factory=SpeechLLMConfig)
    """The SpeechLLM to build (ignored for the parts loaded from init_from)."""
    init_from: str | None = "auto"
    """Where the SpeechLLM starts: 'auto' = the shipped aligned front-end for model.llm + model.speech_encoder when there is one (bundled:smollm2-135m+whisper-tiny.en), else a fresh adaptor; 'none' = a fresh adaptor (from scratch); or a front-end spec, saved SpeechLLM or run directory."""
    strategy: str = "adaptor"
    """Adaptation strategy: adaptor | full | lora | layer_lr | distill | upscale | anchor | ctc_align, or any other registered one (see speechkeep.strategies)."""
    sections: dict[str, Any] = field(default_factory=dict)
    """Settings of every registered strategy, by strategy name (set as ``<strategy>.<key>``, e.g. lora.r=16)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    output_dir: str = "runs/train"
    """Run directory: checkpoints, metrics.csv, TensorBoard logs, the final model."""
    max_steps: int = ranged(100, ge=1)
    """Optimizer steps to run."""
    max_minutes: float | None = ranged(None, ge=0)
    """Stop early (with a checkpoint and the final save) after this many minutes."""
    save_every: int = ranged(50, ge=1)
    """Write a resumable checkpoint every N optimizer steps (atomically)."""
    log_every: int = ranged(5, ge=1)
    """Log metrics every N optimizer steps."""
    eval_every: int | None = ranged(None, ge=1)
    """Run the strategy's own evaluation (if it has one, e.g. ctc_align's held-out WER) every N optimizer steps
    and at the last step, logged as eval_<name> columns; None: never."""
    resume: bool = False
    """Continue from output_dir/checkpoint if it exists."""
    overwrite: bool = False
    """Write into an output_dir that is not empty and not a previous `speechkeep train` run (and, with resume=false, start over an existing run's checkpoint). Never needed for a new or empty directory."""
    seed: int = ranged(0, ge=0)
    """Seed of initialization, data order and dropout."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""

    @staticmethod
    def __config_sections__() -> dict[str, type]:
        """Plugin sections (see :func:`speechkeep.config.config_sections`): the registered strategies' settings."""
        from speechkeep.strategies import strategy_settings  # the registry, not a strategy

        return strategy_settings()

    def __getattr__(self, name: str) -> Any:
        """A strategy's settings as an attribute (``cfg.lora.r``)."""
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or strategy section '{name}'")
