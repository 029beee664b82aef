"""`speechkeep demo` end to end, shrunk: real TTS, real Whisper, real SmolLM2 (teacher and LLM), 2 steps."""

import json

import pytest

pytestmark = pytest.mark.real


def test_demo_runs_end_to_end_and_reuses_finished_work(tmp_path, capsys):
    from speechkeep.recipes.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=str(tmp_path / "demo"), n_train=8, n_eval=4, max_steps=2,
                     batch_size=4, teacher_max_new_tokens=6, eval_max_new_tokens=6, eval_voice="espeak-us-f2",
                     extra={"model.adaptor.hidden_size": "32"})
    res = run_demo(cfg)
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| No-FT (text LLM as is) |" in report and "| lora, 2 steps from the aligned front-end |" in report
    assert "| aligned front-end (CTC, LLM frozen: T2T = No-FT), before the strategy |" in report
    assert "T2T acc % [95% CI]" in report and "McNemar p = " in report and "lora T2T vs No-FT T2T" in report
    lo, hi = res["noft"]["t2t"]["ci95"]
    assert lo <= res["noft"]["t2t"]["accuracy"] <= hi
    assert res["trained"]["n"] == 4 and "s2t" in res["trained"] and "t2t" in res["noft"]
    # the strategy trained the shipped front-end (CTC adaptor), not a fresh hidden_size=32 one
    saved = json.loads((tmp_path / "demo" / "runs" / "lora" / "model" / "speechkeep.json").read_text())
    assert saved["config"]["adaptor"]["output"] == "ctc"
    assert res["noft"]["cascade"]["asr_wer"] < 0.5  # Whisper tiny.en on a clear espeak voice
    assert res["noft"]["cascade"]["n"] == res["noft"]["t2t"]["n"] == 4  # the cascade answered every question
    voices = {json.loads(l)["voice"] for l in (tmp_path / "demo" / "data" / "eval" / "manifest.jsonl").read_text().splitlines()}
    assert voices == {"espeak-us-f2"}  # the held-out voice speaks only the eval questions
    train_voices = {json.loads(l)["voice"] for l in (tmp_path / "demo" / "data" / "train" / "manifest.jsonl").read_text().splitlines()}
    assert "espeak-us-f2" not in train_voices
    # the same config in another directory: the same report, bit for bit (seeded TTS, a step budget)
    from dataclasses import replace

    run_demo(replace(cfg, out=str(tmp_path / "again")))
    assert (tmp_path / "again" / "report.md").read_text() == report
    for split in ("train", "eval"):
        wavs = sorted((tmp_path / "demo" / "data" / split / "audio").rglob("*.wav"))
        assert wavs and all(w.read_bytes() == (tmp_path / "again" / w.relative_to(tmp_path / "demo")).read_bytes()
                            for w in wavs)
    capsys.readouterr()
    run_demo(cfg)  # third run: data, teacher answers and the finished training run are reused
    out = capsys.readouterr().out
    assert "reusing the finished run" in out and "0 synthesized" in out
