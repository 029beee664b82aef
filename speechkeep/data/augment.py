"""Data augmentation for speech alignment: the field's standard four (issue 16).

On the audio, before the frozen encoder (so the augmented utterances are new corpus utterances with their
own cached features; :class:`AudioAugmentConfig`, applied by the alignment corpus):

* **speed perturbation** (Ko et al., Interspeech 2015): resampling by a factor (0.9 / 1.1 in Kaldi's
  recipes), which changes tempo and pitch together;
* **additive noise** at a signal-to-noise ratio drawn from a range: white, pink (1/f) or brown (1/f^2)
  noise, generated here (no noise corpus needed);
* **reverberation**: convolution with a synthetic room impulse response (exponentially decaying
  Gaussian noise with a direct path, RT60 drawn from a range), normalized back to the input's peak.

On the encoder features, during training (:func:`spec_augment`, SpecAugment of Park et al., 2019, on
Whisper encoder outputs): time masks and feature-channel masks set to zero.

Every audio augmentation is a pure function of (audio, its parameters, seed): :func:`augment_plan` draws the
parameters from a generator seeded by the utterance id and the config's seed, so a corpus is rebuilt
bit-identically.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from speechkeep.config import Checked, ranged
from speechkeep.errors import DataError


@dataclass
class AudioAugmentConfig(Checked):
    """Audio augmentations of the alignment corpus: each utterance picked gets one augmented copy."""

    fraction: float = ranged(0.0, ge=0, le=1)
    """Share of the corpus utterances that get an augmented copy (0: off)."""
    kinds: list[str] = field(default_factory=lambda: ["speed", "noise", "reverb"])
    """Augmentations to draw from, one per copy: speed, noise, reverb."""
    speeds: list[float] = ranged(default_factory=lambda: [0.9, 1.1], ge=0.5, le=2.0)
    """Speed-perturbation factors (>1 faster and higher)."""
    snr_db: list[float] = ranged(default_factory=lambda: [5.0, 20.0], ge=-20.0, le=80.0)
    """Range [low, high] of the additive noise's signal-to-noise ratio in dB."""
    noise_colors: list[str] = field(default_factory=lambda: ["white", "pink", "brown"])
    """Noise spectra to draw from: white, pink, brown."""
    rt60_s: list[float] = ranged(default_factory=lambda: [0.2, 0.8], gt=0.0, le=10.0)
    """Range [low, high] of the synthetic room's reverberation time RT60 in seconds."""
    seed: int = ranged(0, ge=0)
    """Seed of the choice of utterances and of every augmentation's parameters."""

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise ValueError(f"kinds: unknown augmentation {bad[0]!r}; valid: {', '.join(KINDS)}")
        if self.fraction > 0 and not self.kinds:
            raise ValueError("kinds: at least one augmentation is needed when fraction > 0")
        bad = [c for c in self.noise_colors if c not in COLORS]
        if bad:
            raise ValueError(f"noise_colors: unknown noise {bad[0]!r}; valid: {', '.join(COLORS)}")
        for name in ("snr_db", "rt60_s"):
            v = getattr(self, name)
            if len(v) != 2 or v[0] > v[1]:
                raise ValueError(f"{name} must be [low, high] with low <= high, got {v}")
        if any(not 0.5 <= s <= 2.0 for s in self.speeds) or not self.speeds:
            raise ValueError(f"speeds must be factors in [0.5, 2], got {self.speeds}")
        if self.rt60_s[0] <= 0:
            raise ValueError(f"rt60_s must be > 0, got {self.rt60_s}")


KINDS = ("speed", "noise", "reverb")
COLORS = ("white", "pink", "brown")


def _rng(*key) -> np.random.Generator:
    h = hashlib.sha256(repr(key).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "big"))


def augment_plan(utt_id: str, cfg: AudioAugmentConfig) -> dict | None:
    """The augmentation of one utterance (``{"kind", ...parameters}``), or None when it gets no copy."""
    if cfg.fraction <= 0:
        return None
    rng = _rng("augment", utt_id, cfg.seed)
    if rng.random() >= cfg.fraction:
        return None
    kind = cfg.kinds[int(rng.integers(len(cfg.kinds)))]
    if kind == "speed":
        return {"kind": "speed", "factor": float(cfg.speeds[int(rng.integers(len(cfg.speeds)))])}
    if kind == "noise":
        return {"kind": "noise", "snr_db": round(float(rng.uniform(*cfg.snr_db)), 2),
                "color": cfg.noise_colors[int(rng.integers(len(cfg.noise_colors)))],
                "seed": int(rng.integers(2 ** 31))}
    return {"kind": "reverb", "rt60_s": round(float(rng.uniform(*cfg.rt60_s)), 3), "seed": int(rng.integers(2 ** 31))}


