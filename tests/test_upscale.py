"""strategy=upscale (seed 003): inserted blocks start as the identity, every layer index and per-layer
attribute is renumbered so KV-cached generation equals full recomputation, the E-Branchformer block is
causal, speech_only leaves text positions alone, and importance/layer_lr map an up-scaled LLM's blocks
to their original index. Tiny random Llama and Gemma3 models, plus the real bundled SmolLM2."""

import copy

import pytest
import torch
from transformers import DynamicCache

from speechkeep.models.blocks.ebranchformer import EBranchformerBlock
from speechkeep.models.speech_llm import Query
from speechkeep.models.upscaling import (
    UpscaledBlock, default_count, drop_upscale, insertion_points, layer_origin, new_block_indices, upscale,
)

BLOCKS = ["transformer", "ebranchformer"]


def tiny_llama(n_layers=4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=8, sliding_window=4,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"])
    return Gemma3ForCausalLM(cfg).eval()


ARCHS = {"llama": tiny_llama, "gemma3": tiny_gemma3}


def perturb(llm, scale=0.3, seed=1):
    """Move the new blocks away from the identity (so cache/causality tests are meaningful)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in llm.get_decoder().layers:
            if isinstance(layer, UpscaledBlock):
                for p in layer.parameters():
                    p.add_(scale * torch.randn(p.shape, generator=g))


def test_default_count_and_placements():
    assert default_count(30) == 8 and default_count(2) == 1 and default_count(18) == 5 and default_count(1) == 1
    assert insertion_points(30, 8, "interleaved") == [3, 7, 10, 14, 18, 22, 25, 29]
    assert insertion_points(4, 2, "top") == [3, 3]
    assert insertion_points(4, 2, "bottom") == [-1, -1]
    assert insertion_points(4, 2, "middle") == [1, 1]
    assert insertion_points(4, 3, "sandwich") == [-1, 3, 3]
    assert new_block_indices({"after": [-1, 3, 3]}) == [0, 5, 6]
    assert new_block_indices({"after": [1, 3]}) == [2, 5]


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("block", BLOCKS)
def test_identity_renumbering_and_cached_generation(arch, block):
    llm = ARCHS[arch]()
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = llm(ids).logits
    types = list(getattr(llm.config, "layer_types", []) or [])
    upscale(llm, {"block": block, "after": [0, 3]})
    layers = llm.model.layers
    assert llm.config.num_hidden_layers == len(layers) == 6
    assert layer_origin(llm) == [0, None, 1, 2, 3, None]
    assert [l.self_attn.layer_idx for l in layers] == list(range(6))
    assert layers[1].block.self_attn.config is llm.config  # copies share the LLM's config
    if arch == "gemma3":  # a new block takes its neighbour's sliding/full type (and its attention is that type)
        assert llm.config.layer_types == [types[0], types[0], types[1], types[2], types[3], types[3]]
        assert [l.self_attn.is_sliding for l in layers] == [t == "sliding_attention" for t in llm.config.layer_types]
    assert len(DynamicCache(config=llm.config).layers) == 6
    with torch.no_grad():
        torch.testing.assert_close(llm(ids).logits, base)  # identity initialization

    perturb(llm)
    with torch.no_grad():
        assert (llm(ids).logits - base).abs().max() > 1e-2
        full = llm(ids).logits
        cache = DynamicCache(config=llm.config)
        part = [llm(ids[:, :7], cache=cache, use_cache=True).logits]
        part += [llm(ids[:, 7:8], cache=cache, use_cache=True).logits]
        part += [llm(ids[:, 8:], cache=cache, use_cache=True).logits]
    torch.testing.assert_close(torch.cat(part, 1), full, rtol=1e-5, atol=1e-5)
    a = llm.generate(ids[:1], max_new_tokens=12, do_sample=False, use_cache=True)
    b = llm.generate(ids[:1], max_new_tokens=12, do_sample=False, use_cache=False)
    assert a.shape[1] == 24 and torch.equal(a, b)
    # a static (preallocated) cache, as evaluation uses: the same tokens, on a batch of two
    a = llm.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(a, llm.generate(ids, max_new_tokens=12, do_sample=False, cache_implementation="static"))

    # beam search and batch edits reorder, repeat or select the cache's rows: the blocks' state follows
    with torch.no_grad():
        cache = DynamicCache(config=llm.config)
        llm(ids[:, :8], cache=cache, use_cache=True)
        cache.reorder_cache(torch.tensor([1, 0]))
        step = llm(ids[[1, 0], 8:9], cache=cache, use_cache=True).logits
        torch.testing.assert_close(step, llm(ids[[1, 0], :9]).logits[:, -1:], rtol=1e-5, atol=1e-5)
        cache.batch_repeat_interleave(2)
        step = llm(ids[[1, 1, 0, 0], 9:10], cache=cache, use_cache=True).logits
        torch.testing.assert_close(step, llm(ids[[1, 1, 0, 0], :10]).logits[:, -1:], rtol=1e-5, atol=1e-5)
        cache.batch_select_indices(torch.tensor([2]))
        step = llm(ids[[0], 10:11], cache=cache, use_cache=True).logits
        torch.testing.assert_close(step, llm(ids[[0], :11]).logits[:, -1:], rtol=1e-5, atol=1e-5)

    drop_upscale(llm)  # the exact base LLM again
    assert llm.config.num_hidden_layers == 4 and layer_origin(llm) is None
    assert [l.self_attn.layer_idx for l in llm.model.layers] == list(range(4))
    assert list(getattr(llm.config, "layer_types", []) or []) == types
    with torch.no_grad():
        torch.testing.assert_close(llm(ids).logits, base, rtol=0, atol=0)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_ebranchformer_is_causal(arch):
    """Perturbing a later token leaves every earlier output unchanged (both convolutions left-padded)."""
    llm = ARCHS[arch]()
    upscale(llm, {"block": "ebranchformer", "after": [1], "kernel_size": 5})
    perturb(llm)
    block = llm.model.layers[2].block
    assert isinstance(block, EBranchformerBlock)
    ids = torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(0))
    ids2 = ids.clone()
    ids2[0, 10] = (ids[0, 10] + 1) % 100
    with torch.no_grad():
        a, b = llm(ids).logits, llm(ids2).logits
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=0)
    assert (a[:, 10:] - b[:, 10:]).abs().max() > 1e-3
    # the block alone, on hidden states: the same
    x = torch.randn(1, 16, 32)
    y = x.clone()
    y[0, 12] += 1.0
    with torch.no_grad():
        hs = [llm.model(inputs_embeds=t, output_hidden_states=True).hidden_states[3] for t in (x, y)]
    torch.testing.assert_close(hs[0][:, :12], hs[1][:, :12], rtol=0, atol=0)


def test_ebranchformer_ignores_left_padding():
    """Left padding (batched generation) does not leak into the convolutions: a padded row gives the
    unpadded row's logits."""
    llm = tiny_llama()
    upscale(llm, {"block": "ebranchformer", "after": [0, 2]})
    perturb(llm)
    ids = torch.randint(1, 100, (1, 9), generator=torch.Generator().manual_seed(3))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], 1)
    attn = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], 1)
    with torch.no_grad():
        alone = llm(ids).logits
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        both = llm(padded, attention_mask=attn, position_ids=pos).logits
    torch.testing.assert_close(both[:, 4:], alone, rtol=1e-5, atol=1e-5)


