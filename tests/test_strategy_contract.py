"""The contract of every registered strategy (future ones are covered automatically): build a tiny
SpeechLLM, train 2 steps, save; reload in a fresh process (no strategy imported beforehand) and get
identical logits on text and speech input; `importance` and `eval` run on the reloaded model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import speechkeep
from speechkeep.strategies import STRATEGIES
from speechkeep.train.loop import train
from test_train import ROWS, cfg_for

ROOT = Path(speechkeep.__file__).resolve().parents[1]

RELOAD = r"""
import sys, torch
from speechkeep.models.persistence import load_speech_llm
from speechkeep.models.speech_llm import Query
assert "speechkeep.strategies" not in sys.modules  # transforms are found through the registry's plugin discovery
torch.set_flush_denormal(True)  # the numeric mode train() left the test process in
torch.set_num_threads(2)
inputs = torch.load(sys.argv[2])
model, trained = load_speech_llm(sys.argv[1])
assert trained
model.eval()
with torch.no_grad():
    out = [model.logits(model.prepare([Query(text=inputs["text"])])),
           model.logits(model.prepare([Query(speech_features=inputs["speech"], instruction="Transcribe.")]))]
torch.save(out, sys.argv[3])
"""


def features(paths):
    """Deterministic stand-in encoder frames per audio file name (tiny Whisper width 16)."""
    out = []
    for p in paths:
        i = int(Path(p).name[1:-4])
        g = torch.Generator().manual_seed(i)
        out.append(torch.randn(20 + i % 4 * 5, 16, generator=g))
    return out


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from speechkeep.data.manifest import ManifestRow, write_manifest

    d = tmp_path_factory.mktemp("contract_data")
    rows = [ManifestRow(id=r.id, text=r.text, audio=str(d / r.audio), sample_rate=16000, duration=r.duration, voice="v",
                        answers=[r.response.split()[1]], response=r.response) for r in ROWS]
    return write_manifest(d / "manifest.jsonl", rows)


NEEDS = {"ctc_align": {"model.adaptor.output": "ctc", "model.adaptor.ctc_vocab_size": 1, "model.adaptor.stack_frames": 1,
                       "data.tasks": "{asr: 1}"}}
"""Config a strategy cannot train without (the alignment objective trains a CTC head on transcripts)."""


# Extra settings a strategy is also run with (one case each, beside its defaults).
VARIANTS = {"anchor": [{"anchor.student": "layer_lr"}], "lora": [{"lora.placement": "importance", "lora.r": "2"}],
            "upscale": [{"upscale.block": "ebranchformer"}, {"upscale.speech_only": "true", "upscale.placement": "bottom"}]}
CASES = [(n, {}) for n in sorted(STRATEGIES)] + [(n, v) for n in sorted(VARIANTS) if n in STRATEGIES for v in VARIANTS[n]]


@pytest.mark.parametrize("name, extra", CASES, ids=[n + "".join(f"-{v}" for v in e.values()) for n, e in CASES])
def test_every_strategy_trains_saves_and_reloads_identically(name, extra, manifest, tiny_llm_dir, tiny_whisper_dir, tmp_path):
    from speechkeep.evaluate.run import EvalConfig, evaluate, perplexity
    from speechkeep.importance.runs import batched
    from speechkeep.importance.summary import summarize
    from speechkeep.importance.taylor import compute_importance
    from speechkeep.models.persistence import load_speech_llm
    from speechkeep.models.speech_llm import Query

    run = tmp_path / "run"
    cfg = cfg_for(tiny_llm_dir, tiny_whisper_dir, run, strategy=name, max_steps=2, save_every=2,
                  **{"data.train": manifest, "lora.r": 4, **NEEDS.get(name, {}), **extra})
    res = train(cfg, features=features, progress=False)
    assert res.steps == 2 and res.model is not None
    trained = res.model.eval()
    inputs = {"text": "What is the capital of France?", "speech": features(["a5.wav"])[0]}
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expect = [trained.logits(trained.prepare([Query(text=inputs["text"])])),
                  trained.logits(trained.prepare([Query(speech_features=inputs["speech"], instruction="Transcribe.")]))]

    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(run), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    for g, e in zip(got, expect):
        torch.testing.assert_close(g, e, rtol=0, atol=0)

    # the reloaded model (this process) runs importance and eval
    again, _ = load_speech_llm(str(run))
    qs = [Query(text=r.text, response=r.response) for r in ROWS[:4]]
    qs += [Query(speech_features=f, response=r.response) for f, r in zip(features([r.audio for r in ROWS[:4]]), ROWS[:4])]
    imp = compute_importance(again, batched(qs, 4), include_adaptor=True, progress=False)
    assert imp.scores and all(torch.isfinite(t).all() for t in imp.scores.values())
    assert summarize(imp.scores, imp.meta.get("layer_origin"))["n_layers"] == 2  # an up-scaled model's inserted blocks apart
    assert any(float(t.sum()) > 0 for n, t in imp.scores.items() if ".layers.1." in n)
    assert 1.0 < perplexity(again, qs, batch_size=4) < float("inf")
    metrics = evaluate(EvalConfig(model=str(run), data=str(manifest), out=str(tmp_path / "eval"), tasks=["t2t"],
                                  max_new_tokens=2, batch_size=4))
    preds = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert metrics["t2t"]["n"] == len(preds) == len(ROWS)
    assert metrics["t2t"]["correct"] == sum(p["correct"] for p in preds)
    saved = json.loads((run / "model" / "speechkeep.json").read_text())
    if name == "ctc_align":  # the CTC head got its vocabulary from the transcripts, and it is saved
        assert saved["config"]["adaptor"]["ctc_vocab_size"] == int(again.adaptor.ctc_vocab.numel()) > 1
        assert again.adaptor.has_ctc_vocabulary()
    if name == "lora" and not extra:  # unmerged LoRA is a recorded transform, its weights only (not the base LLM's)
        assert saved["transforms"] == [{"name": "lora", "settings": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                                                                      "target_modules": cfg.lora.target_modules}}]
    if name == "lora":
        assert saved["llm_weights"] == "transforms"
    if extra.get("lora.placement") == "importance":  # per-block ranks are part of the recorded transform
        settings = saved["transforms"][0]["settings"]
        assert sum(settings["rank_pattern"].values()) == 2 * 2 * 7 and len(settings["target_modules"]) <= 14

