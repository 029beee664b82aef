"""Shared fixtures: tiny random models built in-process (fast unit tests) and the real bundled
models (loaded once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smol_tokenizer():
    """SmolLM2's real tokenizer and chat template (cheap: no weights are de-quantized)."""
    from speechkeep.models.llm import gguf_cache_dir, ensure_chat_template
    from speechkeep.models.bundled import smollm2_gguf
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    cached = gguf_cache_dir(gguf)
    if (cached / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(str(cached))
    else:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ensure_chat_template(tok)
    return tok


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory, smol_tokenizer):
    """A tiny random Llama (2 layers, width 32) with SmolLM2's tokenizer, saved as a HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=smol_tokenizer.bos_token_id, eos_token_id=smol_tokenizer.eos_token_id,
        pad_token_id=smol_tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny_llm")
    model.save_pretrained(out)
    smol_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory):
    """A tiny random Whisper (1+1 layers, width 16) with the standard 80-mel feature extractor."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=1500, max_target_positions=32, decoder_start_token_id=1, pad_token_id=0,
        bos_token_id=0, eos_token_id=0,
    )
    out = tmp_path_factory.mktemp("tiny_whisper")
    WhisperForConditionalGeneration(cfg).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_speech_llm_factory(tiny_llm_dir, tiny_whisper_dir):
    """Build fresh tiny SpeechLLMs (each call reloads, so tests can mutate them)."""
    from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig

    def make(**kw) -> SpeechLLM:
        cfg = SpeechLLMConfig(llm=str(tiny_llm_dir), speech_encoder=str(tiny_whisper_dir), **kw)
        return SpeechLLM.build(cfg)

    return make


@pytest.fixture
def tone():
    """A 1.3-s 16-kHz test signal (chirp + noise) standing in for audio in tiny-model tests."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.3 * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


# ---------------------------------------------------------------- real bundled models
@pytest.fixture(scope="session")
def smollm2():
    from speechkeep.models.llm import load_llm

    return load_llm("bundled:smollm2-135m")


@pytest.fixture(scope="session")
def whisper_encoder():
    from speechkeep.models.speech_encoder import load_speech_encoder

    return load_speech_encoder("bundled:whisper-tiny.en")


@pytest.fixture(scope="session")
def real_speech_llm(smollm2, whisper_encoder):
    from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig

    return SpeechLLM.from_parts(smollm2.model, smollm2.tokenizer, whisper_encoder, SpeechLLMConfig())


@pytest.fixture(scope="session")
def piper_question():
    """A real spoken question from the bundled piper voice (16 kHz), deterministic synthesis."""
    from speechkeep.data.tts import Synthesizer

    text = "What is the capital of France?"
    return text, Synthesizer(deterministic=True).synthesize(text, "piper-joe")
