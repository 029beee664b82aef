"""Load times of the bundled models and the CTranslate2 -> transformers Whisper parity.

    python benchmarks/bench_models.py            # warm caches (what every run after the first sees)
    python benchmarks/bench_models.py --cold     # also time the one-time conversions in a fresh cache
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cold", action="store_true", help="time the one-time conversions in an empty cache")
    args = ap.parse_args()
    if args.cold:
        os.environ["SPEECHKEEP_CACHE"] = tempfile.mkdtemp(prefix="speechkeep-cold-")
    torch.set_num_threads(2)
    from speechkeep.data.tts import Synthesizer
    from speechkeep.models.llm import load_llm
    from speechkeep.models.speech_encoder import load_speech_encoder

    for spec in ("bundled:smollm2-135m", "bundled:gemma3-270m"):
        _, t1 = timed(lambda: load_llm(spec))
        _, t2 = timed(lambda: load_llm(spec))
        print(f"{spec:24s} first load {t1:6.1f} s   next load {t2:5.2f} s")
    enc, t1 = timed(lambda: load_speech_encoder("bundled:whisper-tiny.en"))
    _, t2 = timed(lambda: load_speech_encoder("bundled:whisper-tiny.en"))
    print(f"{'bundled:whisper-tiny.en':24s} first load {t1:6.1f} s   next load {t2:5.2f} s")

    import ctranslate2

    from speechkeep.models.bundled import whisper_ct2_dir

    audio = Synthesizer(deterministic=True).synthesize("What is the capital of France?", "piper-joe")
    feats, _ = enc.log_mel([audio], "padded")
    with torch.no_grad():
        ours = enc.forward_features(feats)
    ct2 = ctranslate2.models.Whisper(str(whisper_ct2_dir()), device="cpu", compute_type="float32")
    ref = torch.from_numpy(np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats.numpy())))))
    print(f"Whisper encoder parity vs ctranslate2: relative error {((ours - ref).norm() / ref.norm()).item():.2e}")
    for mode in ("padded", "variable"):
        enc.encode([audio], mode)
        _, t = timed(lambda: [enc.encode([audio], mode) for _ in range(5)])
        print(f"encode one {len(audio) / 16000:.1f}-s utterance, {mode:8s}: {t / 5 * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
