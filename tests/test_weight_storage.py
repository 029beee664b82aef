"""Shipped adaptor storage: fp16, or int8 with a scale per row, loaded back exactly as round_trip says."""

import json

import pytest
import torch


def _state():
    g = torch.Generator().manual_seed(0)
    return {"proj.0.weight": torch.randn(128, 64, generator=g), "proj.0.bias": torch.randn(128, generator=g),
            "blank": torch.randn(1, 8, generator=g), "ctc_vocab": torch.arange(5)}


def test_int8_rowwise_round_trip_is_what_a_load_gives_and_within_half_a_step(tmp_path):
    from safetensors.torch import save_file

    from speechkeep.models.weight_storage import SCALE_SUFFIX, encode, load_adaptor_state, round_trip

    state = _state()
    tensors, meta = encode(state, "int8")
    assert tensors["proj.0.weight"].dtype == torch.int8 and tensors["proj.0.weight" + SCALE_SUFFIX].shape == (128, 1)
    assert tensors["proj.0.bias"].dtype == torch.float16 and tensors["blank"].dtype == torch.float16  # small: fp16
    assert torch.equal(tensors["ctc_vocab"], state["ctc_vocab"])
    save_file(tensors, str(tmp_path / "a.safetensors"), metadata=meta)
    loaded = load_adaptor_state(tmp_path / "a.safetensors")
    expected = round_trip(state, "int8")
    assert loaded.keys() == state.keys()
    for k in state:
        assert torch.equal(loaded[k], expected[k]), k
    w = state["proj.0.weight"]
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert ((loaded["proj.0.weight"] - w).abs() <= step / 2 + 1e-7).all()
    assert not torch.equal(loaded["proj.0.weight"], w)
    fp16, meta16 = encode(state, "fp16")
    save_file(fp16, str(tmp_path / "h.safetensors"), metadata=meta16)
    assert torch.equal(load_adaptor_state(tmp_path / "h.safetensors")["proj.0.weight"], w.half().float())
    assert (tmp_path / "a.safetensors").stat().st_size < 0.6 * (tmp_path / "h.safetensors").stat().st_size


def test_unknown_storage_is_refused_naming_the_file(tmp_path):
    from safetensors.torch import save_file

    from speechkeep.errors import DataError
    from speechkeep.models.weight_storage import encode, load_adaptor_state

    with pytest.raises(ValueError, match="storage must be one of"):
        encode(_state(), "int4")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"), metadata={"speechkeep_storage": "int3"})
    with pytest.raises(DataError, match=r"x.safetensors: unknown adaptor storage 'int3'"):
        load_adaptor_state(tmp_path / "x.safetensors")


def test_a_speech_llm_exported_int8_loads_the_round_trip_weights(tmp_path, tiny_speech_llm_factory):
    """A saved model whose adaptor file is stored int8 loads (persistence decodes it) with exactly the
    round-trip weights, and a measurement of it is recognized as of the shipped weights."""
    from safetensors.torch import load_file, save_file

    from speechkeep.align.measure import adaptor_fingerprint
    from speechkeep.align.recipe import read_measurement
    from speechkeep.models.speech_llm import SpeechLLM
    from speechkeep.models.weight_storage import encode, round_trip

    m = tiny_speech_llm_factory()
    m.save_pretrained(tmp_path / "trained")
    trained = load_file(str(tmp_path / "trained" / "adaptor.safetensors"))
    assert any(v.numel() >= 4096 and v.dim() == 2 for v in trained.values())  # something is quantized
    import shutil

    shutil.copytree(tmp_path / "trained", tmp_path / "shipped")
    tensors, meta = encode(trained, "int8")
    save_file(tensors, str(tmp_path / "shipped" / "adaptor.safetensors"), metadata=meta)
    shipped = SpeechLLM.from_pretrained(tmp_path / "shipped")
    expected = round_trip(trained, "int8")
    got = shipped.adaptor.state_dict()
    for k in expected:
        assert torch.equal(got[k].float() if got[k].is_floating_point() else got[k], expected[k]), k
    fp = adaptor_fingerprint(shipped.adaptor.state_dict())
    res = {"model": "x", "voice": "v", "ctc_vocab_size": 1, "ctc_emit": "soft", "adaptor_fingerprint": fp,
           "adaptor": {}, "clean": {"n": 1, "ctc_wer": 0.1, "whisper_wer": 0.1, "token_coverage": 1.0,
                                    "unwritable_words": []},
           "bars": {"clean_ctc_wer": {"passed": True, "bar": 0.15}}, "all_passed": False, "seconds": 0.0}
    (tmp_path / "m.json").write_text(json.dumps(res))
    assert read_measurement(tmp_path / "m.json", tmp_path / "trained", "int8")["measured_weights"] == "shipped"
    from speechkeep.errors import UsageError

    with pytest.raises(UsageError, match="other adaptor weights"):  # not of the fp16 shipping of these weights
        read_measurement(tmp_path / "m.json", tmp_path / "trained", "fp16")