def plan_tag(plan: dict) -> str:
    """A short file-name tag of an augmentation (``speed1.1``, ``noise-pink-12.5db``, ``reverb0.45s``)."""
    if plan["kind"] == "speed":
        return f"speed{plan['factor']:g}"
    if plan["kind"] == "noise":
        return f"noise-{plan['color']}-{plan['snr_db']:g}db"
    return f"reverb{plan['rt60_s']:g}s"


def speed_perturb(audio: np.ndarray, factor: float, sr: int = 16000) -> np.ndarray:
    """Play ``audio`` ``factor`` times faster (tempo and pitch together, as Kaldi's speed perturbation)."""
    import soxr

    if factor <= 0:
        raise DataError(f"speed factor must be > 0, got {factor}")
    return np.ascontiguousarray(soxr.resample(audio.astype(np.float32), sr * factor, sr), dtype=np.float32)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise of ``n`` samples with a white, pink (1/f) or brown (1/f^2) power spectrum."""
    if color not in COLORS:
        raise DataError(f"unknown noise color {color!r}; valid: {', '.join(COLORS)}")
    white = rng.standard_normal(n)
    if color != "white":
        spec = np.fft.rfft(white)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0
        spec /= f ** (0.5 if color == "pink" else 1.0)
        white = np.fft.irfft(spec, n)
    white -= white.mean()
    return (white / (np.sqrt(np.mean(white ** 2)) + 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, color: str, seed: int) -> np.ndarray:
    """``audio`` plus noise at ``snr_db`` dB below the speech's power (clipped to [-1, 1])."""
    p = float(np.mean(audio.astype(np.float64) ** 2))
    if p == 0.0:
        return audio.astype(np.float32)
    noise = colored_noise(audio.size, color, np.random.default_rng(seed)) * np.sqrt(p / 10 ** (snr_db / 10))
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def room_impulse(rt60_s: float, seed: int, sr: int = 16000) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then Gaussian noise decaying by 60 dB in ``rt60_s``."""
    rng = np.random.default_rng(seed)
    n = max(int(rt60_s * sr), 2)
    t = np.arange(n) / sr
    h = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s) * 0.3
    h[0] = 1.0
    return h.astype(np.float32)


def reverberate(audio: np.ndarray, rt60_s: float, seed: int, sr: int = 16000) -> np.ndarray:
    """``audio`` convolved with :func:`room_impulse`, cut to its length, rescaled to its original peak."""
    from scipy.signal import fftconvolve

    y = fftconvolve(audio.astype(np.float64), room_impulse(rt60_s, seed, sr))[: audio.size]
    peak, new = float(np.abs(audio).max()), float(np.abs(y).max())
    return (y * (peak / new) if new > 0 else y).astype(np.float32)


def apply_plan(audio: np.ndarray, plan: dict, sr: int = 16000) -> np.ndarray:
    """Apply one :func:`augment_plan` result."""
    if plan["kind"] == "speed":
        return speed_perturb(audio, plan["factor"], sr)
    if plan["kind"] == "noise":
        return add_noise(audio, plan["snr_db"], plan["color"], plan["seed"])
    if plan["kind"] == "reverb":
        return reverberate(audio, plan["rt60_s"], plan["seed"], sr)
    raise DataError(f"unknown augmentation {plan['kind']!r}; valid: {', '.join(KINDS)}")


def spec_augment(features: torch.Tensor, time_masks: int, time_width: int, feature_masks: int,
                 feature_width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment-style masking of (T, C) features: ``time_masks`` spans of 0..``time_width`` frames and
    ``feature_masks`` spans of 0..``feature_width`` channels set to 0 (a new tensor; the input is untouched).
    Widths are capped at a fifth of T (time) and of C (channels) so an utterance keeps most of itself."""
    x = features.clone()
    T, C = x.shape
    tw, fw = min(time_width, max(T // 5, 0)), min(feature_width, max(C // 5, 0))
    for _ in range(time_masks if tw > 0 else 0):
        w = int(torch.randint(0, tw + 1, (1,), generator=generator))
        s = int(torch.randint(0, max(T - w, 0) + 1, (1,), generator=generator))
        x[s: s + w] = 0
    for _ in range(feature_masks if fw > 0 else 0):
        w = int(torch.randint(0, fw + 1, (1,), generator=generator))
        s = int(torch.randint(0, max(C - w, 0) + 1, (1,), generator=generator))
        x[:, s: s + w] = 0
    return x
