"""Training on tiny random models: trainable parameters per strategy, learning, exact resume."""

from dataclasses import dataclass

import pytest
import torch

from speechkeep.config import load_config
from speechkeep.errors import ConfigError
from speechkeep.train.config import TrainConfig
from speechkeep.train.data import epoch_batches, examples_from_rows
from speechkeep.train.loop import train


@dataclass
class Row:
    id: str
    text: str
    response: str
    audio: str
    duration: float
    split: str = "train"


ROWS = [Row(f"q{i}", f"question number {i} about thing {i % 3}", f"answer {i % 3} is right.", f"a{i}.wav", 1.0 + (i % 4) * 0.3)
        for i in range(12)]


def fake_features(paths):
    """Deterministic stand-in encoder frames per path (tiny-model tests only)."""
    out = []
    for p in paths:
        g = torch.Generator().manual_seed(int(p[1:-4]))
        out.append(torch.randn(20 + int(p[1:-4]) % 4 * 5, 16, generator=g))
    return out


def cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path, **over):
    ov = [f"model.llm={tiny_llm_dir}", f"model.speech_encoder={tiny_whisper_dir}", f"output_dir={tmp_path}",
          "data.batch_size=4", "max_steps=6", "save_every=3", "log_every=1", "optim.lr=3e-3", "optim.warmup_ratio=0",
          "model.adaptor.hidden_size=32"]
    ov += [f"{k}={v}" for k, v in over.items()]
    return load_config(TrainConfig, None, ov)


@pytest.mark.parametrize("strategy, expect", [
    ("adaptor", lambda m, a, llm: a),
    ("full", lambda m, a, llm: a + llm),
    ("lora", None),
])
def test_trainable_parameter_count_per_strategy(strategy, expect, tiny_llm_dir, tiny_whisper_dir, tmp_path):
    cfg = cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path, strategy=strategy, max_steps=1, **{"lora.r": 4})
    res = train(cfg, rows=ROWS, features=fake_features, progress=False)
    # adaptor: (5*16*32 + 32) + (32*32 + 32); tiny LLM: all weights (tied embeddings counted once)
    n_adaptor = 5 * 16 * 32 + 32 + 32 * 32 + 32
    from transformers import AutoModelForCausalLM

    n_llm = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_llm_dir).parameters())
    if expect is not None:
        assert res.trainable_params == expect(None, n_adaptor, n_llm)
    else:
        # LoRA r=4 on 7 projections x 2 layers: r * (in + out) each
        h, kv, inter = 32, 16, 64
        per_layer = 4 * ((h + h) + (h + kv) * 2 + (h + h) + (h + inter) * 2 + (inter + h))
        assert res.trainable_params == n_adaptor + 2 * per_layer
    assert (tmp_path / "model" / "speechkeep.json").exists()
    assert (tmp_path / "metrics.csv").read_text().count("\n") >= 2


def test_loss_decreases_and_resume_is_exact(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    full = train(cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path / "a", strategy="lora", **{"lora.r": 4}),
                 rows=ROWS, features=fake_features, progress=False)
    first = float((tmp_path / "a" / "metrics.csv").read_text().splitlines()[1].split(",")[1])
    assert full.final_loss < first
    # killed during step 4 (a checkpoint was written at step 3), then resumed to 6
    calls = {"n": 0}

    def dying_features(paths):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated kill")
        return fake_features(paths)

    cfg_b = cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path / "b", strategy="lora", **{"lora.r": 4})
    with pytest.raises(KeyboardInterrupt):
        train(cfg_b, rows=ROWS, features=dying_features, progress=False)
    assert (tmp_path / "b" / "checkpoint" / "trainable.safetensors").exists()
    with pytest.raises(ConfigError, match="resume=true"):
        train(cfg_b, rows=ROWS, features=fake_features, progress=False)
    resumed = train(cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path / "b", strategy="lora", resume="true", **{"lora.r": 4}),
                    rows=ROWS, features=fake_features, progress=False)
    assert resumed.steps == 6
    assert resumed.final_loss == pytest.approx(full.final_loss, rel=1e-5)


def test_length_grouping_and_mixture():
    per_task = examples_from_rows(ROWS, {"qa": 1.0, "asr": 0.5})
    assert len(per_task["qa"]) == 12 and len(per_task["asr"]) == 12
    batches = epoch_batches(per_task, {"qa": 1.0, "asr": 0.5}, 3, seed=0, epoch=0)
    flat = [e for b in batches for e in b]
    assert sum(e.task == "asr" for e in flat) == 6 and sum(e.task == "qa" for e in flat) == 12
    assert batches == epoch_batches(per_task, {"qa": 1.0, "asr": 0.5}, 3, seed=0, epoch=0)
    assert batches != epoch_batches(per_task, {"qa": 1.0, "asr": 0.5}, 3, seed=0, epoch=1)
    with pytest.raises(ConfigError, match="unknown task 'tts'"):
        examples_from_rows(ROWS, {"tts": 1.0})
