"""``speechkeep train`` configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from speechkeep.models.speech_llm import SpeechLLMConfig
from speechkeep.strategies.layer_lr import LayerLRSettings
from speechkeep.strategies.lora import LoraSettings


@dataclass
class OptimConfig:
    """AdamW with warmup + schedule."""

    lr: float = 1e-4
    """Peak learning rate of the LLM's trainable parameters (and of the adaptor unless adaptor_lr is set)."""
    adaptor_lr: float | None = None
    """Peak learning rate of the adaptor; None uses lr."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.999
    """AdamW beta2."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warmup (every parameter group is scaled by the same factor)."""
    warmup_ratio: float = 0.03
    """Fraction of max_steps spent warming up linearly from 0."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""


@dataclass
class DataConfig:
    """What the model trains on."""

    train: str = ""
    """Training manifest (manifest.jsonl written by `speechkeep data build`)."""
    tasks: dict[str, float] = field(default_factory=lambda: {"qa": 1.0})
    """Task mixture, task -> weight (share of the manifest per epoch): 'qa' (spoken question -> teacher
    response), 'asr' (speech -> transcript), 't2t' (text question -> teacher response)."""
    asr_instruction: str = "Transcribe the audio."
    """Text after the speech in the user turn for the 'asr' task."""
    split: str | None = None
    """Use only manifest rows of this split (None: all rows)."""
    limit: int | None = None
    """Use only the first N rows of the manifest."""
    batch_size: int = 8
    """Examples per micro-batch."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding)."""
    features_dir: str | None = None
    """Encoder-feature cache directory; None: <manifest dir>/features."""


@dataclass
class TrainConfig:
    """One training run."""

    model: SpeechLLMConfig = field(default_factory=SpeechLLMConfig)
    """The SpeechLLM to build (ignored for the parts loaded from init_from)."""
    init_from: str | None = "auto"
    """Where the SpeechLLM starts: 'auto' = the shipped aligned front-end for model.llm + model.speech_encoder when there is one (bundled:smollm2-135m+whisper-tiny.en), else a fresh adaptor; 'none' = a fresh adaptor (from scratch); or a front-end spec, saved SpeechLLM or run directory."""
    strategy: str = "adaptor"
    """Adaptation strategy: adaptor | full | lora | layer_lr (see speechkeep.strategies)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings (strategy=lora)."""
    layer_lr: LayerLRSettings = field(default_factory=LayerLRSettings)
    """Importance-driven layer-wise learning rates (strategy=layer_lr)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    output_dir: str = "runs/train"
    """Run directory: checkpoints, metrics.csv, TensorBoard logs, the final model."""
    max_steps: int = 100
    """Optimizer steps to run."""
    max_minutes: float | None = None
    """Stop early (with a checkpoint and the final save) after this many minutes."""
    save_every: int = 50
    """Write a resumable checkpoint every N optimizer steps (atomically)."""
    log_every: int = 5
    """Log metrics every N optimizer steps."""
    resume: bool = False
    """Continue from output_dir/checkpoint if it exists."""
    seed: int = 0
    """Seed of initialization, data order and dropout."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""
