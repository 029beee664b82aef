"""The one place a :class:`~speechkeep.models.speech_llm.SpeechLLM` is made, fresh or loaded.

Every command and library path that needs a SpeechLLM (``train`` and its ``init_from``, ``eval``,
``ask``, ``build``, ``importance``, the alignment stage through the training engine) calls
:func:`build_speech_llm`; :meth:`SpeechLLM.build <speechkeep.models.speech_llm.SpeechLLM.build>`,
:meth:`~speechkeep.models.speech_llm.SpeechLLM.from_parts` and :func:`speechkeep.models.persistence.load`
are its primitives (``tests/test_builder.py`` checks that nothing else calls them).
"""

from __future__ import annotations

from pathlib import Path

import torch

from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig


def build_speech_llm(config: SpeechLLMConfig | None = None, *, init_from: str | None = None, seed: int | None = 0,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> tuple[SpeechLLM, bool]:
    """A SpeechLLM and whether its speech adaptor is trained.

    ``init_from=None``: built from ``config`` (the LLM and the encoder loaded from their specs, a new
    adaptor initialized with ``seed``). Otherwise ``init_from`` is loaded: a shipped aligned front-end
    (``bundled:smollm2-135m+whisper-tiny.en``), a training run directory (its ``model/``) or a saved
    SpeechLLM directory (trained adaptor); a SpeechLLM config YAML or a plain LLM spec (a new adaptor)."""
    from speechkeep.models.persistence import CONFIG_NAME, load

    if init_from is None:
        return SpeechLLM.build(config or SpeechLLMConfig(), device=device, dtype=dtype, seed=seed), False
    from speechkeep.models.bundled import front_end_dir, is_front_end_spec

    spec = str(init_from)
    if is_front_end_spec(spec):
        return load(front_end_dir(spec), device=device, dtype=dtype), True
    p = Path(spec)
    for cand in (p, p / "model"):
        if cand.is_dir() and (cand / CONFIG_NAME).exists():
            return load(cand, device=device, dtype=dtype), True
    if p.suffix in (".yaml", ".yml") and p.is_file():
        from speechkeep.config import load_config

        return SpeechLLM.build(load_config(SpeechLLMConfig, p), device=device, dtype=dtype, seed=seed), False
    return SpeechLLM.build(SpeechLLMConfig(llm=spec), device=device, dtype=dtype, seed=seed), False
