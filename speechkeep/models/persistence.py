"""Saving and loading SpeechLLMs, and resolving the model specs every command accepts.

A saved SpeechLLM is a directory with ``speechkeep.json`` (format version, how the LLM is stored, the
:class:`~speechkeep.models.speech_llm.SpeechLLMConfig`, the recorded transforms) and
``adaptor.safetensors``. The LLM is stored as one of (``llm_format``):

- ``reference``: not stored; the config's LLM spec is loaded as is;
- ``full``: a plain transformers directory ``llm/`` (LLM weights trained, no transform);
- ``transformed``: the LLM was changed by recorded transforms (LoRA left unmerged, inserted blocks...):
  loading builds the base LLM from the config's spec, re-applies every transform through the registry
  of :mod:`speechkeep.models.transforms`, then loads ``llm.safetensors`` (all LLM weights when they
  were trained, ``llm_weights: "all"``; else only the transforms' own weights, ``"transforms"``);
- ``peft``: a peft adapter directory ``llm_adapter/`` (models saved before transforms were recorded,
  or a peft model wrapped by hand).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from speechkeep.config import config_from_dict, config_to_dict
from speechkeep.errors import SpeechkeepError
from speechkeep.io import atomic_path
from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig

CONFIG_NAME = "speechkeep.json"
ADAPTOR_NAME = "adaptor.safetensors"
LLM_STATE_NAME = "llm.safetensors"
FORMAT_VERSION = 1
TRANSFORMS_FORMAT_VERSION = 2
"""Written when the model has recorded transforms (an older speechkeep cannot load those)."""
LLM_FORMATS = ("peft", "full", "reference", "transformed")


def _llm_own_weights_changed(model: SpeechLLM) -> bool:
    from speechkeep.models.transforms import owned_by_transforms

    if getattr(model, "llm_weights_changed", False):
        return True
    return any(p.requires_grad and not owned_by_transforms(model.transforms, n) for n, p in model.llm.named_parameters())


def save(model: SpeechLLM, path: str | Path, save_llm: bool | None = None) -> Path:
    """Write config, adaptor weights and the LLM (see the module doc) atomically.

    ``save_llm=None`` saves the LLM's own weights only if they changed (trainable, or merged into);
    otherwise the config refers to the LLM by its spec (the frozen base is not copied). Saving over
    an existing directory replaces only speechkeep's own names in it (``speechkeep.json``,
    ``adaptor.safetensors``, ``llm/``, ``llm_adapter/``, ``llm.safetensors``); anything else there is kept."""
    from safetensors.torch import save_file

    from speechkeep.models.transforms import owned_by_transforms

    path = Path(path)
    records = list(model.transforms)
    own = _llm_own_weights_changed(model) if save_llm is None else save_llm
    if records:
        llm_format = "transformed"
    elif model.is_peft():
        llm_format = "peft"
    else:
        llm_format = "full" if own else "reference"
    meta = {"format_version": TRANSFORMS_FORMAT_VERSION if records else FORMAT_VERSION, "llm_format": llm_format,
            "config": config_to_dict(model.config)}
    if records:
        meta["transforms"] = records
        meta["llm_weights"] = "all" if own else "transforms"
    with atomic_path(path, own_names=(CONFIG_NAME, ADAPTOR_NAME, "llm", "llm_adapter", LLM_STATE_NAME)) as tmp:
        tmp.mkdir(parents=True)
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        save_file({k: v.detach().contiguous().cpu() for k, v in model.adaptor.state_dict().items()},
                  str(tmp / ADAPTOR_NAME))
        if llm_format == "transformed":
            state = {k: v.detach().cpu().clone().contiguous() for k, v in model.llm.state_dict().items()
                     if own or owned_by_transforms(records, k)}
            save_file(state, str(tmp / LLM_STATE_NAME))
        elif llm_format == "peft":
            model.llm.save_pretrained(tmp / "llm_adapter")
        elif llm_format == "full":
            model.llm.save_pretrained(tmp / "llm")
            model.tokenizer.save_pretrained(tmp / "llm")
    return path


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[-1].strip() if lines else type(e).__name__


def _load_transformed(llm: torch.nn.Module, path: Path, meta: dict) -> torch.nn.Module:
    from speechkeep.errors import DataError
    from speechkeep.models.transforms import get_transform, owned_by_transforms

    records = meta.get("transforms")
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in records):
        raise DataError(f"{path / CONFIG_NAME}: 'transforms' must be a list of {{name, settings}} records")
    for r in records:
        try:
            llm = get_transform(r["name"]).apply(llm, r.get("settings") or {})
        except SpeechkeepError:
            raise
        except Exception as e:  # a transform's own error on settings it cannot use
            raise DataError(f"{path / CONFIG_NAME}: cannot re-apply the transform '{r['name']}': "
                            f"{type(e).__name__}: {_first_line(e)}") from None
    state = read_safetensors(path / LLM_STATE_NAME, "LLM weights")
    expected = llm.state_dict()
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    need = [k for k in expected if meta.get("llm_weights") == "all" or owned_by_transforms(records, k)]
    missing = [k for k in need if k not in state]
    if unexpected or wrong or missing:
        what = (f"has {unexpected[0]}, unknown to the transformed LLM" if unexpected else
                f"has {wrong[0]} of shape {tuple(state[wrong[0]].shape)}, the LLM {tuple(expected[wrong[0]].shape)}"
                if wrong else f"lacks {missing[0]}")
        raise DataError(f"{path / LLM_STATE_NAME}: the LLM weights do not fit the recorded transforms: it {what}")
    llm.load_state_dict(state, strict=False)
    return llm


def load(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> SpeechLLM:
    """Load what :func:`save` wrote. A damaged directory (malformed config, truncated or foreign weights)
    is a :class:`~speechkeep.errors.DataError` naming the file."""
    from speechkeep.errors import ConfigError, DataError
    from speechkeep.models.llm import load_llm
    from speechkeep.models.speech_encoder import load_speech_encoder

    path = Path(path)
    if not (path / CONFIG_NAME).exists():
        raise SpeechkeepError(f"{path} is not a speechkeep model directory (no {CONFIG_NAME})")
    try:
        meta = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("llm_format") not in LLM_FORMATS:
            raise ValueError("no valid llm_format")
        config = config_from_dict(SpeechLLMConfig, meta["config"])
    except (ValueError, KeyError, ConfigError, OSError) as e:
        raise DataError(f"{path / CONFIG_NAME}: not a valid speechkeep model config ({e})") from None
    llm_format = meta["llm_format"]
    llm_spec = str(path / "llm") if llm_format == "full" else config.llm
    from speechkeep.models.weight_storage import load_adaptor_state

    adaptor_state = load_adaptor_state(path / ADAPTOR_NAME)  # fp32/fp16 as saved, or a shipped int8 file decoded
    loaded = load_llm(llm_spec, dtype=dtype, device=device)
    llm = loaded.model
    if llm_format == "peft":
        from peft import PeftModel

        try:
            llm = PeftModel.from_pretrained(llm, str(path / "llm_adapter"))
        except Exception as e:  # peft raises ValueError, OSError, SafetensorError, KeyError...
            raise DataError(f"{path / 'llm_adapter'}: cannot load the LoRA adapter: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from None
    elif llm_format == "transformed":
        llm = _load_transformed(llm, path, meta)
    llm.to(device)
    llm.eval()
    encoder = load_speech_encoder(config.speech_encoder, device=device)
    model = SpeechLLM.from_parts(llm, loaded.tokenizer, encoder, config, seed=None)
    model.transforms = list(meta.get("transforms") or [])
    model.llm_weights_changed = llm_format == "full" or meta.get("llm_weights") == "all"
    try:
        model.adaptor.load_state_dict(adaptor_state)
    except RuntimeError as e:
        raise DataError(f"{path / ADAPTOR_NAME}: the adaptor weights do not fit the model's config "
                        f"({_first_line(e)})") from None
    model.adaptor.to(device=model.device, dtype=dtype)
    return model


def read_safetensors(path: Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a missing, truncated or corrupt file is a DataError naming it."""
    from safetensors.torch import load_file

    from speechkeep.errors import DataError

    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError, OSError, ValueError on a truncated or foreign file
        raise DataError(f"{path}: cannot read {what} (truncated or not a safetensors file: {e})") from None


