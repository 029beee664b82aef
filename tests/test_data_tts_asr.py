"""Real TTS on a few sentences, and Whisper tiny.en (the project's own loader) understands piper."""

from __future__ import annotations

import numpy as np
import pytest

from speechkeep.data.tts import VOICES, Synthesizer

pytestmark = pytest.mark.real
SENTENCES = [
    "What is the name of Justin Bieber's brother?",
    "Where should I fly into when visiting Bali?",
    "Who was the first president of the United States?",
]


@pytest.fixture(scope="module")
def piper_audio():
    synth = Synthesizer(deterministic=True)
    return [synth.synthesize(s, "piper-joe") for s in SENTENCES]


def test_real_tts_each_engine(piper_audio):
    synth = Synthesizer()
    espeak = [synth.synthesize(s, "espeak-us-f2") for s in SENTENCES[:2]]
    for audio, text in zip(piper_audio + espeak, SENTENCES + SENTENCES[:2]):
        assert audio.dtype == np.float32 and audio.ndim == 1
        seconds = len(audio) / 16000
        words = len(text.split())
        assert 0.15 * words < seconds < 0.8 * words + 1.0, (text, seconds)
        assert 0.01 < float(np.sqrt(np.mean(audio ** 2))) < 0.9  # not silence, not clipped noise
    assert {v.engine for v in VOICES.values()} == {"piper", "espeak"}


def test_whisper_transcribes_piper_with_low_wer(piper_audio):
    import jiwer
    import torch
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    from speechkeep.models.speech_encoder import load_whisper_asr

    model, processor = load_whisper_asr("bundled:whisper-tiny.en")
    feats = processor(piper_audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(feats.input_features, max_new_tokens=40)
    hyps = processor.batch_decode(out, skip_special_tokens=True)
    normalize = EnglishTextNormalizer({})  # Whisper's English normalizer (no spelling map offline)
    wer = jiwer.wer([normalize(s) for s in SENTENCES], [normalize(h) for h in hyps])
    assert wer < 0.3, list(zip(SENTENCES, hyps))