def _upscaled_speech_llm(factory, block, **settings):
    m = factory()
    m.apply_transform("upscale", {"block": block, "after": [0, 1], **settings})
    return m


@pytest.mark.parametrize("block", BLOCKS)
def test_speech_llm_identity_and_cached_generation(block, tiny_speech_llm_factory, tone):
    base = tiny_speech_llm_factory().eval()
    m = _upscaled_speech_llm(tiny_speech_llm_factory, block).eval()
    text = Query(text="What is the capital of France?")
    speech = Query(audio=tone, instruction="Transcribe.")
    with torch.no_grad():
        for q in (text, speech):
            torch.testing.assert_close(m.logits(m.prepare([q])), base.logits(base.prepare([q])))
    perturb(m.llm)
    qs = [text, speech, Query(text="Name a color.")]
    cached = m.generate(qs, max_new_tokens=10)
    assert cached == m.generate(qs, max_new_tokens=10, use_cache=False)
    # a static cache (evaluation's) spans its whole length in the attention mask: padding is still found
    assert cached == m.generate(qs, max_new_tokens=10, cache_implementation="static")
    assert cached != base.generate(qs, max_new_tokens=10)
    # beam search reorders the cache every step: the blocks' convolution state must follow its beams
    beams = m.generate(qs, max_new_tokens=10, num_beams=3)
    assert beams == m.generate(qs, max_new_tokens=10, num_beams=3, use_cache=False)
    # a prompt prefix shared by a batch (run once, its cache repeated) gives the per-row logits
    batch = [Query(text="What is the capital of France?", response="Paris."), Query(audio=tone, response="Hello.")]
    with torch.no_grad():
        m.share_prefix = True
        shared = m.hidden_states(m.prepare(batch))
        m.share_prefix = False
        plain = m.hidden_states(m.prepare(batch))
    assert m.prepare(batch).shared_prefix >= 4
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", BLOCKS)
def test_speech_only_leaves_text_positions_unchanged(block, tiny_speech_llm_factory, tone):
    base = tiny_speech_llm_factory().eval()
    m = _upscaled_speech_llm(tiny_speech_llm_factory, block, speech_only=True).eval()
    perturb(m.llm)
    text = Query(text="What is the capital of France?")
    speech = Query(audio=tone, instruction="Transcribe.")
    with torch.no_grad():
        torch.testing.assert_close(m.logits(m.prepare([text])), base.logits(base.prepare([text])), rtol=0, atol=0)
        b = m.prepare([speech])
        assert b.speech_mask is not None and int(b.speech_mask.sum()) == b.num_speech_tokens[0]
        got, ref = m.logits(b), base.logits(base.prepare([speech]))
        first_speech = int(b.speech_mask[0].nonzero()[0])
        # before the speech: the base model's outputs; from the speech on: changed
        torch.testing.assert_close(got[:, :first_speech], ref[:, :first_speech], rtol=0, atol=0)
        assert (got - ref).abs().max() > 1e-3
        # the new block itself: text positions of a spoken query pass through
        layer = m.llm.model.layers[1]
        seen = {}
        h = layer.register_forward_hook(lambda mod, args, out: seen.update(x=args[0], y=out))
        m.logits(b)
        h.remove()
        text_pos = ~b.speech_mask[0]
        torch.testing.assert_close(seen["y"][0, text_pos], seen["x"][0, text_pos], rtol=0, atol=0)
        assert (seen["y"][0, ~text_pos] - seen["x"][0, ~text_pos]).abs().max() > 1e-4
    assert m.generate([text, speech], max_new_tokens=8) == m.generate([text, speech], max_new_tokens=8, use_cache=False)
    assert m.generate([text], max_new_tokens=8) == base.generate([text], max_new_tokens=8)


