"""Write the bad-input corpus into a directory: the hand-written text items of ``files/`` plus the
binary ones generated here (audio of every kind, non-UTF-8 text) and the manifests and question
files that point at each audio item.

    python tests/badinputs/make_corpus.py /tmp/corpus     # to look at it, or to try a command by hand

``tests/test_bad_inputs.py`` builds it in a temporary directory and walks every item through every
command that can receive it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SR = 16000

# name -> (file name, supported?) : supported formats must work, the others must be one-line data errors
AUDIO = {
    "silence": ("silence.wav", True),          # all zeros
    "clipped": ("clipped.wav", True),          # float WAV beyond [-1, 1]
    "pcm8": ("pcm8.wav", True),                # 8-bit unsigned
    "pcm24": ("pcm24.wav", True),              # 24-bit
    "rate48k": ("rate48k.wav", True),          # 48 kHz
    "stereo": ("stereo.wav", True),            # 2 channels
    "flac": ("speech.flac", True),
    "mp3": ("speech.mp3", True),
    "corrupt": ("corrupt.wav", False),         # a RIFF header, then garbage
    "header_only": ("header_only.wav", False),  # cut inside the header
    "truncated": ("truncated.wav", False),     # the body cut in half: the header promises more
    "zero_length": ("zero_length.wav", False),
    "nan": ("nan.wav", False),                 # float WAV with NaN samples
    "inf": ("inf.wav", False),                 # float WAV with infinite samples
    "too_long": ("too_long.wav", False),       # 31 s: more than Whisper's 30-s window
    "not_audio": ("not_audio.wav", False),     # a text file named .wav
    "missing": ("does_not_exist.wav", False),  # no such file
}

NON_UTF8_LINE = b'{"id": "g2", "text": "caf\xe9 au lait?", "answers": ["coffee"], "audio": "../audio/ok.wav"}\n'


def tone(seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * (220 + 200 * t) * t)).astype(np.float32)


def write_audio(d: Path) -> None:
    import soundfile as sf

    d.mkdir(parents=True, exist_ok=True)
    x = tone()
    sf.write(d / "ok.wav", x, SR, subtype="PCM_16")
    sf.write(d / "silence.wav", np.zeros_like(x), SR, subtype="PCM_16")
    sf.write(d / "clipped.wav", np.clip(4 * x, -1.5, 1.5), SR, subtype="FLOAT")
    sf.write(d / "pcm8.wav", x, SR, subtype="PCM_U8")
    sf.write(d / "pcm24.wav", x, SR, subtype="PCM_24")
    sf.write(d / "rate48k.wav", tone(sr=48000), 48000, subtype="PCM_16")
    sf.write(d / "stereo.wav", np.stack([x, 0.5 * x], axis=1), SR, subtype="PCM_16")
    sf.write(d / "speech.flac", x, SR)
    sf.write(d / "speech.mp3", x, SR)
    full = (d / "ok.wav").read_bytes()
    (d / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(64)))
    (d / "header_only.wav").write_bytes(full[:30])
    (d / "truncated.wav").write_bytes(full[: len(full) // 2])
    sf.write(d / "zero_length.wav", np.zeros(0, dtype=np.float32), SR)
    bad = x.copy()
    bad[100:110] = np.nan
    sf.write(d / "nan.wav", bad, SR, subtype="FLOAT")
    bad = x.copy()
    bad[5] = np.inf
    sf.write(d / "inf.wav", bad, SR, subtype="FLOAT")
    sf.write(d / "too_long.wav", np.tile(x, 31), SR, subtype="PCM_16")
    (d / "not_audio.wav").write_text("this is not audio\n")


def manifest_row(i: int, audio: str) -> dict:
    text, answers = [("what is the capital of france?", ["Paris"]), ("who wrote hamlet?", ["William Shakespeare"])][i % 2]
    return {"id": f"m{i}", "text": text, "audio": audio, "sample_rate": SR, "duration": 1.0, "voice": "v",
            "answers": answers, "response": "an answer.", "split": "train"}


def write_corpus(root: str | Path) -> Path:
    """Write the whole corpus under ``root``; return it."""
    root = Path(root)
    shutil.copytree(HERE / "files", root, dirs_exist_ok=True)
    write_audio(root / "audio")
    # every audio item inside a manifest (after a good row) and a question file (after a good line)
    for name, (fname, _) in AUDIO.items():
        m = root / "manifests" / f"audio-{name}"
        m.mkdir(parents=True, exist_ok=True)
        rows = [manifest_row(0, "../../audio/ok.wav"), manifest_row(1, f"../../audio/{fname}")]
        (m / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        q = [{"id": "g1", "text": "what is the capital of france?", "answers": ["Paris"], "audio": "../audio/ok.wav"},
             {"id": "g2", "text": "who wrote hamlet?", "answers": ["William Shakespeare"], "audio": f"../audio/{fname}"}]
        (root / "questions" / f"audio-{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in q))
    # non-UTF-8 text: a question file, a manifest and a config
    good_q = (root / "questions" / "good.jsonl").read_bytes().splitlines(keepends=True)[0]
    (root / "questions" / "nonutf8.jsonl").write_bytes(good_q + NON_UTF8_LINE)
    good_m = (root / "manifests" / "good" / "manifest.jsonl").read_bytes().splitlines(keepends=True)[0]
    (root / "manifests" / "nonutf8").mkdir(parents=True, exist_ok=True)
    (root / "manifests" / "nonutf8" / "manifest.jsonl").write_bytes(
        good_m + good_m.replace(b'"m0"', b'"m1"').replace(b"france", b"fran\xe7e"))
    (root / "configs" / "nonutf8.yaml").write_bytes(b"max_steps: 3\n# caf\xe9\n")
    # WebQuestions directories whose trainmodel.json is a bad question file (demo, align)
    for q in sorted((root / "questions").iterdir()):
        d = root / "wq_bad" / q.stem
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(q, d / "trainmodel.json")
        shutil.copy(root / "wq" / "devtest.json", d / "devtest.json")
        shutil.copy(root / "wq" / "val.json", d / "val.json")
    (root / "emptydir").mkdir(exist_ok=True)
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/badinputs/make_corpus.py DIR")
    print(write_corpus(sys.argv[1]))
