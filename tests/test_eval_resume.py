"""`speechkeep eval` resumes: an interrupted evaluation does not recompute finished batches, and its
final predictions and metrics equal an uninterrupted run's (speechkeep/evaluate/progress.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from speechkeep.evaluate.run import EvalConfig, evaluate
from speechkeep.models.adaptor import AdaptorConfig
from speechkeep.models.speech_llm import SpeechLLM


@pytest.fixture(scope="module")
def tone_set(tmp_path_factory):
    """5 spoken rows (tones of different lengths), with answers and responses."""
    d = tmp_path_factory.mktemp("tones")
    rows = []
    for i in range(5):
        t = np.arange(int(16000 * (0.5 + 0.2 * i))) / 16000
        sf.write(d / f"a{i}.wav", (0.3 * np.sin(2 * np.pi * (180 + 40 * i) * t)).astype(np.float32), 16000)
        rows.append({"id": f"q{i}", "text": f"what is question number {i}" + " really" * i, "audio": f"a{i}.wav",
                     "sample_rate": 16000, "duration": len(t) / 16000, "voice": "v", "answers": ["yes"],
                     "response": "an answer.", "split": "eval"})
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture(scope="module")
def saved_model(tiny_speech_llm_factory, tmp_path_factory):
    d = tmp_path_factory.mktemp("m") / "model"
    tiny_speech_llm_factory(adaptor=AdaptorConfig(hidden_size=16)).save_pretrained(d)
    return d


def _cfg(model, data, out, **kw):
    return EvalConfig(model=str(model), data=str(data), out=str(out), tasks=["t2t", "s2t", "ppl", "asr"],
                      max_new_tokens=3, asr_max_new_tokens=3, batch_size=2, **kw)


def _outputs(out):
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("seconds"), metrics.pop("seconds_per_task")
    return metrics, (out / "predictions.jsonl").read_text()


class Crash(Exception):
    pass


def test_interrupted_eval_resumes_without_recomputing_and_equals_an_uninterrupted_run(
        saved_model, tone_set, tmp_path, monkeypatch, capsys):
    ref = tmp_path / "ref"
    evaluate(_cfg(saved_model, tone_set, ref))
    expected = _outputs(ref)
    assert not (ref / "partial").exists()

    calls = {"n": 0}
    real_generate = SpeechLLM.generate

    def crashing(self, queries, **kw):  # the 4th generation batch fails, as a kill would stop it
        calls["n"] += 1
        if calls["n"] == 4:
            raise Crash("interrupted")
        return real_generate(self, queries, **kw)

    out = tmp_path / "eval"
    monkeypatch.setattr(SpeechLLM, "generate", crashing)
    with pytest.raises(Crash):
        evaluate(_cfg(saved_model, tone_set, out))
    assert (out / "partial").is_dir() and not (out / "metrics.json").exists()  # finished batches kept
    lines = [json.loads(l) for f in (out / "partial").rglob("*.jsonl") for l in f.read_text().splitlines()]
    assert len(lines) == 3  # t2t's 3 batches (5 items by 2)

    calls["n"], seen = 0, []

    def counting(self, queries, **kw):
        seen.append(len(queries))
        return real_generate(self, queries, **kw)

    monkeypatch.setattr(SpeechLLM, "generate", counting)
    capsys.readouterr()
    evaluate(_cfg(saved_model, tone_set, out))
    # t2t was finished: only s2t's and asr's 3 batches each ran
    assert len(seen) == 6 and sum(seen) == 10
    assert "3 batches finished by an interrupted run were reused" in capsys.readouterr().err
    assert _outputs(out) == expected
    assert not (out / "partial").exists()


def test_a_changed_model_or_setting_recomputes(saved_model, tone_set, tmp_path, tiny_speech_llm_factory, monkeypatch):
    out = tmp_path / "eval"
    real_generate = SpeechLLM.generate
    n = {"calls": 0}

    def crashing(self, queries, **kw):
        n["calls"] += 1
        if n["calls"] == 3:
            raise Crash("interrupted")
        return real_generate(self, queries, **kw)

    monkeypatch.setattr(SpeechLLM, "generate", crashing)
    with pytest.raises(Crash):
        evaluate(_cfg(saved_model, tone_set, out))
    monkeypatch.setattr(SpeechLLM, "generate", real_generate)
    # another answer length: nothing of the interrupted run fits, and the result is that setting's own
    ref = tmp_path / "ref"
    evaluate(EvalConfig(**{**_cfg(saved_model, tone_set, ref).__dict__, "max_new_tokens": 2}))
    evaluate(EvalConfig(**{**_cfg(saved_model, tone_set, out).__dict__, "max_new_tokens": 2}))
    assert _outputs(out) == _outputs(ref)


def test_a_torn_partial_line_is_dropped_and_the_batch_recomputed(tmp_path):
    from speechkeep.evaluate.progress import EvalProgress, Processes
    from speechkeep.errors import DataError

    prog = EvalProgress(tmp_path, "fp", Processes())
    computed = []

    def compute(idx):
        computed.append(idx)
        return [f"a{i}" for i in idx]

    batches, keys = [[0, 1], [2]], ["k0", "k1", "k2"]
    assert prog.run("t2t", batches, keys, compute) == {0: "a0", 1: "a1", 2: "a2"}
    f = next((tmp_path / "partial" / "fp").glob("t2t.r0.jsonl"))
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 7])  # the last record torn mid-line, as by a kill
    computed.clear()
    assert prog.run("t2t", batches, keys, compute) == {0: "a0", 1: "a1", 2: "a2"}
    assert computed == [[2]]  # only the torn batch again
    assert len(f.read_text().splitlines()) == 2 and f.read_bytes().endswith(b"\n")
    f.write_text('{"key": "x", "out": []}\nnot json\n{"key": "y", "out": []}\n')
    with pytest.raises(DataError, match=r"t2t\.r0\.jsonl:2: malformed line"):
        prog.finished("t2t")
