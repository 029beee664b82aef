"""speechkeep.audio: loading (mono, 16 kHz), clear errors for bad files, duration limit, atomic WAV writes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speechkeep.audio import MAX_SECONDS, TARGET_SR, check_duration, load_audio, save_wav, to_mono_16k
from speechkeep.errors import DataError


def _tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_file_is_averaged_to_mono(tmp_path):
    left = _tone(0.5, TARGET_SR)
    right = np.full_like(left, 0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), TARGET_SR, subtype="FLOAT")

    audio = load_audio(path)

    assert audio.dtype == np.float32 and audio.ndim == 1
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("sr", [44100, 22050, 8000])
def test_any_rate_is_resampled_to_16k(tmp_path, sr):
    path = tmp_path / f"tone_{sr}.flac"
    sf.write(path, _tone(1.0, sr), sr)

    audio = load_audio(path)

    assert abs(len(audio) - TARGET_SR) <= 1
    # The tone survives resampling: its energy is still that of a 0.5-amplitude sine.
    assert np.sqrt(np.mean(audio[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_to_mono_16k_handles_arrays():
    stereo = np.stack([_tone(1.0, 44100), np.zeros(44100, np.float32)], axis=1)
    assert to_mono_16k(stereo, 44100).shape == (TARGET_SR,)

    mono = _tone(0.25, TARGET_SR)
    np.testing.assert_array_equal(to_mono_16k(mono, TARGET_SR), mono)

    pcm = np.array([0, 16384, -32768], dtype=np.int16)
    np.testing.assert_allclose(to_mono_16k(pcm, TARGET_SR), [0.0, 0.5, -1.0])


@pytest.mark.parametrize(
    "samples, sr",
    [(np.zeros(0, np.float32), TARGET_SR), (np.zeros((2, 2, 2), np.float32), TARGET_SR), (np.ones(10), 0)],
)
def test_to_mono_16k_rejects_bad_arrays(samples, sr):
    with pytest.raises(DataError):
        to_mono_16k(samples, sr)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match="nowhere.wav"):
        load_audio(tmp_path / "nowhere.wav")


@pytest.mark.parametrize("content", [b"", b"RIFF\x10\x00\x00\x00WAVEjunk" * 4, b"not audio at all"])
def test_corrupt_file_names_the_file(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(DataError, match="broken.wav") as err:
        load_audio(path)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no library traceback


def test_zero_length_file_names_the_file(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, np.float32), TARGET_SR)
    with pytest.raises(DataError, match=r"silent\.wav.*zero length"):
        load_audio(path)


def test_check_duration_rejects_long_audio_by_name():
    sr = 8000
    check_duration(np.zeros(int(MAX_SECONDS * sr), np.float32), sr, "exact.wav")  # 30 s is allowed
    with pytest.raises(DataError, match=r"long\.wav.*30\.50 s"):
        check_duration(np.zeros(int(30.5 * sr), np.float32), sr, "long.wav")
    with pytest.raises(DataError, match="clip-7"):
        check_duration(np.zeros(3 * sr, np.float32), sr, "clip-7", max_seconds=2.0)


def test_save_wav_round_trips_as_16bit_pcm(tmp_path):
    path = tmp_path / "sub" / "out.wav"
    audio = _tone(0.5, TARGET_SR)

    save_wav(path, audio)

    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (TARGET_SR, 1, "PCM_16")
    np.testing.assert_allclose(load_audio(path), audio, atol=1 / 32767)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temporary left behind


def test_save_wav_clips_and_overwrites(tmp_path):
    path = tmp_path / "out.wav"
    save_wav(path, np.zeros(100, np.float32))
    save_wav(path, np.array([2.0, -2.0, 0.5], np.float32))

    np.testing.assert_allclose(load_audio(path), [1.0, -1.0, 0.5], atol=1 / 32767)
