"""CTC alignment onto the LLM's own vocabulary: the fastest-learning alignment stage on a CPU.

The adaptor's outputs are scored against the frozen LLM's token embeddings (plus a learned blank,
:class:`~speechkeep.models.adaptor.FrameStackAdaptor` with ``output='ctc'``) and trained with CTC
on transcripts tokenized by the LLM's tokenizer. The LLM itself never runs: a step costs the adaptor
MLP and one (frames x V) matmul, where V is the CTC vocabulary, the LLM tokens that occur in the
corpus transcripts (about a fifth of SmolLM2's 49k).

The stage is the objective ``strategy=ctc_align`` (:mod:`speechkeep.strategies.ctc_align`) on the one
training engine (:func:`speechkeep.train.loop.train`): :func:`train_config` maps the options below onto a
:class:`~speechkeep.train.config.TrainConfig` (AdamW, linear warmup then cosine decay to 10% of the peak,
clipping at 1, length-grouped batches of cached variable-length features, atomic checkpoints and exact
resume, ``metrics.csv`` + TensorBoard, the progress bar), and every ``eval_every`` steps the engine logs
the greedy-CTC WER on the evaluation manifest (``eval_wer``; monitoring only: the final model is the
last step's). The result, ``<out>/model``, is a SpeechLLM directory (the LLM referenced by its spec);
``<out>/summary.json`` holds the engine's summary plus the alignment report's fields.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from speechkeep.config import Checked, ranged
from speechkeep.errors import ConfigError, DataError
from speechkeep.models.adaptor import AdaptorConfig
from speechkeep.models.ctc_head import ctc_feasible, ctc_loss, ctc_vocabulary  # noqa: F401 (the CTC math, re-exported)
from speechkeep.models.speech_llm import SpeechLLMConfig

log = logging.getLogger(__name__)


def _default_model() -> SpeechLLMConfig:
    return SpeechLLMConfig(adaptor=AdaptorConfig(hidden_size=1024, output="ctc", ctc_vocab_size=1),
                           encode_mode="variable")


@dataclass
class CTCAlignConfig(Checked):
    """Options of the CTC alignment stage."""

    manifest: str = "runs/align/corpus/manifest.jsonl"
    """Training manifest (the alignment corpus: every row's text is its transcript)."""
    eval_manifest: str | None = None
    """Held-out manifest for the WER curve (None: no evaluation during training)."""
    features_dir: str | None = None
    """Encoder-feature cache of the training manifest (None: <manifest dir>/features)."""
    eval_features_dir: str | None = None
    """Feature cache of the evaluation manifest (None: <eval manifest dir>/features)."""
    out: str = "runs/align/ctc"
    """Output directory: metrics.csv, checkpoint/, model/, summary.json."""
    model: SpeechLLMConfig = field(default_factory=_default_model)
    """The SpeechLLM whose adaptor is trained (adaptor.output must be 'ctc'; ctc_vocab_size is set from the corpus)."""
    batch_size: int = ranged(32, ge=1)
    """Utterances per step."""
    lr: float = ranged(1e-3, gt=0)
    """Peak learning rate (AdamW)."""
    weight_decay: float = ranged(0.01, ge=0)
    """AdamW weight decay."""
    warmup_steps: int = ranged(100, ge=0)
    """Linear warmup steps (from 0), then cosine decay to 10% of the peak at max_steps."""
    max_steps: int = ranged(3000, ge=1)
    """Optimizer steps."""
    max_minutes: float | None = ranged(None, ge=0)
    """Stop (with a checkpoint and the model saved) after this many minutes of this invocation; resume later."""
    eval_every: int = ranged(250, ge=1)
    """Steps between WER evaluations (and at the last step)."""
    save_every: int = ranged(100, ge=1)
    """Steps between checkpoints."""
    resume: bool = True
    """Continue from <out>/checkpoint when it exists."""
    seed: int = ranged(0, ge=0)
    """Seed of the adaptor initialization and the data order."""
    vocabulary: str | None = None
    """CTC vocabulary file (vocabulary.json of `speechkeep data text`: general English + a spelling fallback); None: the LLM tokens of the training transcripts."""
    time_masks: int = ranged(0, ge=0)
    """SpecAugment-style time masks per utterance on the encoder features during training (0: off)."""
    time_mask_frames: int = ranged(10, ge=1)
    """Widest time mask (encoder frames, 50 per second)."""
    feature_masks: int = ranged(0, ge=0)
    """Feature-channel masks per utterance during training (0: off)."""
    feature_mask_channels: int = ranged(27, ge=1)
    """Widest feature-channel mask (channels)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """fp32, or bf16 autocast (the matmuls in bfloat16, weights and optimizer state in fp32): on a CPU with AMX
    (e.g. Sapphire Rapids) a step of the general front-end's Transformer adaptor took 0.70x the time
    (benchmarks/bench_ctc_vocab.py --precision fp32 bf16)."""


MIN_LR_RATIO = 0.1
"""The cosine schedule's floor: the learning rate at max_steps, as a fraction of the peak."""
LOG_EVERY = 10
"""Steps between metrics.csv rows (besides the evaluation steps)."""


def train_config(cfg: CTCAlignConfig):
    """The :class:`~speechkeep.train.config.TrainConfig` of the CTC stage: ``strategy=ctc_align`` from a new
    adaptor (``init_from=none``), adaptor only, task ``asr`` (each utterance's transcript)."""
    from speechkeep.config import config_from_dict, config_to_dict
    from speechkeep.train.config import TrainConfig

    if cfg.model.adaptor.output != "ctc":
        raise ConfigError("model.adaptor.output must be 'ctc' for the CTC alignment stage")
    return config_from_dict(TrainConfig, {
        "model": config_to_dict(cfg.model), "init_from": "none", "strategy": "ctc_align",
        "ctc_align": {"eval_manifest": cfg.eval_manifest, "eval_features_dir": cfg.eval_features_dir,
                      "vocabulary": cfg.vocabulary, "time_masks": cfg.time_masks,
                      "time_mask_frames": cfg.time_mask_frames, "feature_masks": cfg.feature_masks,
                      "feature_mask_channels": cfg.feature_mask_channels},
        "optim": {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "warmup_steps": cfg.warmup_steps,
                  "schedule": "cosine", "min_lr_ratio": MIN_LR_RATIO, "max_grad_norm": 1.0, "grad_accum": 1},
        "data": {"train": cfg.manifest, "tasks": {"asr": 1.0}, "batch_size": cfg.batch_size,
                 "features_dir": cfg.features_dir, "group_by_length": True},
        "output_dir": cfg.out, "max_steps": cfg.max_steps, "max_minutes": cfg.max_minutes,
        "save_every": cfg.save_every, "log_every": LOG_EVERY, "eval_every": cfg.eval_every if cfg.eval_manifest else None,
        "resume": cfg.resume, "seed": cfg.seed, "precision": cfg.precision,
    })


# ----------------------------------------------------------------------------- features and decoding
def load_features(rows, features_dir: Path, encoder_spec: str, progress: bool = True) -> list[torch.Tensor]:
    """fp16 variable-length features of every row (computed and cached where missing; benchmarks)."""
    from speechkeep.data.features import FeatureCache

    cache = FeatureCache(features_dir, encoder_spec, "variable", progress=progress)
    out = []
    step = 2048
    for s in range(0, len(rows), step):
        out += cache.get([r.audio for r in rows[s: s + step]], dtype=torch.float16)
    return out


def ctc_transcribe(model, frames: list[torch.Tensor], batch_size: int = 64) -> list[str]:
    """Greedy CTC transcripts of a CTC-adaptor SpeechLLM (see :meth:`SpeechLLM.ctc_transcribe`)."""
    return model.ctc_transcribe(frames, batch_size)


# ----------------------------------------------------------------------------- training
def train_ctc(cfg: CTCAlignConfig, progress: bool = True) -> dict:
    """Run (or resume) the CTC stage on the training engine; returns the summary written to
    ``<out>/summary.json`` (the engine's, plus steps, stop_reason, train_minutes, utterances,
    dropped_infeasible, hours, ctc_vocab_size, final_loss, eval_wer and this config)."""
    from speechkeep.config import config_to_dict
    from speechkeep.data.manifest import read_manifest
    from speechkeep.io import write_json
    from speechkeep.train.loop import train

    tcfg = train_config(cfg)
    if not read_manifest(cfg.manifest):
        raise DataError(f"{cfg.manifest}: no utterances")
    res = train(tcfg, progress=progress)
    s = res.summary
    summary = {**s, "steps": res.steps, "stop_reason": "max_minutes" if s.get("stopped_early") else "max_steps",
               "train_minutes": round(s.get("train_seconds", res.seconds) / 60, 2),
               "final_loss": round(float(res.final_loss), 4), "config": config_to_dict(cfg)}
    log.info("%d utterances (%d dropped: too many tokens for their frames), CTC vocabulary %d",
             s.get("utterances", 0), s.get("dropped_infeasible", 0), s.get("ctc_vocab_size", 0))
    write_json(Path(cfg.out) / "summary.json", summary)
    return summary