def check_model_spec(spec: str, flag: str = "--model") -> None:
    """Fail fast (before any output is created or model loaded) if ``spec`` cannot name a model for
    :func:`load_speech_llm`; raises ModelSpecError / UsageError naming ``flag``."""
    from speechkeep.errors import ModelSpecError
    from speechkeep.models.bundled import front_end_dir, is_front_end_spec
    from speechkeep.models.llm import resolve_llm_dir

    if not spec or not str(spec).strip():
        raise ModelSpecError(f"{flag}: no model given")
    if is_front_end_spec(spec):
        front_end_dir(spec)
        return
    p = Path(spec)
    if p.is_dir() and ((p / CONFIG_NAME).exists() or (p / "model" / CONFIG_NAME).exists()):
        return
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return
    if p.is_dir() and (p / "train_config.json").exists():
        raise ModelSpecError(f"{flag} {spec}: this training run has no saved model yet (no model/{CONFIG_NAME}); "
                             "finish or resume it first")
    try:
        resolve_llm_dir(spec)
    except ModelSpecError as e:
        raise ModelSpecError(f"{flag}: {e}") from None


def load_speech_llm(spec: str, device: str | torch.device = "cpu") -> tuple[SpeechLLM, bool]:
    """Load from any of: a shipped aligned front-end (``bundled:smollm2-135m+whisper-tiny.en``), a
    training run directory (its ``model/``), a saved SpeechLLM directory, a SpeechLLM config YAML, or
    a plain LLM spec. Returns (model, whether its speech adaptor is trained); the last two give a fresh,
    untrained adaptor. The same as :func:`speechkeep.models.builder.build_speech_llm` with ``init_from=spec``."""
    from speechkeep.models.builder import build_speech_llm

    return build_speech_llm(init_from=spec, device=device)
