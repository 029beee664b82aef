"""Encoder-feature cache: misses computed once, hits read back, keys follow encoder/mode/content."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechkeep.audio import save_wav
from speechkeep.data.features import FeatureCache
from speechkeep.errors import DataError

pytestmark = pytest.mark.real
ENCODER = "bundled:whisper-tiny.en"
SENTENCES = ["Where is the nearest train station?", "What time is it?", "Who wrote the book about whales?"]


@pytest.fixture(scope="module")
def encoder(whisper_encoder):
    return whisper_encoder  # the session-wide load (tests/conftest.py)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    from speechkeep.data.tts import Synthesizer

    d = tmp_path_factory.mktemp("wavs")
    synth = Synthesizer()
    paths = []
    for i, s in enumerate(SENTENCES):
        paths.append(d / f"u{i}.wav")
        save_wav(paths[-1], synth.synthesize(s, "espeak-us-f2"))
    return paths


def test_miss_then_hit(tmp_path, encoder, wavs):
    cache = FeatureCache(tmp_path / "feats", encoder, mode="padded", progress=False)
    first = cache.get(wavs)
    assert (cache.stats.hits, cache.stats.misses) == (0, 3)
    files = sorted((tmp_path / "feats").rglob("*.safetensors"))
    assert len(files) == 3 and all(f.parent.name == f.name[:2] for f in files)  # sharded by key prefix

    # Same values as running the encoder directly (up to fp16 storage).
    from speechkeep.audio import load_audio

    direct = encoder.encode([load_audio(wavs[1])], mode="padded")[0]
    assert first[1].shape == direct.shape and first[1].dtype == torch.float32
    assert torch.allclose(first[1], direct, atol=2e-2, rtol=1e-2)

    # A new cache given only the spec: every item is a hit and the encoder is never loaded.
    again = FeatureCache(tmp_path / "feats", ENCODER, mode="padded", progress=False)
    second = again.get(wavs)
    assert (again.stats.hits, again.stats.misses) == (3, 0)
    assert again._encoder is None
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert again.ensure(wavs) == 0


def test_key_follows_mode_and_content(tmp_path, encoder, wavs):
    padded = FeatureCache(tmp_path, encoder, mode="padded", progress=False)
    variable = FeatureCache(tmp_path, encoder, mode="variable", progress=False)
    assert padded.path_for(wavs[0]) != variable.path_for(wavs[0])
    out_v = variable.get(wavs[:2])
    assert variable.stats.misses == 2
    out_p = padded.get(wavs[:2])
    assert padded.stats.misses == 2
    for v, p in zip(out_v, out_p):  # same number of frames; close but not identical features
        assert v.shape == p.shape
        cos = torch.nn.functional.cosine_similarity(v, p, dim=-1).mean()
        assert cos > 0.5

    # Same content under another name: a hit. Changed content: a miss.
    copy = tmp_path / "copy.wav"
    copy.write_bytes(wavs[0].read_bytes())
    variable.get([copy])
    assert variable.stats.hits == 1
    changed = tmp_path / "changed.wav"
    from speechkeep.audio import load_audio

    save_wav(changed, load_audio(wavs[0]) * 0.5)
    variable.get([changed])
    assert variable.stats.misses == 3


def test_variable_features_do_not_depend_on_the_batch(tmp_path, encoder, wavs):
    from speechkeep.audio import load_audio

    cache = FeatureCache(tmp_path, encoder, mode="variable", progress=False)
    batched = cache.get(wavs)  # one batch of three different lengths
    for path, feats in zip(wavs, batched):
        alone = encoder.encode([load_audio(path)], mode="variable")[0]
        assert feats.shape == alone.shape
        assert torch.allclose(feats, alone, rtol=2e-3, atol=5e-3)


def test_corrupt_cache_file_is_recomputed(tmp_path, encoder, wavs):
    cache = FeatureCache(tmp_path, encoder, mode="variable", progress=False)
    good = cache.get(wavs[:1])[0]
    cache.path_for(wavs[0]).write_bytes(b"torn")
    again = FeatureCache(tmp_path, encoder, mode="variable", progress=False)
    assert torch.equal(again.get(wavs[:1])[0], good)
    assert again.stats.misses == 1


def test_bad_audio_is_a_clear_error(tmp_path, encoder):
    cache = FeatureCache(tmp_path / "f", encoder, progress=False)
    long = tmp_path / "long.wav"
    save_wav(long, np.zeros(16000 * 31, dtype=np.float32))
    with pytest.raises(DataError, match=r"long\.wav is 31\.00 s long"):
        cache.get([long])
    with pytest.raises(DataError, match="not found"):
        cache.get([tmp_path / "missing.wav"])
    with pytest.raises(DataError, match="encode mode"):
        FeatureCache(tmp_path, encoder, mode="fast")
