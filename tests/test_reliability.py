"""One test per finding of the bad-input probe (issue 11): each failed before the fix.

The corpus walk (tests/test_bad_inputs.py) covers every input x command; these pin each finding down
directly: no data loss, no training on garbage, no traceback, nothing silently accepted.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechkeep.cli import main
from speechkeep.errors import DataError, OutputError, RangeError, TrainingError


def run(argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code or 0)


@pytest.fixture
def specs(tiny_llm_dir, tiny_whisper_dir):
    return [f"llm={tiny_llm_dir}", f"speech_encoder={tiny_whisper_dir}", "adaptor.hidden_size=16"]


@pytest.fixture
def dataset(tmp_path):
    """A 3-row spoken manifest with answers and responses (1-s tones)."""
    d = tmp_path / "data"
    (d / "audio").mkdir(parents=True)
    rows = []
    for i in range(3):
        t = np.arange(16000) / 16000
        sf.write(d / "audio" / f"a{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 16000)
        rows.append({"id": f"q{i}", "text": f"question {i}?", "audio": f"audio/a{i}.wav", "sample_rate": 16000,
                     "duration": 1.0, "voice": "v", "answers": ["yes"], "response": "an answer.", "split": "train"})
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def files_under(p: Path) -> dict[str, bytes]:
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


# ------------------------------------------------------------------ destructive
def test_build_out_dot_never_deletes_the_current_directory(tmp_path, monkeypatch, specs, capsys):
    cwd = tmp_path / "project"
    (cwd / "src").mkdir(parents=True)
    (cwd / "src" / "work.py").write_text("precious = True\n")
    (cwd / "notes.txt").write_text("precious\n")
    monkeypatch.chdir(cwd)
    before = files_under(cwd)
    for extra in ([], ["--overwrite"]):
        assert run(["build", *specs, "--out", ".", *extra]) == 2
        assert "current directory" in capsys.readouterr().err
        assert files_under(cwd) == before


def test_out_at_a_non_empty_directory_is_refused_unless_marked_or_overwrite(tmp_path, specs, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "thesis.tex").write_text("precious\n")
    assert run(["build", *specs, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and (out / "thesis.tex").read_text() == "precious\n"
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    assert run(["build", *specs, "--out", out, "--overwrite"]) == 0  # writes its files next to the user's
    assert (out / "thesis.tex").read_text() == "precious\n" and (out / "speechkeep.json").is_file()
    fresh = tmp_path / "fresh"
    assert run(["build", *specs, "--out", fresh]) == 0
    assert (fresh / ".speechkeep-build").is_file()
    assert run(["build", *specs, "--out", fresh]) == 0  # its own earlier output: written again


@pytest.mark.parametrize("where", ["home", "repo", "input_parent"])
def test_never_writes_into_home_a_repository_root_or_a_parent_of_an_input(where, tmp_path, monkeypatch, dataset,
                                                                          tiny_llm_dir, tiny_whisper_dir, capsys):
    target = {"home": tmp_path / "home", "repo": tmp_path / "repo", "input_parent": dataset}[where]
    target.mkdir(exist_ok=True)
    (target / "keep.txt").write_text("precious\n")
    if where == "home":
        monkeypatch.setenv("HOME", str(target))
    if where == "repo":
        (target / ".git").mkdir()
    model = tmp_path / "model"
    assert run(["build", f"llm={tiny_llm_dir}", f"speech_encoder={tiny_whisper_dir}", "adaptor.hidden_size=16",
                "--out", model]) == 0
    before = files_under(target)
    assert run(["eval", "--model", model, "--data", dataset / "manifest.jsonl", "--out", target, "--overwrite"]) == 2
    assert {"home": "home directory", "repo": "repository root", "input_parent": "input"}[where] in capsys.readouterr().err
    assert files_under(target) == before


def test_atomic_replace_refuses_protected_directories_and_keeps_foreign_files(tmp_path, monkeypatch):
    from speechkeep.io import atomic_path

    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError):
        with atomic_path(".") as tmp:
            tmp.mkdir()
    with pytest.raises(OutputError, match="current directory"):
        with atomic_path(tmp_path) as tmp:
            tmp.mkdir()
    d = tmp_path / "sub"
    d.mkdir()
    (d / "mine.txt").write_text("old")
    (d / "user.txt").write_text("precious")
    (d / "stale").mkdir()
    with atomic_path(d, own_names=["stale"]) as tmp:
        tmp.mkdir()
        (tmp / "mine.txt").write_text("new")
    assert (d / "mine.txt").read_text() == "new" and (d / "user.txt").read_text() == "precious"
    assert not (d / "stale").exists()


# ------------------------------------------------------------------ NaN / inf audio, non-finite training
def test_non_finite_audio_is_a_data_error_naming_the_file(tmp_path):
    from speechkeep.audio import load_audio

    x = np.zeros(1600, dtype=np.float32)
    x[7] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    x[7] = np.inf
    sf.write(tmp_path / "inf.wav", x, 16000, subtype="FLOAT")
    for name in ("nan.wav", "inf.wav"):
        with pytest.raises(DataError, match=rf"{name} has 1 non-finite sample"):
            load_audio(tmp_path / name)


def test_nan_features_are_never_cached(tmp_path, dataset):
    from speechkeep.data.features import FeatureCache

    class NaNEncoder:
        max_seconds = 30.0

        def identity(self):
            return "nan-encoder"

        def encode(self, audios, mode="padded"):
            return [torch.full((5, 4), float("nan")) for _ in audios]

    cache = FeatureCache(tmp_path / "cache", NaNEncoder(), "variable", progress=False)
    with pytest.raises(DataError, match=r"a0\.wav.*not finite"):
        cache.get([dataset / "audio" / "a0.wav"])
    assert not [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]


def _train_cfg(tmp_path, tiny_llm_dir, tiny_whisper_dir, **over):
    from speechkeep.config import load_config
    from speechkeep.train.config import TrainConfig

    ov = [f"model.llm={tiny_llm_dir}", f"model.speech_encoder={tiny_whisper_dir}", "model.adaptor.hidden_size=16",
          "init_from=none", f"output_dir={tmp_path / 'run'}", "data.batch_size=2", "max_steps=4", "save_every=2"]
    return load_config(TrainConfig, None, ov + [f"{k}={v}" for k, v in over.items()])


@dataclasses.dataclass
class Row:
    id: str
    text: str
    response: str
    audio: str
    duration: float = 1.0
    split: str = "train"


ROWS = [Row(f"u{i}", f"question {i}", "an answer.", f"u{i}.wav") for i in range(4)]


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, tiny_llm_dir, tiny_whisper_dir):
    from speechkeep.train.loop import train

    calls = {"n": 0}

    def features(paths):  # good for the first two steps, NaN from the third on
        calls["n"] += 1
        fill = float("nan") if calls["n"] >= 3 else 0.1
        return [torch.full((20, 16), fill) for _ in paths]

    with pytest.raises(TrainingError) as err:
        train(_train_cfg(tmp_path, tiny_llm_dir, tiny_whisper_dir), rows=ROWS, features=features, progress=False)
    msg = str(err.value)
    assert "step 3" in msg and "not finite" in msg and "u" in msg and "last good checkpoint (step 2)" in msg
    run = tmp_path / "run"
    assert json.loads((run / "checkpoint" / "progress.json").read_text())["step"] == 2
    assert not (run / "model").exists() and not (run / "summary.json").exists()  # no NaN model saved


def test_non_finite_loss_before_any_checkpoint_leaves_nothing(tmp_path, tiny_llm_dir, tiny_whisper_dir, capsys):
    from speechkeep.train.loop import train

    with pytest.raises(TrainingError, match="no checkpoint had been written yet"):
        train(_train_cfg(tmp_path, tiny_llm_dir, tiny_whisper_dir), rows=ROWS,
              features=lambda paths: [torch.full((20, 16), float("nan")) for _ in paths], progress=False)
    assert not (tmp_path / "run").exists()
    assert TrainingError.exit_code == 1


def test_eval_never_writes_infinity_or_nan(tmp_path, dataset, tiny_speech_llm_factory, monkeypatch):
    from speechkeep.evaluate import run as ev

    tiny_speech_llm_factory().save_pretrained(tmp_path / "model")
    monkeypatch.setattr(ev, "perplexity", lambda *a, **k: float("inf"))
    m = ev.evaluate(ev.EvalConfig(model=str(tmp_path / "model"), data=str(dataset), out=str(tmp_path / "e"),
                                  tasks=["ppl"], max_new_tokens=1))
    text = (tmp_path / "e" / "metrics.json").read_text()
    saved = json.loads(text, parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}"))  # NaN, Infinity
    assert saved["ppl"]["text"] is None and "ppl.text" in saved["non_finite"]["keys"] and m["ppl"]["speech"] is None
    from speechkeep.evaluate.report import format_metrics

    assert "text input not finite" in format_metrics(m)


# ------------------------------------------------------------------ tracebacks -> one-line errors, before any work
def test_out_that_is_a_file_fails_before_the_model_is_loaded(tmp_path, dataset, monkeypatch, capsys):
    import speechkeep.models.persistence as sl

    monkeypatch.setattr(sl, "load_speech_llm", lambda *a, **k: pytest.fail("model loaded before the --out check"))
    (tmp_path / "taken").write_text("x")
    assert run(["eval", "--model", "bundled:smollm2-135m", "--data", dataset, "--out", tmp_path / "taken"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert run(["importance", "--model", "bundled:smollm2-135m", "--data", dataset, "--out", tmp_path / "taken"]) == 2


@pytest.mark.parametrize("command", ["train", "eval", "importance"])
def test_non_utf8_manifest_is_a_data_error_with_the_line(command, tmp_path, dataset, tiny_llm_dir, tiny_whisper_dir,
                                                          capsys):
    m = dataset / "manifest.jsonl"
    m.write_bytes(m.read_bytes().replace(b"question 1", b"questi\xf3n 1"))
    argv = {"train": ["train", f"model.llm={tiny_llm_dir}", f"model.speech_encoder={tiny_whisper_dir}", "init_from=none",
                      f"data.train={m}", f"output_dir={tmp_path / 'o'}"],
            "eval": ["eval", "--model", tiny_llm_dir, "--data", m, "--out", tmp_path / "o"],
            "importance": ["importance", "--model", tiny_llm_dir, "--data", m, "--out", tmp_path / "o"]}[command]
    assert run(argv) == 1
    err = capsys.readouterr().err
    assert "manifest.jsonl:2: not UTF-8" in err and "Traceback" not in err and not (tmp_path / "o").exists()


def test_skip_bad_skips_a_non_utf8_question_line(tmp_path):
    from speechkeep.data.questions import read_questions

    q = tmp_path / "q.jsonl"
    q.write_bytes(b'{"id": "a", "text": "ok?"}\n{"id": "b", "text": "caf\xe9?"}\n{"id": "c", "text": "fine?"}\n')
    res = read_questions(q, skip_bad=True)
    assert [i.id for i in res.items] == ["a", "c"] and res.skipped[0][0] == 2 and "not UTF-8" in res.skipped[0][1]


def test_truncated_safetensors_is_a_data_error(tmp_path, tiny_speech_llm_factory, capsys):
    tiny_speech_llm_factory().save_pretrained(tmp_path / "m")
    f = tmp_path / "m" / "adaptor.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    assert run(["ask", "--model", tmp_path / "m", "--text", "hi?"]) == 1
    assert "adaptor.safetensors: cannot read adaptor weights (truncated" in capsys.readouterr().err


@pytest.mark.parametrize("argv, must", [
    (["train", "lora.r=0"], "lora.r must be >= 1, got 0"),
    (["train", "data.batch_size=0"], "data.batch_size must be >= 1, got 0"),
    (["eval", "--model", "m", "--data", "d", "--out", "o", "--batch-size", "0"], "argument --batch-size: must be >= 1"),
    (["eval", "--model", "m", "--data", "d", "--out", "o", "--max-new-tokens", "0"], "--max-new-tokens: must be >= 1"),
    (["ask", "--text", "hi", "--max-new-tokens", "0"], "--max-new-tokens: must be >= 1"),
])
def test_zero_sizes_are_usage_errors(argv, must, capsys):
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert must in err and err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------ silently accepted -> errors
@pytest.mark.parametrize("argv, must", [
    (["train", "optim.lr=-1e-4"], "optim.lr must be > 0"),
    (["train", "max_steps=-1"], "max_steps must be >= 1"),
    (["importance", "--model", "m", "--data", "d", "--out", "o", "--fraction", "1.5"], "--fraction: must be in (0, 1]"),
    (["importance", "--model", "m", "--data", "d", "--out", "o", "--fraction", "0"], "--fraction: must be in (0, 1]"),
    (["importance", "--model", "m", "--data", "d", "--out", "o", "--fraction", "-0.5"], "--fraction: must be in (0, 1]"),
    (["eval", "--model", "m", "--data", "d", "--out", "o", "--limit", "-1"], "--limit: must be >= 1"),
    (["data", "build", "--questions", "q", "--out", "o", "--limit", "-1"], "--limit: must be >= 1"),
])
def test_out_of_range_values_are_rejected(argv, must, capsys):
    assert run(argv) == 2
    assert must in capsys.readouterr().err


def test_truncated_wav_body_is_rejected(tmp_path):
    from speechkeep.audio import load_audio

    sf.write(tmp_path / "full.wav", np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    assert len(load_audio(tmp_path / "full.wav")) == 16000
    with pytest.raises(DataError, match=r"cut\.wav is truncated: its header declares 32000 bytes"):
        load_audio(tmp_path / "cut.wav")


def test_rows_without_answers_are_reported_not_counted_wrong(tmp_path, dataset, tiny_speech_llm_factory):
    from speechkeep.evaluate.run import EvalConfig, evaluate

    m = dataset / "manifest.jsonl"
    rows = [json.loads(line) for line in m.read_text().splitlines()]
    rows[1]["answers"] = []
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tiny_speech_llm_factory().save_pretrained(tmp_path / "model")
    out = evaluate(EvalConfig(model=str(tmp_path / "model"), data=str(m), out=str(tmp_path / "e"), tasks=["t2t"],
                              max_new_tokens=1))
    assert out["t2t"]["n"] == 2 and out["without_answers"]["ids"] == ["q1"]
    preds = [json.loads(line) for line in (tmp_path / "e" / "predictions.jsonl").read_text().splitlines()]
    assert [p["correct"] is None for p in preds] == [False, True, False]


# ------------------------------------------------------------------ one range mechanism for every config
def _config_classes():
    from speechkeep.align.recipe import AlignConfig
    from speechkeep.config import config_sections
    from speechkeep.data.build import DataBuildConfig
    from speechkeep.evaluate.run import EvalConfig
    from speechkeep.models.speech_llm import SpeechLLMConfig
    from speechkeep.recipes.demo import DemoConfig
    from speechkeep.train.config import TrainConfig

    seen, todo = [], [TrainConfig, SpeechLLMConfig, EvalConfig, DataBuildConfig, DemoConfig, AlignConfig]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        for name, tp in typing.get_type_hints(cls).items():
            args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            todo += [a for a in args if dataclasses.is_dataclass(a)]
        todo += list(config_sections(cls).values())  # plugin sections: every registered strategy's settings
    return seen


def test_every_numeric_setting_of_every_config_declares_its_range():
    from speechkeep.config import Checked

    missing = []
    classes = _config_classes()
    assert len(classes) >= 12
    for cls in classes:
        assert issubclass(cls, Checked), f"{cls.__name__} does not check its ranges"
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
            if any(a in (int, float) for a in args) and "range" not in f.metadata:
                missing.append(f"{cls.__name__}.{f.name}")
    assert not missing, f"numeric settings without a range: {missing}"


def test_range_errors_name_the_dotted_key_in_python_and_from_yaml(tmp_path):
    from speechkeep.align.recipe import AlignConfig
    from speechkeep.config import load_config
    from speechkeep.strategies.lora import LoraSettings

    with pytest.raises(RangeError, match=r"^r must be >= 1, got 0$"):
        LoraSettings(r=0)
    (tmp_path / "a.yaml").write_text("ctc:\n  batch_size: 0\n")
    with pytest.raises(RangeError, match=r"a\.yaml: ctc\.batch_size must be >= 1, got 0"):
        load_config(AlignConfig, tmp_path / "a.yaml")
    with pytest.raises(RangeError, match=r"optim\.beta2 must be in \[0, 1\), got inf"):
        from speechkeep.train.config import TrainConfig

        load_config(TrainConfig, None, ["optim.beta2=.inf"])


def test_help_lists_the_allowed_range(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "Allowed: >= 1." in out and "Allowed: > 0." in out


# ------------------------------------------------------------------ leftovers and shared data directories
def test_error_after_the_model_is_loaded_leaves_no_empty_output_directory(tmp_path, dataset, tiny_speech_llm_factory,
                                                                          capsys):
    tiny_speech_llm_factory().save_pretrained(tmp_path / "model")
    sf.write(dataset / "audio" / "a2.wav", np.full(1600, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    out = tmp_path / "deep" / "eval"
    assert run(["eval", "--model", tmp_path / "model", "--data", dataset, "--out", out, "--tasks", "s2t",
                "--max-new-tokens", "1"]) == 1
    assert "a2.wav has 1600 non-finite samples" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists()


def test_eval_never_writes_into_the_data_directory(tmp_path, dataset, tiny_speech_llm_factory, monkeypatch):
    monkeypatch.setenv("SPEECHKEEP_CACHE", str(tmp_path / "cache"))
    tiny_speech_llm_factory().save_pretrained(tmp_path / "model")
    before = files_under(dataset)
    dataset.chmod(0o555)
    try:
        assert run(["eval", "--model", tmp_path / "model", "--data", dataset, "--out", tmp_path / "e",
                    "--tasks", "s2t", "--max-new-tokens", "1"]) == 0
    finally:
        dataset.chmod(0o755)
    assert files_under(dataset) == before and not (dataset / "features").exists()
    assert list((tmp_path / "cache" / "features").rglob("*.safetensors"))  # computed into speechkeep's own cache
