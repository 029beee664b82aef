"""``data build`` end to end: real TTS + teacher + features on a few questions, resumability,
voice/split assignment, supplied audio, and every bad-input case (clear message, no manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechkeep.audio import save_wav
from speechkeep.data.build import DataBuildConfig, _plan, build_dataset, file_stem
from speechkeep.data.cli import main as cli_main
from speechkeep.data.manifest import read_manifest
from speechkeep.data.questions import QuestionItem
from speechkeep.errors import ConfigError, DataError, UsageError

from speechkeep.data.webquestions import webquestions_file
VOICES = ["piper-joe", "espeak-us-f2"]


def _questions(path: Path, n: int = 4) -> Path:
    data = json.loads(webquestions_file("devtest").read_text())[:n]
    path.write_text(json.dumps(data, indent=1))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real build: 4 questions, piper + espeak voices, teacher smollm2 (16 tokens), variable features."""
    d = tmp_path_factory.mktemp("build")
    cfg = DataBuildConfig(
        questions=str(_questions(d / "q.json")), out=str(d / "out"), voices=VOICES,
        teacher="bundled:smollm2-135m", max_new_tokens=16, teacher_batch_size=4,
        features=True, encode_mode="variable", workers=2, progress=False,
    )
    return cfg, build_dataset(cfg)


@pytest.mark.real
def test_build_writes_manifest_audio_and_responses(built):
    cfg, report = built
    out = Path(cfg.out)
    src = json.loads(Path(cfg.questions).read_text())
    rows = read_manifest(out / "manifest.jsonl", check_audio=True)
    assert rows == report.rows
    assert [r.id for r in rows] == [q["qId"] for q in src]
    assert [r.text for r in rows] == [q["qText"] for q in src]
    assert [r.answers for r in rows] == [q["answers"] for q in src]
    for r in rows:
        assert r.voice in VOICES and r.split == "train" and r.sample_rate == 16000
        assert Path(r.audio) == (out / "audio" / r.voice / f"{r.id}.wav").resolve()
        info = sf.info(r.audio)
        assert (info.samplerate, info.channels) == (16000, 1)
        assert abs(info.duration - r.duration) < 1e-3 and 0.5 < r.duration < 10
        assert isinstance(r.response, str) and r.response.strip()
    raw = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(not Path(x["audio"]).is_absolute() for x in raw)
    c = report.counts
    assert (c["tts_synthesized"], c["teacher_generated"], c["features_computed"]) == (4, 4, 4)
    info = json.loads((out / "build_info.json").read_text())
    assert info["config"]["teacher"] == "bundled:smollm2-135m" and info["counts"]["items"] == 4
    assert len((out / "teacher_cache.jsonl").read_text().splitlines()) == 4
    assert len(list((out / "features").rglob("*.safetensors"))) == 4
    assert "4 utterances" in report.summary()


@pytest.mark.real
def test_rerun_does_no_tts_no_teacher_no_encoder(built, monkeypatch):
    cfg, first = built
    manifest = Path(cfg.out) / "manifest.jsonl"
    before = manifest.read_text()

    def forbidden(what):
        def f(*a, **k):
            raise AssertionError(f"{what} must not run on a resumed build")
        return f

    def no_tts_jobs(jobs, *a, **k):
        assert not jobs, "TTS must not run on a resumed build"
        return iter(())

    monkeypatch.setattr("speechkeep.data.tts._run_jobs", no_tts_jobs)
    monkeypatch.setattr("speechkeep.models.llm.load_llm", forbidden("teacher generation"))
    monkeypatch.setattr("speechkeep.models.speech_encoder.load_speech_encoder", forbidden("the encoder"))
    report = build_dataset(cfg)
    c = report.counts
    assert (c["tts_synthesized"], c["teacher_generated"], c["features_computed"]) == (0, 0, 0)
    assert (c["audio_reused"], c["teacher_cached"], c["features_cached"]) == (4, 4, 4)
    assert manifest.read_text() == before


