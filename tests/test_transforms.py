"""Recorded model transforms beyond LoRA: a structural change that alters the LLM's depth (an
inserted Transformer block, every layer_idx and num_hidden_layers updated) is saved with the model
and re-applied on load, so the reloaded model has the block and gives identical logits."""

import copy
import json

import pytest
import torch

from speechkeep.errors import DataError
from speechkeep.models.speech_llm import Query, SpeechLLM
from speechkeep.models.transforms import TRANSFORMS, Transform, register_transform


def insert_block(llm, settings):
    """A copy of block ``after`` inserted right after it (a depth up-scaling step)."""
    layers = llm.model.layers
    layers.insert(settings["after"] + 1, copy.deepcopy(layers[settings["after"]]))
    for i, layer in enumerate(layers):
        layer.self_attn.layer_idx = i
    llm.config.num_hidden_layers = len(layers)
    return llm


@pytest.fixture
def inserted_block():
    register_transform(Transform("test_insert_block", insert_block,
                                 owns=lambda key, s: f".layers.{s['after'] + 1}." in key))
    yield
    TRANSFORMS.pop("test_insert_block", None)


def _outputs(m, tone):
    with torch.no_grad():
        return [m.logits(m.prepare([Query(text="What is the capital of France?")])),
                m.logits(m.prepare([Query(audio=tone, instruction="Transcribe.")]))]


def test_an_inserted_block_is_recorded_saved_and_reapplied(inserted_block, tiny_speech_llm_factory, tone, tmp_path):
    from safetensors.torch import load_file

    from speechkeep.importance.summary import summarize
    from speechkeep.importance.taylor import compute_importance

    m = tiny_speech_llm_factory()
    m.apply_transform("test_insert_block", {"after": 0})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.llm.model.layers[1].parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    assert m.llm.config.num_hidden_layers == 3 and [l.self_attn.layer_idx for l in m.llm.model.layers] == [0, 1, 2]
    m.eval()
    m.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "speechkeep.json").read_text())
    assert meta["llm_format"] == "transformed" and meta["llm_weights"] == "transforms"
    assert meta["transforms"] == [{"name": "test_insert_block", "settings": {"after": 0}}]
    saved = load_file(str(tmp_path / "m" / "llm.safetensors"))
    assert saved and all(".layers.1." in k for k in saved)  # only the new block: the base LLM is referenced

    again = SpeechLLM.from_pretrained(tmp_path / "m")
    assert again.llm.config.num_hidden_layers == 3 and len(again.llm.model.layers) == 3
    assert again.transforms == meta["transforms"]
    for a, b in zip(_outputs(again, tone), _outputs(m, tone)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    res = compute_importance(again, [[Query(text="Name a color.", response="Blue.")]], progress=False)
    assert summarize(res.scores)["n_layers"] == 3


def test_a_saved_model_naming_an_unknown_transform_is_a_data_error(inserted_block, tiny_speech_llm_factory, tmp_path):
    m = tiny_speech_llm_factory()
    m.apply_transform("test_insert_block", {"after": 0})
    m.save_pretrained(tmp_path / "m")
    TRANSFORMS.pop("test_insert_block")
    with pytest.raises(DataError, match="needs the transform 'test_insert_block', which no installed strategy provides"):
        SpeechLLM.from_pretrained(tmp_path / "m")


def test_a_transform_name_is_registered_once():
    import speechkeep.strategies  # noqa: F401  (registers 'lora')

    with pytest.raises(ValueError, match="'lora' is already registered"):
        register_transform(Transform("lora", insert_block))
