"""Encoder-feature cache: the frozen speech encoder's output per utterance, computed once.

Each utterance's frames ``(T, d_encoder)`` are stored as fp16 safetensors under
``<root>/<key[:2]>/<key>.safetensors`` where ``key = sha256(encoder identity, mode, sha256 of the
audio file's bytes)``. The key changes when the encoder weights, the encoding mode or the audio
content changes, never because a file was moved or renamed. Files are written atomically; an
unreadable cache file (or one holding NaN/infinity) counts as a miss and is rewritten. Features that
are not finite are never stored: the audio is reported as a :class:`~speechkeep.errors.DataError`.

``read_roots``: more cache directories that are only read (a dataset's own ``features/``, which
evaluation and training never write to: it may be read-only or shared); misses are written to
``root``.

Misses are computed in batches of similar length (padded mode: 8 per batch, variable mode: 16),
with a progress bar. Training and evaluation read features with :meth:`FeatureCache.get` and pass
them as ``Query.speech_features``; the encoder is then never run (and, given a spec string rather
than a loaded encoder, never even loaded) when everything is cached.

Variable-length features are computed so that they do not depend on the other items of the batch
(see :meth:`WhisperSpeechEncoder.encode <speechkeep.models.speech_encoder.WhisperSpeechEncoder.encode>`); padded and variable features differ (Whisper was trained on the 30-s
window): ``benchmarks/bench_data.py`` measures by how much.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from speechkeep.errors import DataError
from speechkeep.io import cache_dir, file_sha256, sweep_stale as recover_stale_dir, temp_prefix

log = logging.getLogger(__name__)

BATCH_SIZES = {"padded": 8, "variable": 16}
TENSOR_NAME = "features"


@dataclass
class CacheStats:
    """Counters of one :class:`FeatureCache`."""

    hits: int = 0
    misses: int = 0
    encode_seconds: float = 0.0
    """Time spent computing misses (audio loading + encoder)."""
    frames: int = 0
    """Encoder frames computed."""


class FeatureCache:
    """fp16 encoder features keyed by encoder identity + mode + audio content hash.

    ``encoder``: a loaded :class:`~speechkeep.models.speech_encoder.WhisperSpeechEncoder`, or its
    spec string (then loaded only when a miss has to be computed). ``root``: the cache directory
    (default ``cache_dir('features')``; a dataset build uses ``DIR/features``)."""

    def __init__(self, root: str | os.PathLike | None, encoder, mode: str = "padded",
                 batch_size: int | None = None, progress: bool = True,
                 read_roots: Sequence[str | os.PathLike] = ()):
        if mode not in BATCH_SIZES:
            raise DataError(f"encode mode must be one of {', '.join(BATCH_SIZES)}, got {mode!r}")
        self.root = Path(root) if root is not None else cache_dir("features")
        self.root.mkdir(parents=True, exist_ok=True)
        self.read_roots = [Path(r) for r in read_roots if Path(r).resolve() != self.root.resolve()]
        self._encoder = encoder if not isinstance(encoder, str) else None
        self._spec = encoder if isinstance(encoder, str) else None
        self.mode = mode
        self.batch_size = batch_size or BATCH_SIZES[mode]
        self.progress = progress
        self.stats = CacheStats()
        self._content_hashes: dict[tuple[str, int, int], str] = {}
        self._swept: set[Path] = set()

    # ---------------------------------------------------------------- identity and keys
    @property
    def encoder(self):
        """The encoder (loaded from the spec on first use)."""
        if self._encoder is None:
            from speechkeep.models.speech_encoder import load_speech_encoder

            self._encoder = load_speech_encoder(self._spec)
        return self._encoder

    def encoder_identity(self) -> str:
        if self._encoder is not None:
            return self._encoder.identity()
        # Same string as WhisperSpeechEncoder.identity(), without loading the weights.
        from speechkeep.models.speech_encoder import resolve_encoder_dir

        return f"{self._spec}|{resolve_encoder_dir(self._spec)}"

    def content_hash(self, path: str | os.PathLike) -> str:
        """sha256 of the audio file's bytes (memoized per path, size and mtime)."""
        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            raise DataError(f"audio file not found: {p}") from None
        memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if memo not in self._content_hashes:
            self._content_hashes[memo] = file_sha256(p)
        return self._content_hashes[memo]

    def key(self, path: str | os.PathLike) -> str:
        ident = self._identity_cached()
        return hashlib.sha256(f"{ident}\0{self.mode}\0{self.content_hash(path)}".encode()).hexdigest()

    def _identity_cached(self) -> str:
        if not hasattr(self, "_identity"):
            self._identity = self.encoder_identity()
        return self._identity

    def path_for(self, audio_path: str | os.PathLike) -> Path:
        """Where the features of ``audio_path`` are (or would be) stored."""
        k = self.key(audio_path)
        return self.root / k[:2] / f"{k}.safetensors"

    def _candidates(self, audio_path: str | os.PathLike) -> list[Path]:
        own = self.path_for(audio_path)
        return [own] + [r / own.relative_to(self.root) for r in self.read_roots]

    def contains(self, audio_path: str | os.PathLike) -> bool:
        return any(c.is_file() for c in self._candidates(audio_path))

    # ---------------------------------------------------------------- reading and computing
    def get(self, paths: Sequence[str | os.PathLike], dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        """Features ``(T_i, d_encoder)`` of each audio file, in order (cast to ``dtype``).

        Cached ones are read; the rest are computed, stored and returned."""
        out: list[torch.Tensor | None] = [None] * len(paths)
        missing: list[int] = []
        for i, p in enumerate(paths):
            feats = None
            for c in self._candidates(p):
                feats = self._read(c)
                if feats is not None:
                    break
            if feats is None:
                missing.append(i)
            else:
                out[i] = feats.to(dtype)
                self.stats.hits += 1
        for i, feats in self._compute([paths[i] for i in missing], keep=True):
            out[missing[i]] = feats.to(dtype)
        return out  # type: ignore[return-value]

    def ensure(self, paths: Sequence[str | os.PathLike]) -> int:
        """Compute and store the features of every path not cached yet (without returning them).

        Returns how many were computed."""
        missing = []
        for p in paths:
            if self.contains(p):
                self.stats.hits += 1
            else:
                missing.append(p)
        for _ in self._compute(missing, keep=False):
            pass
        return len(missing)

    def _read(self, file: Path) -> torch.Tensor | None:
        if not file.is_file():
            return None
        from safetensors.torch import load_file

        try:
            feats = load_file(str(file))[TENSOR_NAME]
        except Exception as e:  # a torn or foreign file: recompute it
            log.warning("unreadable feature-cache file %s (%s); recomputing", file, e)
            return None
        if not torch.isfinite(feats).all():  # written by an older version from bad audio
            log.warning("feature-cache file %s holds NaN/infinity; recomputing", file)
            return None
        return feats

    def _compute(self, paths: Sequence[str | os.PathLike], keep: bool):
        """Yield (index into ``paths``, features) for each computed item; stores each one."""
        if not paths:
            return
        from safetensors.torch import save_file

        from speechkeep.audio import MAX_SECONDS, TARGET_SR, check_duration, load_audio

        encoder = self.encoder
        t0 = time.perf_counter()
        # Sort by length (file size of 16-bit PCM WAVs is proportional to it) so batches pad little.
        order = sorted(range(len(paths)), key=lambda i: os.path.getsize(paths[i]))
        bar = tqdm(total=len(paths), unit="utt", desc=f"features ({self.mode})", disable=not self.progress)
        try:
            for b in range(0, len(order), self.batch_size):
                idx = order[b: b + self.batch_size]
                audios = [load_audio(paths[i]) for i in idx]
                for i, a in zip(idx, audios):
                    check_duration(a, TARGET_SR, paths[i], max_seconds=min(MAX_SECONDS, encoder.max_seconds))
                try:
                    feats = encoder.encode(audios, mode=self.mode)
                except DataError as e:  # e.g. too long: name the files, not "audio item 3"
                    raise DataError(f"{e} (batch of {', '.join(str(paths[i]) for i in idx)})") from None
                for i, f in zip(idx, feats):
                    f16 = f.detach().to("cpu", torch.float16).contiguous()
                    if not torch.isfinite(f16).all():
                        raise DataError(f"audio {paths[i]}: the encoder's features are not finite (NaN or "
                                        "infinity: extreme sample values?); not cached")
                    target = self.path_for(paths[i])
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if target.parent not in self._swept:  # temporaries of a killed earlier run
                        recover_stale_dir(target.parent)
                        self._swept.add(target.parent)
                    tmp = target.with_name(temp_prefix(target) + "f")
                    save_file({TENSOR_NAME: f16}, str(tmp))
                    os.replace(tmp, target)
                    self.stats.misses += 1
                    self.stats.frames += f16.shape[0]
                    yield i, (f16 if keep else None)
                self.stats.encode_seconds = time.perf_counter() - t0
                bar.update(len(idx))
        finally:
            bar.close()