@pytest.mark.real
def test_interrupted_build_resumes(tmp_path):
    """A build whose audio is partly there (a crash) synthesizes only the rest; changed text is redone."""
    q = _questions(tmp_path / "q.json", 3)
    cfg = DataBuildConfig(questions=str(q), out=str(tmp_path / "out"), voices=["espeak-us-m3"],
                          features=False, workers=1, progress=False)
    first = build_dataset(cfg)
    Path(first.rows[0].audio).unlink()  # as if the run had died before this file
    (tmp_path / "out" / "manifest.jsonl").unlink()
    second = build_dataset(cfg)
    assert second.counts["tts_synthesized"] == 1 and second.counts["audio_reused"] == 2
    data = json.loads(q.read_text())
    data[1]["qText"] = "what is a different question?"
    q.write_text(json.dumps(data))
    third = build_dataset(cfg)
    assert third.counts["tts_synthesized"] == 1 and third.rows[1].text == "what is a different question?"


def test_voice_and_split_assignment(tmp_path):
    items = [QuestionItem(id=f"q{i}", text="what?") for i in range(200)]
    base = dict(questions="x", out=str(tmp_path))

    plans = _plan(items, DataBuildConfig(**base, eval_voices=["espeak-us-m7"]), tmp_path)
    assert {p.split for p in plans} == {"train"} and "espeak-us-m7" not in {p.voice for p in plans}
    assert len({p.voice for p in plans}) > 8  # default: every other voice of the registry

    plans = _plan(items, DataBuildConfig(**base, eval_voices=["espeak-us-m7"], split="eval"), tmp_path)
    assert {p.voice for p in plans} == {"espeak-us-m7"}  # held-out speaker only

    cfg = DataBuildConfig(**base, voices=VOICES, eval_voices=["espeak-us-m7"], split_by_voice=True)
    plans = _plan(items, cfg, tmp_path)
    by_split = {s: {p.voice for p in plans if p.split == s} for s in ("train", "eval")}
    assert by_split == {"train": set(VOICES), "eval": {"espeak-us-m7"}}
    assert [p.voice for p in _plan(items, cfg, tmp_path)] == [p.voice for p in plans]  # deterministic
    seeded = _plan(items, DataBuildConfig(**base, voices=VOICES, seed=1), tmp_path)
    assert [p.voice for p in seeded] != [p.voice for p in _plan(items, DataBuildConfig(**base, voices=VOICES), tmp_path)]

    for bad, msg in [
        (dict(voices=["nope"]), "unknown voice 'nope'"),
        (dict(voices=VOICES, eval_voices=["piper-joe"]), "both as voices and as held-out"),
        (dict(split_by_voice=True), "needs held-out eval voices"),
    ]:
        with pytest.raises(UsageError, match=msg):  # options, not data: exit code 2
            _plan(items, DataBuildConfig(**base, **bad), tmp_path)
    assert file_stem("wqr000000") == "wqr000000"
    assert file_stem("a b/../c") != file_stem("a b/../d") and "/" not in file_stem("a b/../c")


# ------------------------------------------------------------------ supplied audio and bad input


def _audio_questions(tmp_path: Path, extra: list[dict] | None = None) -> Path:
    save_wav(tmp_path / "ok.wav", 0.1 * np.sin(np.arange(16000) / 5).astype(np.float32))
    sf.write(tmp_path / "stereo44k.flac", 0.1 * np.ones((22050, 2), dtype=np.float32), 44100)
    rows = [{"id": "a", "text": "first", "audio": "ok.wav", "response": "r1"},
            {"id": "b", "text": "second", "audio": "stereo44k.flac", "speaker": "spk 2"}] + (extra or [])
    p = tmp_path / "q.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _cfg(tmp_path, questions, **kw) -> DataBuildConfig:
    return DataBuildConfig(questions=str(questions), out=str(tmp_path / "out"), features=False,
                           workers=1, progress=False, **kw)


def test_supplied_audio_is_converted_not_synthesized(tmp_path, monkeypatch):
    monkeypatch.setattr("speechkeep.data.tts._run_jobs", lambda jobs, *a, **k: pytest.fail("no TTS") if jobs else iter(()))
    q = _audio_questions(tmp_path)
    report = build_dataset(_cfg(tmp_path, q))
    a, b = report.rows
    assert (a.voice, a.response, a.duration) == ("original", "r1", 1.0)
    assert b.voice == file_stem("spk 2") and b.duration == pytest.approx(0.5)
    info = sf.info(b.audio)
    assert (info.samplerate, info.channels) == (16000, 1)
    assert report.counts["audio_imported"] == 2
    assert build_dataset(_cfg(tmp_path, q)).counts["audio_reused"] == 2
    save_wav(tmp_path / "ok.wav", np.zeros(8000, dtype=np.float32))  # a changed source is imported again
    again = build_dataset(_cfg(tmp_path, q))
    assert again.counts["audio_imported"] == 1 and again.rows[0].duration == 0.5


