"""TTS throughput per engine: utterances/s and real-time factor on WebQuestions questions.

Run from the repository root::

    python -m benchmarks.bench_tts [--n 20] [--data webquestions:devtest]

For each engine (piper, espeak) the first ``--n`` questions are spoken, each with a voice of that
engine picked by :func:`~speechkeep.data.tts.assign_voice`, in two set-ups:

* ``1 process``: :class:`~speechkeep.data.tts.Synthesizer` in this process, engine already loaded
  (its load time is printed separately), onnxruntime on its default threads.
* ``2 workers``: :func:`~speechkeep.data.tts.synthesize_many` with ``workers=2``, end to end, as a
  data build runs it: spawning the two processes, loading the engine in each, writing the WAVs.
  Its fixed start-up cost is measured on its own (one short utterance per worker) and printed.

RTF (real-time factor) = processing seconds / seconds of audio produced; lower is faster.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from speechkeep.data.tts import VOICES, Synthesizer, assign_voice, synthesize_many

DEFAULT_DATA = "webquestions:devtest"
TARGET_SR = 16000


def load_questions(path: str, n: int) -> list[tuple[str, str]]:
    """The first ``n`` (id, text) pairs of a question file (or webquestions:SPLIT)."""
    from speechkeep.data.questions import read_questions

    return [(q.id, q.text) for q in read_questions(path).items[:n]]


def bench_single_process(questions: list[tuple[str, str]], voices: list[str]) -> dict[str, float]:
    """Warm in-process synthesis: returns load seconds, utterances/s and RTF."""
    synth = Synthesizer()
    start = time.perf_counter()
    synth.synthesize("Warm up.", voices[0])
    load_seconds = time.perf_counter() - start
    audio_seconds = 0.0
    start = time.perf_counter()
    for item_id, text in questions:
        audio_seconds += len(synth.synthesize(text, assign_voice(item_id, voices))) / TARGET_SR
    elapsed = time.perf_counter() - start
    return {"load_s": load_seconds, "utt_per_s": len(questions) / elapsed, "rtf": elapsed / audio_seconds}


def bench_two_workers(questions: list[tuple[str, str]], voices: list[str]) -> dict[str, float]:
    """End-to-end ``synthesize_many(workers=2)``: returns start-up seconds, utterances/s and RTF."""
    with tempfile.TemporaryDirectory(prefix="bench-tts-") as tmp:
        start = time.perf_counter()
        synthesize_many([("s0", "Hi.", voices[0]), ("s1", "Hi.", voices[0])], Path(tmp) / "startup",
                        workers=2, progress=False)
        startup_seconds = time.perf_counter() - start
        items = [(item_id, text, assign_voice(item_id, voices)) for item_id, text in questions]
        start = time.perf_counter()
        results = synthesize_many(items, Path(tmp) / "run", workers=2, progress=False)
        elapsed = time.perf_counter() - start
    audio_seconds = sum(seconds for _, seconds in results)
    return {"startup_s": startup_seconds, "utt_per_s": len(questions) / elapsed, "rtf": elapsed / audio_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="questions: WebQuestions-style JSON, JSONL, or webquestions:SPLIT")
    parser.add_argument("--n", type=int, default=20, help="number of questions per engine")
    args = parser.parse_args()

    questions = load_questions(args.data, args.n)
    print(f"{len(questions)} questions from {args.data}")
    print(f"{'engine':8} {'setup':10} {'utt/s':>7} {'RTF':>7}  notes")
    for engine in ("piper", "espeak"):
        voices = [name for name, voice in VOICES.items() if voice.engine == engine]
        single = bench_single_process(questions, voices)
        print(f"{engine:8} {'1 process':10} {single['utt_per_s']:7.2f} {single['rtf']:7.4f}  "
              f"warm; engine load {single['load_s']:.2f} s")
        pooled = bench_two_workers(questions, voices)
        print(f"{engine:8} {'2 workers':10} {pooled['utt_per_s']:7.2f} {pooled['rtf']:7.4f}  "
              f"end to end, including a pool start-up of {pooled['startup_s']:.2f} s")


if __name__ == "__main__":
    main()
