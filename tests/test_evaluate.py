"""`speechkeep eval` end to end on tiny models with real (espeak) speech: files, keys, retention."""

import json

import pytest

from speechkeep.data.manifest import ManifestRow, write_manifest
from speechkeep.evaluate.run import EvalConfig, compare_to_baseline, evaluate


@pytest.fixture(scope="module")
def spoken_set(tmp_path_factory):
    from speechkeep.audio import save_wav
    from speechkeep.data.tts import Synthesizer

    d = tmp_path_factory.mktemp("evalset")
    synth = Synthesizer(deterministic=True)
    qs = [("q1", "what is the capital of france", ["Paris"], "Paris is the capital."),
          ("q2", "who wrote hamlet", ["William Shakespeare"], "Shakespeare wrote Hamlet."),
          ("q3", "what color is the sky", ["blue"], "The sky is blue.")]
    rows = []
    for qid, text, ans, resp in qs:
        a = synth.synthesize(text, "espeak-us-m3")
        save_wav(d / f"{qid}.wav", a)
        rows.append(ManifestRow(qid, text, str(d / f"{qid}.wav"), 16000, len(a) / 16000, "espeak-us-m3", ans, resp, "eval"))
    write_manifest(d / "manifest.jsonl", rows)
    return d


def test_eval_writes_predictions_and_metrics(tiny_speech_llm_factory, spoken_set, tmp_path):
    model = tiny_speech_llm_factory()
    model.save_pretrained(tmp_path / "model")
    m = evaluate(EvalConfig(model=str(tmp_path / "model"), data=str(spoken_set / "manifest.jsonl"),
                            out=str(tmp_path / "eval"), tasks=["t2t", "s2t", "ppl", "asr"], max_new_tokens=4,
                            asr_max_new_tokens=4))
    assert m["n"] == 3 and m["max_new_tokens"] == 4 and "word boundaries" in m["matching_rule"]
    for task in ("t2t", "s2t"):
        assert set(m[task]) == {"accuracy", "correct", "n", "ci95"} and m[task]["n"] == 3
        lo, hi = m[task]["ci95"]
        assert 0 <= lo <= m[task]["accuracy"] <= hi <= 1
    assert m["ppl"]["text"] > 1 and m["ppl"]["speech"] > 1
    assert m["modality_gap"] == m["t2t"]["accuracy"] - m["s2t"]["accuracy"]
    preds = [json.loads(l) for l in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert {p["task"] for p in preds} == {"t2t", "s2t", "asr"}
    # the reported numbers are the predictions' own: WER recomputed from the hypotheses, accuracy from the flags
    from speechkeep.metrics import corpus_wer

    asr = [p for p in preds if p["task"] == "asr"]
    assert [p["reference"] for p in asr] == ["what is the capital of france", "who wrote hamlet", "what color is the sky"]
    assert m["asr"]["wer"] == pytest.approx(corpus_wer([p["reference"] for p in asr], [p["hypothesis"] for p in asr]))
    assert m["asr"]["n"] == 3
    for task in ("t2t", "s2t"):
        flags = [p["correct"] for p in preds if p["task"] == task]
        assert len(flags) == 3 and m[task]["correct"] == sum(flags) and m[task]["accuracy"] == sum(flags) / 3
    row = next(p for p in preds if p["task"] == "t2t")
    assert set(row) >= {"question", "response", "references", "correct"}
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 3


def test_plain_llm_spec_is_text_only(tiny_llm_dir, spoken_set, tmp_path):
    m = evaluate(EvalConfig(model=str(tiny_llm_dir), data=str(spoken_set), out=str(tmp_path / "e"),
                            tasks=["t2t", "s2t"], max_new_tokens=3))
    assert "t2t" in m and "s2t" not in m and "s2t" in m["skipped"]


def test_cascade_transcribes_with_the_whisper_it_is_given(tiny_speech_llm_factory, spoken_set, tmp_path):
    """The cascade's first stage is the real Whisper tiny.en named by cascade_whisper, not the model's own encoder
    (here a tiny random Whisper that could not transcribe at all)."""
    from speechkeep.metrics import corpus_wer

    tiny_speech_llm_factory().save_pretrained(tmp_path / "model")
    m = evaluate(EvalConfig(model=str(tmp_path / "model"), data=str(spoken_set), out=str(tmp_path / "e"),
                            tasks=["cascade"], max_new_tokens=3, cascade_whisper="bundled:whisper-tiny.en"))
    assert m["cascade"]["whisper"] == "bundled:whisper-tiny.en" and m["cascade"]["n"] == 3
    preds = [json.loads(l) for l in (tmp_path / "e" / "predictions.jsonl").read_text().splitlines()]
    transcripts = [p["transcript"] for p in preds if p["task"] == "cascade"]
    assert "hamlet" in transcripts[1].lower()
    wer = corpus_wer([p["question"] for p in preds], transcripts)
    assert m["cascade"]["asr_wer"] == pytest.approx(wer) and wer < 0.5


def test_retention_drop():
    cur = {"t2t": {"accuracy": 0.15}, "s2t": {"accuracy": 0.05}}
    base = {"model": "base", "t2t": {"accuracy": 0.20}}
    r = compare_to_baseline(cur, base)
    assert r["retention"]["t2t"] == pytest.approx(0.75) and r["drop"]["t2t"] == pytest.approx(0.05)
    assert "s2t" not in r["retention"]
