"""Data-pipeline throughput on the bundled models (CPU).

Prints, on the first N WebQuestions devtest questions (default 30):

- TTS utterances/s per engine (one process, after the voice is loaded), with the real-time factor,
  and the 2-process pool of ``synthesize_many`` over a mix of voices (pool start-up included);
- teacher-response tokens/s (``generate_responses``: batched, left-padded greedy generation);
- encoder features/s, padded (30-s window, batches of 8) vs variable-length (real frames only,
  batches of 16), and how much the two modes' features differ (mean relative L2 difference and
  mean per-frame cosine similarity), plus the check that variable-mode features do not depend on
  the batch they were computed in.

    python benchmarks/bench_data.py [--n 30] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_QUESTIONS = "webquestions:devtest"


def bench_tts(texts: list[str]) -> dict:
    from speechkeep.data.tts import VOICES, Synthesizer, synthesize_many

    out: dict = {}
    audio: dict[str, list] = {}
    for engine, voice in (("piper", "piper-joe"), ("espeak", "espeak-us-m3")):
        synth = Synthesizer(num_threads=1)
        synth.synthesize("warm up", voice)  # loads the engine
        t = time.perf_counter()
        audio[engine] = [synth.synthesize(x, voice) for x in texts]
        dt = time.perf_counter() - t
        seconds = sum(len(a) for a in audio[engine]) / 16000
        out[engine] = {"voice": voice, "utt_per_s": len(texts) / dt, "realtime_factor": seconds / dt,
                       "audio_s": seconds}
    voices = list(VOICES)
    items = [(f"b{i}", x, voices[i % len(voices)]) for i, x in enumerate(texts)]
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        synthesize_many(items, d, workers=2, progress=False)
        dt = time.perf_counter() - t
    out["pool_2_workers_mixed_voices"] = {"utt_per_s": len(texts) / dt}
    return out, audio


def bench_teacher(llm_spec: str, texts: list[str], max_new_tokens: int, batch_sizes: list[int]) -> dict:
    from speechkeep.data.teacher import generate_responses
    from speechkeep.models.llm import load_llm

    t = time.perf_counter()
    llm = load_llm(llm_spec)
    out: dict = {"load_s": time.perf_counter() - t}
    generate_responses(llm_spec, texts[:2], max_new_tokens=4, llm=llm, progress=False)  # warm-up
    for bs in batch_sizes:
        st: dict = {}
        generate_responses(llm_spec, texts, max_new_tokens=max_new_tokens, batch_size=bs, llm=llm,
                           progress=False, stats=st)
        out[f"batch_{bs}"] = {"tokens_per_s": st["new_tokens"] / st["seconds"], "new_tokens": st["new_tokens"],
                              "seconds": st["seconds"], "questions_per_s": len(texts) / st["seconds"]}
    return out


def bench_encoder(spec: str, audios: list) -> dict:
    import torch

    from speechkeep.data.features import BATCH_SIZES
    from speechkeep.models.speech_encoder import load_speech_encoder

    enc = load_speech_encoder(spec)
    order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
    feats: dict[str, list] = {}
    out: dict = {}
    for mode in ("padded", "variable"):
        bs = BATCH_SIZES[mode]
        enc.encode(audios[:2], mode=mode)  # warm-up
        res: list = [None] * len(audios)
        t = time.perf_counter()
        for b in range(0, len(order), bs):
            idx = order[b: b + bs]
            for i, f in zip(idx, enc.encode([audios[i] for i in idx], mode=mode)):
                res[i] = f
        dt = time.perf_counter() - t
        frames = sum(f.shape[0] for f in res)
        feats[mode] = res
        out[mode] = {"batch_size": bs, "utt_per_s": len(audios) / dt, "frames_per_s": frames / dt, "seconds": dt}
    out["variable_speedup"] = out["variable"]["utt_per_s"] / out["padded"]["utt_per_s"]
    rel, cos = [], []
    for p, v in zip(feats["padded"], feats["variable"]):
        rel.append(float((v - p).norm() / p.norm()))
        cos.append(float(torch.nn.functional.cosine_similarity(v, p, dim=-1).mean()))
    out["padded_vs_variable"] = {
        "mean_relative_l2_diff": sum(rel) / len(rel), "max_relative_l2_diff": max(rel),
        "mean_cosine": sum(cos) / len(cos), "min_cosine": min(cos),
    }
    # Batch invariance of variable mode: the 4 shortest items alone vs in their batch of 16.
    single = [enc.encode([audios[i]], mode="variable")[0] for i in order[:4]]
    out["variable_batch_invariance_max_abs_diff"] = max(
        float((s - feats["variable"][i]).abs().max()) for s, i in zip(single, order[:4]))
    raw = enc.encode([audios[i] for i in order[:16]], mode="variable")[:4]
    out["variable_encoder_encode_batch_rel_diff"] = max(
        float((r - s).norm() / s.norm()) for r, s in zip(raw, single))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", default=str(DEFAULT_QUESTIONS), help="WebQuestions-style JSON or JSONL")
    ap.add_argument("--n", type=int, default=30, help="number of questions")
    ap.add_argument("--llm", default="bundled:smollm2-135m", help="teacher LLM spec")
    ap.add_argument("--encoder", default="bundled:whisper-tiny.en", help="speech encoder spec")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="teacher response length")
    ap.add_argument("--teacher-batch-sizes", default="16", help="comma-separated, e.g. 1,16")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: tts,teacher,encoder")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    import torch

    from speechkeep.data.questions import read_questions

    texts = [q.text for q in read_questions(args.questions).items[: args.n]]
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {"n_questions": len(texts), "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    audio = None
    if "tts" not in skip or "encoder" not in skip:
        results["tts"], audio = bench_tts(texts)
        for k, v in results["tts"].items():
            extra = f", {v['realtime_factor']:.1f}x real time" if "realtime_factor" in v else ""
            print(f"TTS {k:28s} {v['utt_per_s']:7.2f} utt/s{extra}", flush=True)
    if "teacher" not in skip:
        bss = [int(b) for b in args.teacher_batch_sizes.split(",")]
        results["teacher"] = bench_teacher(args.llm, texts, args.max_new_tokens, bss)
        for k, v in results["teacher"].items():
            if k.startswith("batch_"):
                print(f"teacher {k:24s} {v['tokens_per_s']:7.1f} tokens/s ({v['new_tokens']} tokens in "
                      f"{v['seconds']:.1f} s, {v['questions_per_s']:.2f} questions/s)", flush=True)
    if "encoder" not in skip:
        enc_audio = audio["piper"] + audio["espeak"]
        results["encoder"] = r = bench_encoder(args.encoder, enc_audio)
        for mode in ("padded", "variable"):
            print(f"encoder {mode:24s} {r[mode]['utt_per_s']:7.2f} utt/s ({r[mode]['frames_per_s']:.0f} frames/s, "
                  f"batch {r[mode]['batch_size']})")
        d = r["padded_vs_variable"]
        print(f"encoder variable/padded speed-up   {r['variable_speedup']:.2f}x")
        print(f"padded vs variable features: mean relative L2 diff {d['mean_relative_l2_diff']:.3f} "
              f"(max {d['max_relative_l2_diff']:.3f}), mean cosine {d['mean_cosine']:.3f} (min {d['min_cosine']:.3f})")
        print(f"variable mode (feature cache), batch of 1 vs batch of 16: max abs diff "
              f"{r['variable_batch_invariance_max_abs_diff']:.2e}; plain encoder.encode: max relative diff "
              f"{r['variable_encoder_encode_batch_rel_diff']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
