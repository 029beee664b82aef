"""One place builds a SpeechLLM: models.builder.build_speech_llm (issue 13)."""

import ast
from pathlib import Path

import pytest
import torch

import speechkeep

PKG = Path(speechkeep.__file__).parent
PRIMITIVES = {"from_parts", "from_pretrained", "build"}
ALLOWED = {"models/builder.py", "models/speech_llm.py", "models/persistence.py"}


def test_only_the_builder_assembles_a_speech_llm():
    """Before issue 13, train.loop, models.persistence.load_speech_llm, align.ctc and cli each assembled one."""
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if rel in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PRIMITIVES
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "SpeechLLM"):
                bad.append(f"{rel}:{node.lineno} SpeechLLM.{node.func.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_parts":
                bad.append(f"{rel}:{node.lineno} from_parts")
            if isinstance(node, ast.ImportFrom) and node.module == "speechkeep.models.persistence":
                if any(a.name == "load" for a in node.names):
                    bad.append(f"{rel}:{node.lineno} persistence.load")
    assert not bad, bad


def test_train_and_load_go_through_the_builder(monkeypatch, tiny_llm_dir, tiny_whisper_dir, tmp_path):
    import speechkeep.models.builder as builder
    from speechkeep.config import load_config
    from speechkeep.models.persistence import load_speech_llm
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import build_model

    calls = []
    real = builder.build_speech_llm

    def spy(*a, **k):
        calls.append(k.get("init_from"))
        return real(*a, **k)

    monkeypatch.setattr(builder, "build_speech_llm", spy)
    cfg = load_config(TrainConfig, None, [f"model.llm={tiny_llm_dir}", f"model.speech_encoder={tiny_whisper_dir}",
                                          "init_from=none", "model.adaptor.hidden_size=8", "seed=4"])
    fresh = build_model(cfg)
    fresh.save_pretrained(tmp_path / "m")
    again, trained = load_speech_llm(str(tmp_path / "m"))
    assert calls == [None, str(tmp_path / "m")] and trained
    # the seed decides the new adaptor, and the saved one reloads as is
    other, _ = real(cfg.model, seed=4)
    for k, v in fresh.adaptor.state_dict().items():
        assert torch.equal(v, other.adaptor.state_dict()[k]) and torch.equal(v, again.adaptor.state_dict()[k])
    cfg.init_from = str(tiny_llm_dir)  # a plain LLM has no trained adaptor to start from
    from speechkeep.errors import ConfigError

    with pytest.raises(ConfigError, match="not a saved SpeechLLM"):
        build_model(cfg)
