"""Audio I/O used everywhere: every waveform inside speechkeep is float32 mono at 16 kHz.

Whisper-style encoders see at most a 30 s window; audio longer than that is an error
(:func:`check_duration`), never silently truncated.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speechkeep.errors import DataError

TARGET_SR = 16000
MAX_SECONDS = 30.0


def load_audio(path: str | os.PathLike, target_sr: int = TARGET_SR) -> np.ndarray:
    """Read an audio file as float32 mono at ``target_sr``.

    Multi-channel audio is averaged to mono; any sample rate is resampled with soxr. Any format
    libsndfile reads is accepted (WAV of 8/16/24/32 bits or float, FLAC, OGG, MP3...).
    Raises :class:`DataError` naming the file if it is missing, unreadable/corrupt, truncated (a WAV
    whose header promises more audio than the file holds), empty, or holds NaN/infinite samples."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found (or not a regular file): {path}")
    check_wav_complete(path)
    try:
        samples, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError, EOFError) as err:
        raise DataError(f"cannot read audio file {path}: {err}") from None
    if samples.shape[0] == 0:
        raise DataError(f"audio file {path} has zero length (no samples)")
    check_finite(samples, path)
    return _mono_resampled(samples, sr, target_sr)


def check_finite(samples: np.ndarray, source: str | os.PathLike) -> None:
    """Raise :class:`DataError` naming ``source`` if any sample is NaN or infinite."""
    if samples.dtype.kind == "f" and not np.isfinite(samples).all():
        bad = int(np.size(samples) - np.isfinite(samples).sum())
        raise DataError(f"audio {source} has {bad} non-finite samples (NaN or infinity)")


def check_wav_complete(path: str | os.PathLike) -> None:
    """Raise :class:`DataError` if ``path`` is a RIFF/WAVE file whose ``data`` chunk is shorter than its
    header says (a truncated download or copy; libsndfile would silently read what is there)."""
    import struct

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, csize = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                have = size - pos - 8
                if csize not in (0, 0xFFFFFFFF) and csize > have:
                    raise DataError(f"audio file {path} is truncated: its header declares {csize} bytes of "
                                    f"audio, the file holds {have}")
                return
            pos += 8 + csize + (csize & 1)


def to_mono_16k(samples: np.ndarray, sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """Convert an in-memory waveform to float32 mono at ``target_sr`` (16 kHz by default).

    ``samples`` is 1-D (mono) or 2-D ``(frames, channels)``; channels are averaged.
    Raises :class:`DataError` for empty input, more than 2 dimensions or a non-positive rate."""
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2):
        raise DataError(f"audio array must be 1-D or (frames, channels), got shape {samples.shape}")
    if samples.shape[0] == 0:
        raise DataError("audio array has zero length (no samples)")
    if sr <= 0:
        raise DataError(f"sample rate must be positive, got {sr}")
    check_finite(samples, "array")
    if samples.ndim == 1:
        samples = samples[:, None]
    return _mono_resampled(samples, sr, target_sr)


def _mono_resampled(samples: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Average ``(frames, channels)`` to mono and resample to ``target_sr`` (float32, contiguous)."""
    if samples.dtype.kind == "i":
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    elif samples.dtype.kind != "f":
        raise DataError(f"audio samples must be float or signed integer, got dtype {samples.dtype}")
    mono = samples.astype(np.float32, copy=False).mean(axis=1)
    if sr != target_sr:
        mono = soxr.resample(mono, sr, target_sr)
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_duration(
    samples: np.ndarray, sr: int, source: str | os.PathLike, max_seconds: float = MAX_SECONDS
) -> None:
    """Raise :class:`DataError` naming ``source`` if the audio is longer than ``max_seconds``.

    Long audio is never truncated silently: the caller must split or drop it."""
    seconds = len(samples) / sr
    if seconds > max_seconds:
        raise DataError(
            f"audio {source} is {seconds:.2f} s long, longer than the {max_seconds:g} s limit; "
            "split or drop it (speechkeep never truncates audio silently)"
        )


def save_wav(path: str | os.PathLike, samples: np.ndarray, sr: int = TARGET_SR) -> None:
    """Write mono float samples in [-1, 1] as a 16-bit PCM WAV, atomically.

    The file is written to a temporary file in the same directory and renamed onto ``path``,
    so ``path`` either does not exist or is complete. Samples outside [-1, 1] are clipped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767).astype(np.int16)
    from speechkeep.io import temp_prefix

    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            sf.write(f, pcm, sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
