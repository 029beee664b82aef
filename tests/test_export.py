"""`speechkeep export`: an up-scaled model gives back its exact base LLM; LoRA merges into a plain Hugging
Face LLM with the same logits; exports that cannot be plain are usage errors (exit 2)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from speechkeep.cli import main
from speechkeep.models.persistence import load_speech_llm
from speechkeep.models.speech_llm import Query
from speechkeep.train.loop import train
from test_train import ROWS, cfg_for, fake_features


def _trained(tiny_llm_dir, tiny_whisper_dir, run, strategy, **over):
    cfg = cfg_for(tiny_llm_dir, tiny_whisper_dir, run, strategy=strategy, max_steps=2, save_every=2, **over)
    train(cfg, rows=ROWS, features=fake_features, progress=False)
    return run


@pytest.mark.parametrize("block", ["transformer", "ebranchformer"])
def test_drop_upscale_gives_back_the_exact_base_llm(block, tiny_llm_dir, tiny_whisper_dir, tmp_path):
    run = _trained(tiny_llm_dir, tiny_whisper_dir, tmp_path / "run", "upscale", **{"upscale.block": block})
    model, _ = load_speech_llm(str(run))
    assert [t["name"] for t in model.transforms] == ["upscale"]
    base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir).state_dict()

    out = tmp_path / "plain"
    assert main(["export", f"model={run}", f"out={out}", "drop_upscale=true", "llm_only=true"]) == 0
    plain = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert plain.keys() == base.keys()
    for k in base:
        torch.testing.assert_close(plain[k], base[k], rtol=0, atol=0, msg=k)

    # as a SpeechLLM: no transform left, the trained adaptor kept
    sl = tmp_path / "speechllm"
    assert main(["export", f"model={run}", f"out={sl}", "drop_upscale=true"]) == 0
    again, trained = load_speech_llm(str(sl))
    assert trained and again.transforms == []
    for k, v in model.adaptor.state_dict().items():
        torch.testing.assert_close(again.adaptor.state_dict()[k], v, rtol=0, atol=0)


def test_merge_lora_writes_a_plain_llm_with_the_same_logits(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    run = _trained(tiny_llm_dir, tiny_whisper_dir, tmp_path / "run", "lora", **{"lora.r": 4})
    model, _ = load_speech_llm(str(run))
    model.eval()
    ids = torch.tensor([[5, 17, 9, 33, 2, 41]])
    query = [Query(text="what is the capital of france")]
    with torch.no_grad():
        want = model.logits(model.prepare(query))
        want_llm = model.llm(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir).eval()(ids).logits
    assert (want_llm - base).abs().max() > 1e-4  # the adapters trained: merging is not a no-op

    out = tmp_path / "merged"
    assert main(["export", f"model={run}", f"out={out}", "merge_lora=true"]) == 0
    merged, _ = load_speech_llm(str(out))
    merged.eval()
    assert merged.transforms == [] and not merged.is_peft()
    with torch.no_grad():
        torch.testing.assert_close(merged.logits(merged.prepare(query)), want, rtol=1e-5, atol=1e-5)

    plain_dir = tmp_path / "plain"
    assert main(["export", f"model={run}", f"out={plain_dir}", "merge_lora=true", "llm_only=true"]) == 0
    plain = AutoModelForCausalLM.from_pretrained(plain_dir).eval()
    assert not hasattr(plain, "peft_config")
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, want_llm, rtol=1e-5, atol=1e-5)


def test_exports_that_cannot_be_plain_are_usage_errors(tiny_llm_dir, tiny_whisper_dir, tmp_path, capsys):
    run = _trained(tiny_llm_dir, tiny_whisper_dir, tmp_path / "run", "lora", **{"lora.r": 4})
    assert main(["export", f"model={run}", f"out={tmp_path / 'a'}", "drop_upscale=true"]) == 2
    assert "no up-scaled blocks" in capsys.readouterr().err
    assert main(["export", f"model={run}", f"out={tmp_path / 'b'}", "llm_only=true"]) == 2
    assert "merge_lora=true" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # checked before anything was written
