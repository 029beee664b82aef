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
from safetensors.torch import load_file, save_file

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
    """Restore everything :func:`save_checkpoint` wrote; returns the progress record."""
    params = load_file(str(path / "trainable.safetensors"))
    named = dict(model.named_parameters())
    missing = [n for n, p in named.items() if p.requires_grad and n not in params]
    if missing:
        raise RuntimeError(f"{path}: checkpoint lacks trainable parameters {missing[:3]}... (different strategy?)")
    with torch.no_grad():
        for n, t in params.items():
            named[n].copy_(t)
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return json.loads((path / "progress.json").read_text())
