"""Resumable checkpoints, written atomically: a crash mid-save leaves the previous checkpoint intact.

A checkpoint holds only what training changes (trainable parameters), the optimizer and scheduler
states, the data position, the step and every RNG state, so a resumed run continues exactly.

A model sharded by FSDP2 (parameters and optimizer state are DTensors, each process holding a shard)
is saved in the same format as an unsharded one: every process calls :func:`save_checkpoint`, which
gathers each tensor in full (a collective), and only the one given ``write=True`` keeps and writes it.
Such a checkpoint therefore resumes in one process, and one of one process in several (the optimizer
state is sharded again by :func:`load_optimizer_state`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from speechkeep.io import atomic_path


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded DTensor (a collective: every process of its mesh must call it), else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def trainable_state(model: torch.nn.Module, keep: bool = True) -> dict[str, torch.Tensor]:
    """The trainable parameters, whole and on the CPU (``keep=False``: only take part in gathering
    sharded ones, and return nothing)."""
    out = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            t = _full(p.detach())
            if keep:
                out[n] = t.cpu().contiguous()
    return out


def optimizer_state(optimizer, keep: bool = True) -> dict | None:
    """``optimizer.state_dict()`` with every sharded state tensor gathered whole onto the CPU: the
    format of an unsharded run (``keep=False``: only take part in gathering; returns None)."""
    sd = optimizer.state_dict()
    state = {i: {k: _full(v) for k, v in s.items()} for i, s in sd["state"].items()}
    if not keep:
        return None
    return {**sd, "state": {i: {k: v.cpu() if torch.is_tensor(v) else v for k, v in s.items()}
                            for i, s in state.items()}}


def load_optimizer_state(optimizer, saved: dict, path: Path) -> None:
    """Load an :func:`optimizer_state` (whole tensors; of the checkpoint ``path``) into ``optimizer``,
    sharding each state tensor of a sharded (DTensor) parameter as that parameter is."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    from speechkeep.errors import ConfigError

    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {}
    for i, s in saved["state"].items():
        p = params[int(i)] if int(i) < len(params) else None
        state[i] = {k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
                    if isinstance(p, DTensor) and torch.is_tensor(v) and v.shape == p.shape else v
                    for k, v in s.items()}
    try:
        optimizer.load_state_dict({**saved, "state": state})
    except (ValueError, KeyError) as e:
        raise ConfigError(f"{path}: the optimizer state does not fit this run ({e}); choose another output_dir") from None


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, data_state: dict, extra: dict | None = None,
                    write: bool = True) -> None:
    """Write the checkpoint atomically. With a sharded model every process calls it (the tensors are
    gathered) and only the one with ``write=True`` writes."""
    weights, opt_state = trainable_state(model, keep=write), optimizer_state(optimizer, keep=write)
    if not write:
        return
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": opt_state, "scheduler": scheduler.state_dict(),
                    "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                            "python": random.getstate(),
                            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}},
                   tmp / "state.pt")
        (tmp / "progress.json").write_text(json.dumps({"step": step, "data": data_state, **(extra or {})}, indent=2))


def load_trainable(model, params: dict[str, torch.Tensor], path: Path) -> None:
    """Copy the trainable weights ``params`` (of the checkpoint ``path``) into the (unsharded) model; a
    ConfigError when they do not fit it."""
    from speechkeep.errors import ConfigError

    named = dict(model.named_parameters())
    missing = [n for n, p in named.items() if p.requires_grad and n not in params]
    unexpected = [n for n in params if n not in named]
    wrong = [n for n, t in params.items() if n in named and tuple(t.shape) != tuple(named[n].shape)]
    if missing or unexpected or wrong:
        what = (f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, unknown to this model" if unexpected
                else f"has {wrong[0]} of shape {tuple(params[wrong[0]].shape)}, the model {tuple(named[wrong[0]].shape)}")
        raise ConfigError(f"{path}: the checkpoint does not fit this run's model: it {what} (another strategy, "
                          "model or LoRA rank?); choose another output_dir")
    with torch.no_grad():
        for n, t in params.items():
            named[n].copy_(t)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore everything :func:`save_checkpoint` wrote into the unsharded model; returns the progress
    record, with the optimizer state under ``"optimizer"`` when ``optimizer`` is None (a model to be
    sharded: see :func:`load_optimizer_state`, after sharding).

    A damaged checkpoint is a DataError, one of another model or strategy a ConfigError (both name it)."""
    from speechkeep.errors import ConfigError, DataError
    from speechkeep.models.persistence import read_safetensors

    params = read_safetensors(path / "trainable.safetensors", "checkpoint weights")
    load_trainable(model, params, path)
    try:
        state = torch.load(path / "state.pt", weights_only=False)
        progress = json.loads((path / "progress.json").read_text())
        step, data = int(progress["step"]), progress["data"]
    except Exception as e:  # truncated pickle, malformed JSON, missing keys
        raise DataError(f"{path}: the checkpoint is damaged ({type(e).__name__}: {e})") from None
    try:
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError) as e:
        raise ConfigError(f"{path}: the optimizer state does not fit this run ({e}); choose another output_dir") from None
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    rec = {**progress, "step": step, "data": data}
    if optimizer is None:
        rec["optimizer"] = state["optimizer"]
    return rec
