"""How a shipped adaptor's weights are stored: fp16, or int8 with one scale per row (half the size again).

``int8`` stores every floating matrix of at least :data:`MIN_QUANTIZED_ELEMENTS` elements as
``round(w / s)`` in int8 with ``s = max|w_row| / 127`` per output row (symmetric, per-channel: the usual
weight-only int8 of LLM.int8()/bitsandbytes' row-wise format), its scales in fp32 under ``<name>.int8_scale``;
smaller tensors (biases, norms, the blank) stay fp16, integer buffers as they are. The file's metadata
(``speechkeep_storage``) says which; :func:`load_adaptor_state` returns the float32 weights either way, and
:func:`round_trip` gives exactly what a model loads from a stored file (the weights a measurement of the
shipped file saw).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

Storage = Literal["fp16", "int8"]
STORAGES = ("fp16", "int8")
METADATA_KEY = "speechkeep_storage"
SCALE_SUFFIX = ".int8_scale"
MIN_QUANTIZED_ELEMENTS = 4096
"""Matrices smaller than this stay fp16 (their size does not matter; their precision might)."""


def _quantized(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.dim() == 2 and t.numel() >= MIN_QUANTIZED_ELEMENTS


def encode(state: dict[str, torch.Tensor], storage: Storage) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a stored adaptor (``storage``: fp16 or int8 row-wise)."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if storage == "int8" and _quantized(v):
            w = v.float()
            scale = (w.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
            out[k] = torch.round(w / scale).clamp(-127, 127).to(torch.int8).contiguous()
            out[k + SCALE_SUFFIX] = scale.contiguous()
        else:
            out[k] = (v.half() if v.is_floating_point() else v).contiguous()
    return out, {METADATA_KEY: storage, "dtype": "float16" if storage == "fp16" else "int8-rowwise+float16"}


def decode(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> dict[str, torch.Tensor]:
    """The float32 (and integer) weights of stored tensors; files without the metadata are read as they are."""
    if (metadata or {}).get(METADATA_KEY) != "int8":
        return {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    out = {}
    for k, v in tensors.items():
        if k.endswith(SCALE_SUFFIX):
            continue
        scale = tensors.get(k + SCALE_SUFFIX)
        out[k] = v.float() * scale if scale is not None else (v.float() if v.is_floating_point() else v)
    return out


def round_trip(state: dict[str, torch.Tensor], storage: Storage) -> dict[str, torch.Tensor]:
    """The weights a model loads after ``state`` was stored as ``storage`` (bit for bit)."""
    return decode(*encode(state, storage))


def load_adaptor_state(path: Path) -> dict[str, torch.Tensor]:
    """An adaptor file's weights (decoded when stored int8); a missing or corrupt file is a DataError naming it."""
    from safetensors import safe_open

    from speechkeep.errors import DataError
    from speechkeep.models.persistence import read_safetensors

    tensors = read_safetensors(path, "adaptor weights")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
    except Exception as e:  # already read above; a race or a foreign file
        raise DataError(f"{path}: cannot read the adaptor file's metadata ({e})") from None
    if (metadata or {}).get(METADATA_KEY) not in (None, *STORAGES):
        raise DataError(f"{path}: unknown adaptor storage {metadata[METADATA_KEY]!r} (a newer speechkeep wrote it?)")
    return decode(tensors, metadata)
