"""SpeechLLM on tiny random models: splicing, labels, the text-only invariant, generation, save/load."""

import pytest
import torch

from speechkeep.models.speech_llm import IGNORE_INDEX, Query, SpeechLLM


@pytest.fixture(scope="module")
def model(tiny_speech_llm_factory):
    return tiny_speech_llm_factory()


def test_text_only_query_gives_base_llm_logits(model):
    q = Query(text="What is the capital of France?", response="Paris.")
    ids = model.chat.text_prompt_ids(q.text) + model.chat.response_ids(q.response)
    ref = model.llm(torch.tensor([ids])).logits
    torch.testing.assert_close(model.logits(model.prepare([q])), ref)


def test_text_rows_unchanged_by_speech_rows_in_the_batch(model, tone):
    qt = Query(text="Who wrote Hamlet?", response="Shakespeare.")
    alone = model.logits(model.prepare([qt]))
    mixed = model.logits(model.prepare([qt, Query(audio=tone, response="A long answer with many words in it.")]))
    torch.testing.assert_close(mixed[0, : alone.shape[1]], alone[0])


def test_speech_is_spliced_at_the_placeholder_and_labels_cover_response_and_eot(model, tone):
    q = Query(audio=tone, response="Paris.")
    b = model.prepare([q])
    before, after = model.chat.speech_prompt_ids()
    n_speech = b.num_speech_tokens[0]
    frames = model.encoder.encode([tone])[0].shape[0]
    assert n_speech == frames // model.config.adaptor.stack_frames
    resp = model.chat.response_ids("Paris.")
    assert resp[-1] == model.chat.end_of_turn_id
    assert b.inputs_embeds.shape[1] == len(before) + n_speech + len(after) + len(resp)
    emb = model.llm.get_input_embeddings()
    torch.testing.assert_close(b.inputs_embeds[0, : len(before)], emb(torch.tensor(before)))
    sp = slice(len(before), len(before) + n_speech)
    torch.testing.assert_close(b.inputs_embeds[0, sp], model.adaptor([model.encoder.encode([tone])[0]])[0])
    labels = b.labels[0]
    assert (labels[: -len(resp)] == IGNORE_INDEX).all()
    assert labels[-len(resp):].tolist() == resp


def test_loss_matches_full_logit_cross_entropy(model, tone):
    qs = [Query(text="Name a color.", response="Blue."), Query(audio=tone, response="Green is a color too.")]
    b = model.prepare(qs)
    loss, n = model.loss(b)
    logits = model.logits(b)[:, :-1]
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), b.labels[:, 1:].reshape(-1),
                                            ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, ref)
    assert n == int((b.labels != IGNORE_INDEX).sum())


def test_all_labels_masked_is_a_clear_error(model):
    from speechkeep.errors import SpeechkeepError

    with pytest.raises(SpeechkeepError, match="needs queries with a response"):
        model.loss(model.prepare([Query(text="hi")]))
    b = model.prepare([Query(text="hi", response="x")])
    b.labels.fill_(IGNORE_INDEX)
    with pytest.raises(SpeechkeepError, match="every label is masked"):
        model.loss(b)


def test_batched_generation_matches_single(model, tone):
    qs = [Query(text="What is two plus two?"), Query(audio=tone), Query(text="Hi")]
    batched = model.generate(qs, max_new_tokens=6)
    single = [model.generate([q], max_new_tokens=6)[0] for q in qs]
    assert batched == single


def test_text_generation_matches_plain_transformers(model):
    q = "Tell me a story."
    ids = torch.tensor([model.chat.text_prompt_ids(q)])
    out = model.llm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             eos_token_id=model.chat.stop_ids, pad_token_id=model.chat.stop_ids[0])
    ref = model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert model.generate([Query(text=q)], max_new_tokens=6) == [ref]


def test_llm_frozen_encoder_frozen_adaptor_trainable(model):
    assert not any(p.requires_grad for p in model.llm.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.adaptor.parameters())


def _outputs(m, tone):
    return m.logits(m.prepare([Query(audio=tone, response="ok"), Query(text="hello", response="hi")]))


def test_save_load_reference_format(model, tone, tmp_path):
    torch.nn.init.normal_(model.adaptor.proj[2].weight)
    model.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / "llm").exists()  # frozen LLM is referenced by spec, not copied
    again = SpeechLLM.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(_outputs(again, tone), _outputs(model, tone))


def test_save_load_full_llm_is_plain_transformers(tiny_speech_llm_factory, tone, tmp_path):
    from transformers import AutoModelForCausalLM

    m = tiny_speech_llm_factory()
    with torch.no_grad():
        m.llm.model.layers[0].mlp.down_proj.weight.add_(0.5)
    for p in m.llm.parameters():
        p.requires_grad_(True)
    m.save_pretrained(tmp_path / "m")
    again = SpeechLLM.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(_outputs(again, tone), _outputs(m, tone))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m" / "llm")
    torch.testing.assert_close(plain.model.layers[0].mlp.down_proj.weight, m.llm.model.layers[0].mlp.down_proj.weight)


def test_save_load_peft_adapter(tiny_speech_llm_factory, tone, tmp_path):
    from peft import LoraConfig, get_peft_model

    m = tiny_speech_llm_factory()
    m.llm = get_peft_model(m.llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    m.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "llm_adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "m" / "llm").exists()
    again = SpeechLLM.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(_outputs(again, tone), _outputs(m, tone))


def test_save_is_atomic(model, tone, tmp_path, monkeypatch):
    target = tmp_path / "m"
    model.save_pretrained(target)
    before = sorted(p.name for p in target.iterdir())

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(RuntimeError):
        model.save_pretrained(target)
    assert sorted(p.name for p in target.iterdir()) == before
    torch.testing.assert_close(_outputs(SpeechLLM.from_pretrained(target), tone), _outputs(model, tone))


def test_shared_prompt_prefix_gives_identical_logits_and_gradients(tiny_speech_llm_factory, tone):
    m = tiny_speech_llm_factory()
    qs = [Query(audio=tone, response="Paris is the capital."), Query(text="Who wrote Hamlet?", response="Shakespeare."),
          Query(audio=tone[:8000], response="Blue.")]
    b = m.prepare(qs)
    before, _ = m.chat.speech_prompt_ids()
    assert b.shared_prefix == len(before)  # system prompt + start of the user turn
    for p in m.llm.parameters():
        p.requires_grad_(True)
    results = []
    for share in (True, False):
        m.share_prefix = share
        m.zero_grad(set_to_none=True)
        b = m.prepare(qs)
        with torch.no_grad():
            logits = m.logits(b)
        loss, _ = m.loss(b)
        loss.backward()
        results.append((logits.detach(), loss.detach(), m.llm.model.layers[0].self_attn.q_proj.weight.grad.clone(),
                        m.adaptor.proj[0].weight.grad.clone()))
    for a, c in zip(*results):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)
