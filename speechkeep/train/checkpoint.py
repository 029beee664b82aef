"""Resumable checkpoints, written atomically: a crash mid-save leaves the previous checkpoint intact.

A checkpoint holds only what training changes (trainable parameters), the optimizer and scheduler
states, the data position, the step and every RNG state, so a resumed run continues exactly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from speechkeep.io import atomic_path


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, data_state: dict, extra: dict | None = None) -> None:
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                            "python": random.getstate(),
                            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}},
                   tmp / "state.pt")
        (tmp / "progress.json").write_text(json.dumps({"step": step, "data": data_state, **(extra or {})}, indent=2))


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore everything :func:`save_checkpoint` wrote; returns the progress record.

    A damaged checkpoint is a DataError, one of another model or strategy a ConfigError (both name it)."""
    from speechkeep.errors import ConfigError, DataError
    from speechkeep.models.persistence import read_safetensors

    params = read_safetensors(path / "trainable.safetensors", "checkpoint weights")
    named = dict(model.named_parameters())
    missing = [n for n, p in named.items() if p.requires_grad and n not in params]
    unexpected = [n for n in params if n not in named]
    wrong = [n for n, t in params.items() if n in named and tuple(t.shape) != tuple(named[n].shape)]
    if missing or unexpected or wrong:
        what = (f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, unknown to this model" if unexpected
                else f"has {wrong[0]} of shape {tuple(params[wrong[0]].shape)}, the model {tuple(named[wrong[0]].shape)}")
        raise ConfigError(f"{path}: the checkpoint does not fit this run's model: it {what} (another strategy, "
                          "model or LoRA rank?); choose another output_dir")
    try:
        state = torch.load(path / "state.pt", weights_only=False)
        progress = json.loads((path / "progress.json").read_text())
        step, data = int(progress["step"]), progress["data"]
    except Exception as e:  # truncated pickle, malformed JSON, missing keys
        raise DataError(f"{path}: the checkpoint is damaged ({type(e).__name__}: {e})") from None
    with torch.no_grad():
        for n, t in params.items():
            named[n].copy_(t)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError) as e:
        raise ConfigError(f"{path}: the optimizer state does not fit this run ({e}); choose another output_dir") from None
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return {**progress, "step": step, "data": data}