def test_dropping_the_blocks_saves_the_base_llm(tiny_speech_llm_factory, tone, tmp_path):
    import json

    from speechkeep.models.speech_llm import SpeechLLM
    from speechkeep.models.upscaling import drop_upscale_model

    base = tiny_speech_llm_factory().eval()
    m = _upscaled_speech_llm(tiny_speech_llm_factory, "ebranchformer").eval()
    perturb(m.llm)
    drop_upscale_model(m)
    assert m.transforms == []
    m.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "speechkeep.json").read_text())["llm_format"] == "reference"
    again = SpeechLLM.from_pretrained(tmp_path / "m")
    q = Query(audio=tone, instruction="Transcribe.")
    with torch.no_grad():
        torch.testing.assert_close(again.logits(again.prepare([q])), base.logits(base.prepare([q])), rtol=0, atol=0)


def test_upscale_strategy_trains_only_new_blocks(tiny_llm_dir, tiny_whisper_dir, tmp_path, capsys, caplog):
    from speechkeep.strategies import get_strategy
    from speechkeep.train.config import TrainConfig
    from speechkeep.config import load_config
    from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig

    cfg = load_config(TrainConfig, None, [f"model.llm={tiny_llm_dir}", f"model.speech_encoder={tiny_whisper_dir}",
                                          f"output_dir={tmp_path}", "strategy=upscale", "upscale.block=ebranchformer",
                                          "upscale.placement=top", "upscale.count=2", "upscale.lr=1e-3"])
    m = SpeechLLM.build(SpeechLLMConfig(llm=str(tiny_llm_dir), speech_encoder=str(tiny_whisper_dir)))
    groups = get_strategy("upscale", cfg).setup(m)
    assert [g["name"] for g in groups] == ["adaptor", "upscale"] and groups[1]["lr"] == 1e-3
    assert layer_origin(m.llm) == [0, 1, None, None]
    trainable = {n for n, p in m.llm.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.2.", "model.layers.3.")) for n in trainable)
    assert sum(p.numel() for p in groups[1]["params"]) == sum(p.numel() for n, p in m.llm.named_parameters() if n in trainable)
    printed = capsys.readouterr().out
    from speechkeep.strategies.upscale import lora_params

    assert f"LoRA r=8 would train {lora_params(m.llm, 8):,}, r=16 {lora_params(m.llm, 16):,})" in printed
    assert "2 new ebranchformer blocks at [2, 3] of 4" in printed
    assert m.transforms[0]["settings"]["after"] == [1, 1]

    # starting from that up-scaled model with other upscale.* settings: its own blocks are trained, and the
    # ignored settings are named
    cfg2 = load_config(TrainConfig, None, [f"model.llm={tiny_llm_dir}", f"model.speech_encoder={tiny_whisper_dir}",
                                           f"output_dir={tmp_path}", "strategy=upscale", "upscale.block=transformer",
                                           "upscale.placement=top", "upscale.count=2"])
    import logging

    with caplog.at_level(logging.WARNING, logger="speechkeep.strategies.upscale"):
        groups = get_strategy("upscale", cfg2).setup(m)
    assert layer_origin(m.llm) == [0, 1, None, None] and len(m.transforms) == 1
    assert "2 new ebranchformer blocks" in capsys.readouterr().out
    assert "block: the model's ebranchformer, asked transformer" in caplog.text


def test_importance_of_an_upscaled_model_maps_layers_to_their_original_index(tiny_speech_llm_factory, tmp_path):
    from speechkeep.importance.distribution import compare_runs
    from speechkeep.importance.runs import save_importance
    from speechkeep.importance.taylor import compute_importance

    qs = [[Query(text="Name a color.", response="Blue."), Query(text="What is two plus two?", response="Four.")]]
    base = tiny_speech_llm_factory()
    up = tiny_speech_llm_factory()
    up.apply_transform("upscale", {"block": "transformer", "after": [-1]})  # a block below layer 0: every index shifts
    perturb(up.llm)
    rb, ru = compute_importance(base, qs, progress=False), compute_importance(up, qs, progress=False)
    assert ru.meta["layer_origin"] == [None, 0, 1] and "layer_origin" not in rb.meta
    sb = save_importance(tmp_path / "base", rb.scores, rb.meta)
    su = save_importance(tmp_path / "up", ru.scores, ru.meta)
    assert sb["n_layers"] == su["n_layers"] == 2
    # original layer i of the up-scaled model = block i + 1; its importance lands at index i
    want = [sum(float(t.sum()) for n, t in ru.scores.items() if f"model.layers.{i + 1}." in n) for i in range(2)]
    assert su["per_layer"] == pytest.approx(want)
    assert [b["index"] for b in su["new_blocks"]] == [0] and su["new_blocks"][0]["after_layer"] == -1
    assert su["new_blocks"][0]["total"] == pytest.approx(sum(float(t.sum()) for n, t in ru.scores.items()
                                                             if n.startswith("model.layers.0.")))
    res = compare_runs([str(tmp_path / "base"), str(tmp_path / "up")], ["base", "up"])
    assert len(res["layer_shares"]["up"]) == 2 and 0 <= res["shift"]["up"]["js_divergence"] <= 1
    assert [b["index"] for b in res["new_blocks"]["up"]] == [0]


def test_layer_lr_on_an_upscaled_model(tiny_speech_llm_factory, tiny_llm_dir, tiny_whisper_dir, tmp_path):
    from speechkeep.config import load_config
    from speechkeep.importance.runs import save_importance
    from speechkeep.importance.taylor import compute_importance
    from speechkeep.strategies import get_strategy
    from speechkeep.train.config import TrainConfig

    base = tiny_speech_llm_factory()
    res = compute_importance(base, [[Query(text="Name a color.", response="Blue.")]], progress=False)
    save_importance(tmp_path / "imp", res.scores, res.meta)
    cfg = load_config(TrainConfig, None, [f"model.llm={tiny_llm_dir}", f"model.speech_encoder={tiny_whisper_dir}",
                                          f"output_dir={tmp_path / 'out'}", "strategy=layer_lr", "optim.lr=1e-3",
                                          f"layer_lr.importance={tmp_path / 'imp'}"])
    up = tiny_speech_llm_factory()
    up.apply_transform("upscale", {"block": "transformer", "after": [0]})
    strat = get_strategy("layer_lr", cfg)
    groups = {g["name"]: g for g in strat.setup(up)}
    assert sorted(groups) == ["adaptor", "layer0", "layer1", "llm_other", "new_block1"]
    assert groups["new_block1"]["lr"] == 1e-3
    assert sorted([groups["layer0"]["lr"], groups["layer1"]["lr"]]) == pytest.approx([1e-3 * (1 - 0.4), 1e-3])
    ids = {id(p) for p in groups["layer1"]["params"]}
    assert ids == {id(p) for p in up.llm.model.layers[2].parameters()}  # original layer 1 is block 2 now


@pytest.mark.real
def test_real_smollm2_identity_after_insertion(smollm2, whisper_encoder, tone):
    """The bundled SmolLM2-135M: logits on text and on speech input are the base model's after inserting
    the default 8 blocks of either type (interleaved)."""
    from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig

    base = SpeechLLM.from_parts(smollm2.model, smollm2.tokenizer, whisper_encoder, SpeechLLMConfig()).eval()
    qs = [Query(text="What is the capital of France?"), Query(speech_features=whisper_encoder.encode([tone])[0])]
    with torch.no_grad():
        ref = [base.logits(base.prepare([q])) for q in qs]
    llm = copy.deepcopy(smollm2.model)
    for block in BLOCKS:
        m = SpeechLLM.from_parts(llm, smollm2.tokenizer, whisper_encoder, SpeechLLMConfig()).eval()
        m.apply_transform("upscale", {"block": block, "after": insertion_points(30, default_count(30), "interleaved")})
        assert m.llm.config.num_hidden_layers == 38
        with torch.no_grad():
            for q, r in zip(qs, ref):
                torch.testing.assert_close(m.logits(m.prepare([q])), r)
        llm = drop_upscale(m.llm)


@pytest.mark.real
def test_real_gemma3_identity_after_insertion(whisper_encoder, tone):
    """The bundled Gemma3-270m (sliding/full layer pattern, q/k norms, soft-capped logits if any): identity
    after inserting its default 5 blocks of either type; the layer pattern follows the neighbours."""
    from speechkeep.models.llm import load_llm
    from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig

    loaded = load_llm("bundled:gemma3-270m")
    llm = loaded.model.eval()
    types = list(llm.config.layer_types)
    base = SpeechLLM.from_parts(llm, loaded.tokenizer, whisper_encoder, SpeechLLMConfig(llm="bundled:gemma3-270m")).eval()
    qs = [Query(text="What is the capital of France?"), Query(speech_features=whisper_encoder.encode([tone])[0])]
    with torch.no_grad():
        ref = [base.hidden_states(base.prepare([q])) for q in qs]  # (Gemma3's 262k-token head is slow: hidden states)
    after = insertion_points(18, default_count(18), "interleaved")
    for block in BLOCKS:
        base.apply_transform("upscale", {"block": block, "after": after})
        assert base.llm.config.num_hidden_layers == 23
        origin = layer_origin(base.llm)
        below = [max(o for o in origin[: i + 1] if o is not None) for i in range(23)]
        assert base.llm.config.layer_types == [types[j] for j in below]
        with torch.no_grad():
            for q, r in zip(qs, ref):
                torch.testing.assert_close(base.hidden_states(base.prepare([q])), r)
        drop_upscale(base.llm)
        base.transforms.clear()
        assert base.llm.config.layer_types == types


@pytest.mark.parametrize("block", BLOCKS)
def test_cache_crop_rewinds_transformer_blocks_and_refuses_convolutions(block):
    llm = ARCHS["llama"]()
    upscale(llm, {"block": block, "after": [1]})
    perturb(llm)
    ids = torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cache = DynamicCache(config=llm.config)
        llm(ids[:, :10], cache=cache, use_cache=True)
        if block == "ebranchformer":
            with pytest.raises(NotImplementedError, match="cannot be cropped"):
                cache.crop(-3)
            return
        cache.crop(-3)  # speculative decoding rejected 3 tokens
        assert cache.get_seq_length() == 7
        step = llm(ids[:, 7:8], cache=cache, use_cache=True).logits
        torch.testing.assert_close(step, llm(ids[:, :8]).logits[:, -1:], rtol=1e-5, atol=1e-5)


@pytest.mark.real
@pytest.mark.parametrize("block", ["transformer", "ebranchformer"])
def test_real_smollm2_upscale_trains_saves_and_reloads(block, whisper_encoder, piper_question, tmp_path):
    """Both block types train on the bundled SmolLM2 + Whisper tiny.en (2 steps on a real spoken question): only the
    new blocks (and the adaptor) change, the run's saved model reloads to the same logits, and dropping the blocks
    gives back the base LLM's."""
    from test_train import Row

    from speechkeep.config import load_config
    from speechkeep.models.persistence import load_speech_llm
    from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig
    from speechkeep.models.upscaling import drop_upscale_model
    from speechkeep.models.llm import load_llm
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import train

    text, audio = piper_question
    feats = whisper_encoder.encode([audio])[0]
    rows = [Row(f"q{i}", text, "The capital of France is Paris.", f"q{i}.wav", 2.0) for i in range(2)]
    cfg = load_config(TrainConfig, None, [
        "model.llm=bundled:smollm2-135m", "model.speech_encoder=bundled:whisper-tiny.en", "init_from=none",
        f"output_dir={tmp_path / 'run'}", "strategy=upscale", f"upscale.block={block}", "upscale.count=2",
        "upscale.lr=1e-3", "optim.warmup_steps=0", "data.batch_size=2", "max_steps=2", "save_every=2", "seed=0",
        "data.tasks={qa: 1}"])
    res = train(cfg, rows=rows, features=lambda paths: [feats for _ in paths], progress=False)
    assert res.steps == 2 and torch.isfinite(torch.tensor(res.summary["final_loss"]))
    base = load_llm("bundled:smollm2-135m").model.state_dict()
    origin = layer_origin(res.model.llm)
    assert origin.count(None) == 2 and len(origin) == 32
    layers = res.model.llm.get_decoder().layers
    for i, o in enumerate(origin):  # original blocks untouched, new ones trained away from identity
        sd = layers[i].state_dict()
        if o is None:
            assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in sd.items() if k.endswith(("o_proj.weight", "down_proj.weight", "merge_proj.weight")))
        else:
            assert all(torch.equal(v, base[f"model.layers.{o}.{k}"]) for k, v in sd.items())

    q = [Query(text=text, response="Paris."), Query(speech_features=feats, response="Paris.")]
    again, _ = load_speech_llm(str(tmp_path / "run"))
    with torch.no_grad():
        trained = res.model.eval().response_logits(res.model.prepare(q)).logits
        torch.testing.assert_close(again.eval().response_logits(again.prepare(q)).logits, trained)
        drop_upscale_model(again)
        assert layer_origin(again.llm) is None
        dropped = again.response_logits(again.prepare(q[:1])).logits
        base_model = load_llm("bundled:smollm2-135m")
        base_sl = SpeechLLM.from_parts(base_model.model, base_model.tokenizer, whisper_encoder, SpeechLLMConfig()).eval()
        torch.testing.assert_close(dropped, base_sl.response_logits(base_sl.prepare(q[:1])).logits)
        assert not torch.allclose(trained[: dropped.shape[0]], dropped)  # training changed the text path