def test_datasets_directory_build(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr("speechkeep.data.tts._run_jobs", lambda jobs, *a, **k: pytest.fail("no TTS") if jobs else iter(()))
    sf.write(tmp_path / "x.wav", 0.1 * np.ones(8000, dtype=np.float32), 8000)
    ds = datasets.Dataset.from_dict({"id": ["u1", "u2"], "text": ["hello there", "again"],
                                     "audio": [str(tmp_path / "x.wav")] * 2})
    ds.cast_column("audio", datasets.Audio()).save_to_disk(str(tmp_path / "ds"))
    report = build_dataset(_cfg(tmp_path, tmp_path / "ds"))
    assert [(r.id, r.voice, r.duration) for r in report.rows] == [("u1", "original", 1.0), ("u2", "original", 1.0)]


def _corrupt(p: Path):
    p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(64)))


def _empty(p: Path):
    sf.write(p, np.zeros(0, dtype=np.float32), 16000)


def _too_long(p: Path):
    save_wav(p, np.zeros(16000 * 31, dtype=np.float32))


@pytest.mark.parametrize("make, message", [
    (None, "audio file not found"),
    (_corrupt, "cannot read audio file"),
    (_empty, "zero length"),
    (_too_long, "31.00 s long, longer than the 30 s limit"),
])
def test_bad_audio_clear_error_and_no_manifest(tmp_path, make, message):
    good = _audio_questions(tmp_path)
    build_dataset(_cfg(tmp_path, good))
    manifest = tmp_path / "out" / "manifest.jsonl"
    before = manifest.read_bytes()
    if make is not None:
        make(tmp_path / "bad.wav")
    q = _audio_questions(tmp_path, [{"id": "c", "text": "third", "audio": "bad.wav"}])
    with pytest.raises(DataError, match=message) as err:
        build_dataset(_cfg(tmp_path, q))
    assert "q.jsonl:3: id 'c'" in str(err.value)
    assert manifest.read_bytes() == before  # the old manifest is untouched, nothing half-written

    report = build_dataset(_cfg(tmp_path, q, skip_bad=True))
    assert [r.id for r in report.rows] == ["a", "b"]
    listed = [json.loads(l) for l in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert [x["line"] for x in listed] == [3] and message.split()[0] in listed[0]["reason"]


@pytest.mark.parametrize("line, message", [
    ('{"id": "c", "text": ', "q.jsonl:3: malformed JSON"),
    ('{"id": "c", "text": ""}', "q.jsonl:3: id 'c': empty text"),
    ('{"id": "a", "text": "again"}', "q.jsonl:3: duplicate id 'a'"),
])
def test_bad_lines_via_cli(tmp_path, capsys, line, message):
    q = _audio_questions(tmp_path)
    q.write_text(q.read_text() + line + "\n")
    args = ["build", "--questions", str(q), "--out", str(tmp_path / "out"), "--no-features", "--no-progress"]
    assert cli_main(args) == 1  # a data error (the content of an input), not a usage error
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("error: ")
    assert not (tmp_path / "out" / "manifest.jsonl").exists()

    assert cli_main(args + ["--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "2 utterances" in printed and "skipped 1 bad input" in printed
    assert json.loads((tmp_path / "out" / "skipped.jsonl").read_text())["line"] == 3


def test_config_errors(tmp_path):
    q = _audio_questions(tmp_path)
    with pytest.raises(ConfigError, match="limit must be >= 1"):  # checked when the config is built
        build_dataset(_cfg(tmp_path, q, limit=0))
    with pytest.raises(DataError, match="questions file not found"):
        build_dataset(_cfg(tmp_path, tmp_path / "missing.json"))
    report = build_dataset(_cfg(tmp_path, q, limit=1))
    assert [r.id for r in report.rows] == ["a"]
