"""Recorded model transforms: structural changes of a SpeechLLM's LLM that a saved model re-applies.

A transform (LoRA left unmerged, inserted blocks, ...) is a function ``(llm, settings) -> llm`` that
changes the LLM's structure, registered here under a name. :meth:`SpeechLLM.apply_transform
<speechkeep.models.speech_llm.SpeechLLM.apply_transform>` applies one and records
``{"name": ..., "settings": ...}`` on the model; the saved model's ``speechkeep.json`` lists the
records, and loading rebuilds the base LLM, re-applies each transform through this registry and only
then loads the weights (:mod:`speechkeep.models.persistence`).

Strategies register the transforms they use (``speechkeep.strategies.lora`` registers ``lora``). The
registry lives in ``models/`` so the layering stays one-way (models never import a strategy); when a
saved model names a transform not registered yet, :func:`get_transform` imports the plugin package
``speechkeep.strategies`` (by name, at load time) once and looks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable

from torch import nn

from speechkeep.errors import DataError

PLUGIN_PACKAGES = ("speechkeep.strategies",)
"""Imported (by name) when a saved model names a transform that is not registered yet."""


def _owns_nothing(key: str, settings: dict[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class Transform:
    name: str
    apply: Callable[[nn.Module, dict[str, Any]], nn.Module]
    """(llm, settings) -> the transformed LLM (the same module changed in place, or a wrapper)."""
    owns: Callable[[str, dict[str, Any]], bool] = _owns_nothing
    """(state-dict key of the transformed LLM, the transform's settings) -> whether the key belongs to
    this transform (its weights are saved with the model even when the LLM's own weights are not)."""


TRANSFORMS: dict[str, Transform] = {}


def register_transform(t: Transform) -> Transform:
    """Make ``t`` available by name; a name already taken by another function is a ValueError."""
    prev = TRANSFORMS.get(t.name)
    if prev is not None and (prev.apply.__module__, prev.apply.__qualname__) != (t.apply.__module__, t.apply.__qualname__):
        raise ValueError(f"model transform '{t.name}' is already registered by {prev.apply.__module__}")
    TRANSFORMS[t.name] = t
    return t


def get_transform(name: str) -> Transform:
    """The transform ``name``, importing the plugin packages first if it is not registered yet."""
    if name not in TRANSFORMS:
        for pkg in PLUGIN_PACKAGES:
            import_module(pkg)
    if name not in TRANSFORMS:
        raise DataError(f"the model needs the transform '{name}', which no installed strategy provides "
                        f"(known: {', '.join(sorted(TRANSFORMS)) or 'none'})")
    return TRANSFORMS[name]


def owned_by_transforms(records: list[dict], key: str) -> bool:
    return any(get_transform(r["name"]).owns(key, r.get("settings") or {}) for r in records)
