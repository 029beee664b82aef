"""Kill -9 and resume, for every command that works for long (issue 18).

Each command runs as a subprocess on tiny models. It is killed with SIGKILL at fixed fault points
(``$SPEECHKEEP_FAULT``: mid-checkpoint-write, between the two renames that replace a directory, a
partial-results line half written) and at seeded random moments, re-run after each kill until it
finishes, and compared with an uninterrupted run: weights and final loss to 1e-6, manifests and
predictions with nothing lost or duplicated, and no temporary file left anywhere in the output.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
TEMP = re.compile(r"^\..+\.(tmp|old)-\d+")


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_llm_dir, tiny_whisper_dir):
    """A tone manifest (6 rows with answers and responses), a saved tiny SpeechLLM, 3 text questions."""
    from speechkeep.models.adaptor import AdaptorConfig
    from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig

    root = tmp_path_factory.mktemp("kill")
    data = root / "data"
    data.mkdir()
    rows = []
    for i in range(6):
        t = np.arange(int(16000 * (0.4 + 0.15 * i))) / 16000
        sf.write(data / f"a{i}.wav", (0.3 * np.sin(2 * np.pi * (180 + 40 * i) * t)).astype(np.float32), 16000)
        rows.append({"id": f"q{i}", "text": f"what is question {i}" + " now" * i, "audio": f"a{i}.wav",
                     "sample_rate": 16000, "duration": len(t) / 16000, "voice": "v", "answers": ["yes"],
                     "response": "an answer" + " more" * (i % 3) + ".", "split": "train"})
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = root / "model"
    SpeechLLM.build(SpeechLLMConfig(llm=str(tiny_llm_dir), speech_encoder=str(tiny_whisper_dir),
                                    adaptor=AdaptorConfig(hidden_size=16))).save_pretrained(model)
    qs = root / "questions.jsonl"
    qs.write_text("".join(json.dumps({"id": f"t{i}", "text": f"who wrote book number {i}?", "answers": ["x"]}) + "\n"
                          for i in range(4)))
    return {"root": root, "data": data, "model": model, "questions": qs, "llm": tiny_llm_dir, "wh": tiny_whisper_dir}


def _env(root: Path, fault: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SPEECHKEEP_FAULT"}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", SPEECHKEEP_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if fault:
        env["SPEECHKEEP_FAULT"] = fault
    return env


def cli(root: Path, args: list, fault: str | None = None, kill_after: float | None = None) -> tuple[int, float, str]:
    """Run ``speechkeep ARGS``; SIGKILL it after ``kill_after`` seconds if still running.
    Returns (exit code, i.e. -9 when killed, seconds, stderr)."""
    t0 = time.perf_counter()
    log = root / f"stderr-{time.time_ns()}.txt"
    with open(log, "w") as err:
        p = subprocess.Popen([sys.executable, "-m", "speechkeep", *map(str, args)], env=_env(root, fault),
                             stdout=subprocess.DEVNULL, stderr=err, cwd=root)
        try:
            p.wait(timeout=kill_after if kill_after is not None else 300)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
    text = log.read_text()
    log.unlink()
    return p.returncode, time.perf_counter() - t0, text


def kill_and_resume(root: Path, args: list, faults: list[str], seed: str, ref_seconds: float,
                    kills: int = 1) -> tuple[int, list[str]]:
    """Kill at each fault point, then ``kills`` times at seeded random moments, re-running the same
    command each time; finally run it to the end. Returns how many runs were really killed, and the
    stderr of every run."""
    killed, errs = 0, []
    for fault in faults:
        code, _, err = cli(root, args, fault=fault)
        assert code in (-signal.SIGKILL, 0), f"{fault}: exit {code}\n{err[-3000:]}"
        killed += code == -signal.SIGKILL
        errs.append(err)
    rng = random.Random(seed)
    for _ in range(kills):
        code, _, err = cli(root, args, kill_after=rng.uniform(0.45, 0.9) * ref_seconds)
        assert code in (-signal.SIGKILL, 0), err[-3000:]
        killed += code == -signal.SIGKILL
        errs.append(err)
    code, _, err = cli(root, args)
    assert code == 0, err[-3000:]
    return killed, errs + [err]


def no_temporaries(out: Path) -> None:
    left = [str(p.relative_to(out)) for p in out.rglob("*") if TEMP.match(p.name)]
    assert not left, f"temporary files left behind: {left}"


def _weights(d: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(d.rglob("*.safetensors")):
        out.update({f"{f.relative_to(d)}:{k}": v for k, v in load_file(str(f)).items()})
    return out


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa and set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0, msg=k)


def test_train_killed_mid_checkpoint_write_resumes_to_the_same_weights(work):
    root = work["root"]

    def args(out):
        return ["train", f"model.llm={work['llm']}", f"model.speech_encoder={work['wh']}", "model.adaptor.hidden_size=16",
                "init_from=none", f"data.train={work['data']}", "data.batch_size=2", "max_steps=8", "save_every=2",
                "log_every=1", "resume=true", f"output_dir={out}"]

    code, ref_s, err = cli(root, args(root / "train_ref"))
    assert code == 0, err[-3000:]
    out = root / "train"
    # the 2nd atomic write is the step-2 checkpoint (the 1st: train_config.json); then a kill between the
    # renames that replace the checkpoint directory; then a kill at a random moment
    killed, _ = kill_and_resume(root, args(out), ["atomic.before_rename:2", "atomic.between_renames:1"], "train", ref_s)
    assert killed >= 2
    _same_weights(root / "train_ref" / "model", out / "model")
    ref, got = (json.loads((d / "summary.json").read_text()) for d in (root / "train_ref", out))
    assert got["steps"] == ref["steps"] == 8 and abs(got["final_loss"] - ref["final_loss"]) <= 1e-6
    steps = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [str(i) for i in range(1, 9)]  # each step logged once: none lost, none duplicated
    no_temporaries(out)


def test_eval_killed_mid_line_and_mid_write_resumes_to_the_same_predictions(work):
    root = work["root"]

    def args(out):
        return ["eval", "--model", work["model"], "--data", work["data"], "--out", out, "--tasks", "t2t", "s2t", "ppl",
                "--max-new-tokens", "3", "--batch-size", "1"]

    code, ref_s, err = cli(root, args(root / "eval_ref"))
    assert code == 0, err[-3000:]
    out = root / "eval"
    # a partial-results line torn half-way (t2t's 2nd batch of 1), then a kill while the final
    # predictions.jsonl is renamed into place (every batch is finished by then), then a random one
    killed, errs = kill_and_resume(root, args(out), ["append.mid_line:2", "atomic.before_rename:1"], "eval", ref_s)
    assert killed >= 2
    # the second run did not recompute the finished batch: 24 = (t2t, s2t, ppl text, ppl speech) x 6
    assert "1 batches finished by an interrupted run were reused, 23 computed" in errs[1]
    assert (out / "predictions.jsonl").read_text() == (root / "eval_ref" / "predictions.jsonl").read_text()
    ref, got = (json.loads((d / "metrics.json").read_text()) for d in (root / "eval_ref", out))
    ref.pop("seconds"), got.pop("seconds"), ref.pop("seconds_per_task"), got.pop("seconds_per_task")
    assert got == ref
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted((p["task"], p["id"]) for p in preds) == sorted((t, f"q{i}") for t in ("t2t", "s2t") for i in range(6))
    assert not (out / "partial").exists()
    no_temporaries(out)


def test_data_build_killed_resumes_with_nothing_lost_or_duplicated(work):
    root = work["root"]

    def args(out):
        return ["data", "build", "--questions", work["questions"], "--out", out, "--voices", "espeak-us-m3,espeak-us-f2",
                "--workers", "1", "--teacher", work["llm"], "--max-new-tokens", "3", "--teacher-batch-size", "1",
                "--speech-encoder", work["wh"], "--encode-mode", "variable", "--no-progress"]

    code, ref_s, err = cli(root, args(root / "build_ref"))
    assert code == 0, err[-3000:]
    out = root / "build"
    killed, _ = kill_and_resume(root, args(out), ["atomic.before_rename:1"], "data build", ref_s)
    assert killed >= 1
    ref_dir = root / "build_ref"
    assert (out / "manifest.jsonl").read_text() == (ref_dir / "manifest.jsonl").read_text()
    wavs = sorted(p.relative_to(ref_dir) for p in (ref_dir / "audio").rglob("*.wav"))
    assert wavs and wavs == sorted(p.relative_to(out) for p in (out / "audio").rglob("*.wav"))
    assert all((out / w).read_bytes() == (ref_dir / w).read_bytes() for w in wavs)
    keys = [json.loads(line)["key"] for line in (out / "teacher_cache.jsonl").read_text().splitlines() if line.strip()]
    assert len(keys) == len(set(keys)) == 4  # every question's response once
    no_temporaries(out)


def test_importance_killed_resumes_to_the_same_scores(work):
    root = work["root"]

    def args(out):
        return ["importance", "--model", work["model"], "--data", work["data"], "--out", out, "--fraction", "1",
                "--input", "speech"]

    code, ref_s, err = cli(root, args(root / "imp_ref"))
    assert code == 0, err[-3000:]
    out = root / "imp"
    # importance recomputes from the start after a kill (it keeps no partial sums); one kill while its
    # scores file is renamed into place
    killed, _ = kill_and_resume(root, args(out), ["atomic.before_rename:1"], "importance", ref_s, kills=0)
    assert killed == 1
    _same_weights(root / "imp_ref", out)
    no_temporaries(out)


def test_align_killed_resumes_to_the_same_adaptor(work):
    root = work["root"]

    def args(out):
        return ["align", f"out={out}", f"corpus.sources=[{work['questions']}]", "corpus.max_texts=2",
                "corpus.piper_voices_per_text=0", "corpus.espeak_voices_per_text=2", "corpus.include_answers=false",
                "corpus.workers=1", f"ctc.model.llm={work['llm']}", f"ctc.model.speech_encoder={work['wh']}",
                "ctc.model.adaptor.hidden_size=16", "ctc.batch_size=2", "ctc.max_steps=4", "ctc.warmup_steps=1",
                "ctc.save_every=1", "ctc.eval_every=100", "n_eval=1",
                "eval_voice=espeak-us-f2", "eval_tasks=[asr]"]

    code, ref_s, err = cli(root, args(root / "align_ref"))
    assert code == 0, err[-3000:]
    out = root / "align"
    killed, _ = kill_and_resume(root, args(out), ["atomic.before_rename:4"], "align", ref_s)
    assert killed >= 1
    _same_weights(root / "align_ref" / "ctc" / "model", out / "ctc" / "model")
    ref, got = (json.loads((d / "ctc" / "summary.json").read_text()) for d in (root / "align_ref", out))
    assert got["steps"] == ref["steps"] == 4 and abs(got["final_loss"] - ref["final_loss"]) <= 1e-6
    assert (out / "corpus" / "manifest.jsonl").read_text() == (root / "align_ref" / "corpus" / "manifest.jsonl").read_text()
    no_temporaries(out)


@pytest.mark.parametrize("command", ["train", "eval", "data build", "importance", "align"])
def test_a_full_file_system_is_an_error_before_any_work(command, work, tmp_path, monkeypatch, capsys):
    from speechkeep.cli import main

    out = tmp_path / "out"
    argv = {"train": ["train", f"model.llm={work['llm']}", f"model.speech_encoder={work['wh']}", "init_from=none",
                      f"data.train={work['data']}", f"output_dir={out}"],
            "eval": ["eval", "--model", work["model"], "--data", work["data"], "--out", out],
            "data build": ["data", "build", "--questions", work["questions"], "--out", out],
            "importance": ["importance", "--model", work["model"], "--data", work["data"], "--out", out],
            "align": ["align", f"out={out}", f"ctc.model.llm={work['llm']}", f"ctc.model.speech_encoder={work['wh']}"]}
    monkeypatch.setenv("SPEECHKEEP_MIN_FREE_MB", str(2**40))  # more than any disk has: this one is "full"
    t0 = time.perf_counter()
    try:
        code = main([str(a) for a in argv[command]])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "the file system is full" in err and "MiB free" in err, err
    assert not out.exists() and time.perf_counter() - t0 < 20
    out.mkdir()  # an existing (empty) directory too
    try:
        code = main([str(a) for a in argv[command]])
    except SystemExit as e:
        code = e.code
    assert code == 2 and "the file system is full" in capsys.readouterr().err
    assert not any(out.iterdir())


def test_what_a_killed_writer_left_is_recovered_and_a_live_writers_temporaries_are_kept(tmp_path):
    from speechkeep.io import sweep_stale

    dead = subprocess.Popen(["true"])
    dead.wait()
    d = tmp_path / "run"
    d.mkdir()
    # killed between the two renames that replace checkpoint/: the old one is aside, the new one a temporary
    old = d / f".checkpoint.old-{dead.pid}"
    old.mkdir()
    (old / "progress.json").write_text('{"step": 2}')
    new = d / f".checkpoint.tmp-{dead.pid}-x1" / "checkpoint"
    new.mkdir(parents=True)
    (new / "progress.json").write_text('{"step": 4}')
    # killed while writing a file; and a temporary of a live process (this one), which is kept
    (d / f".metrics.json.tmp-{dead.pid}-y2").write_text("half")
    (d / f".summary.json.tmp-{os.getpid()}-z3").write_text("in progress")
    # a directory moved aside and the new one already in place, part of the old entries not moved back yet
    (d / "model").mkdir()
    (d / "model" / "a.safetensors").write_text("new")
    aside = d / f".model.old-{dead.pid}"
    aside.mkdir()
    (aside / "a.safetensors").write_text("old")
    (aside / "notes.txt").write_text("kept")
    assert sweep_stale(d) == 4
    assert json.loads((d / "checkpoint" / "progress.json").read_text()) == {"step": 2}  # the last complete one
    assert (d / "model" / "a.safetensors").read_text() == "new" and (d / "model" / "notes.txt").read_text() == "kept"
    assert sorted(p.name for p in d.iterdir()) == sorted(["checkpoint", "model", f".summary.json.tmp-{os.getpid()}-z3"])
