"""Issue 16: the open CTC vocabulary, the exact compact CTC loss, the Transformer/Conformer adaptor, the
general text corpus, the extended voices, the augmentations, and the front-end measurement."""

import json

import numpy as np
import pytest
import torch

from speechkeep.errors import DataError, UsageError


# ----------------------------------------------------------------------------- vocabulary and spelling
def test_fallback_spells_any_word_and_decodes_to_the_same_text(smol_tokenizer):
    from speechkeep.models.ctc_vocab import Speller, build_vocabulary, fallback_ids

    tok = smol_tokenizer
    fb = fallback_ids(tok, 1)
    assert 200 < len(fb) < 600  # the byte tokens, with and without the leading space
    vocab = build_vocabulary(tok, ["what is the capital of france?", "who played luke skywalker?"])
    sp = Speller(tok, vocab.token_ids)
    text = "can you explain how photosynthesis works in simple terms"
    canonical = tok(text, add_special_tokens=False)["input_ids"]
    assert any(t not in sp.ids for t in canonical)  # words outside the tiny vocabulary ...
    ids = sp.spell(text)
    assert ids is not None and all(t in sp.ids for t in ids)  # ... are spelled with in-vocabulary pieces
    assert tok.decode(ids) == text and len(ids) > len(canonical)
    assert sp.spell_ids([t for t in canonical if t in sp.ids]) == [t for t in canonical if t in sp.ids]
    assert vocab.from_sample < len(vocab.token_ids) and set(fb) <= set(vocab.token_ids)


def test_without_the_fallback_a_word_can_be_unwritable(smol_tokenizer):
    from speechkeep.models.ctc_vocab import build_vocabulary, coverage

    tok = smol_tokenizer
    small = tok("the cat sat", add_special_tokens=False)["input_ids"]
    cov = coverage(tok, small, ["the cat sat", "the dog ran"])
    assert cov.tokens == 6 and cov.in_vocabulary == 4 and cov.texts_fully_covered == 1
    assert "dog" in cov.unwritable_words and "cat" not in cov.unwritable_words
    full = build_vocabulary(tok, ["the cat sat"])
    cov = coverage(tok, full.token_ids, ["the dog ran, naïve café"])
    assert cov.unwritable_words == [] and cov.spelled_tokens > 0 and cov.token_coverage < 1


def test_vocabulary_file_round_trip_and_bad_files(tmp_path, smol_tokenizer):
    from speechkeep.models.ctc_vocab import build_vocabulary, load_vocabulary, save_vocabulary

    v = build_vocabulary(smol_tokenizer, ["hello world"], tokenizer_spec="x", sources={"a": 1})
    save_vocabulary(v, tmp_path / "v.json", heldout_coverage=None)
    back = load_vocabulary(tmp_path / "v.json")
    assert back.token_ids == v.token_ids and back.sources == {"a": 1}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not a JSON vocabulary"):
        load_vocabulary(tmp_path / "bad.json")
    (tmp_path / "unsorted.json").write_text(json.dumps({"token_ids": [5, 3]}))
    with pytest.raises(DataError, match="sorted"):
        load_vocabulary(tmp_path / "unsorted.json")
    with pytest.raises(DataError, match="no such vocabulary file"):
        load_vocabulary(tmp_path / "missing.json")


def test_compact_ctc_loss_equals_the_full_softmax_in_value_and_gradient():
    from speechkeep.models.adaptor import AdaptorConfig, FrameStackAdaptor
    from speechkeep.models.ctc_head import ctc_loss

    torch.manual_seed(0)
    V = 300
    a = FrameStackAdaptor(8, 12, AdaptorConfig(stack_frames=2, hidden_size=16, output="ctc", ctc_vocab_size=V))
    a.set_ctc_vocabulary(torch.arange(V) * 2)
    emb = torch.randn(2 * V, 12)[a.ctc_vocab]
    frames = [torch.randn(n, 8) for n in (30, 18, 25)]
    targets = [[5, 17, 17, 250], [1, 299], [42, 43, 44, 5]]
    grads = []
    losses = []
    for compact in (True, False):
        a.zero_grad()
        loss = ctc_loss(a, frames, targets, emb, compact=compact)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in a.parameters()])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)
    assert float(losses[0]) > 0


# ----------------------------------------------------------------------------- Transformer / Conformer adaptor
@pytest.mark.parametrize("arch", ["transformer", "conformer"])
def test_encoder_adaptor_is_padding_invariant_and_trains(arch):
    from speechkeep.models.adaptor import AdaptorConfig, FrameStackAdaptor

    torch.manual_seed(0)
    a = FrameStackAdaptor(8, 12, AdaptorConfig(stack_frames=2, hidden_size=16, arch=arch, layers=2, heads=4,
                                               ffn_size=24, conv_kernel=3, dropout=0.0))
    assert not hasattr(a, "proj") and a.encoder.inp.in_features == 16
    short, long = torch.randn(9, 8), torch.randn(40, 8)
    a.eval()
    with torch.no_grad():
        alone = a([short])[0]
        batched = a([long, short])
    assert alone.shape == (4, 12) and batched[0].shape == (20, 12)
    torch.testing.assert_close(batched[1], alone, rtol=1e-4, atol=1e-5)  # padding is masked
    # context: changing the first frames changes a later stacked frame (the MLP's output would not change)
    other = short.clone()
    other[:2] += 5
    with torch.no_grad():
        assert not torch.allclose(a([other])[0][3], alone[3])
    a.train()
    a([short, long])[0].sum().backward()
    assert a.encoder.layers[0].self_attn.in_proj_weight.grad.abs().sum() > 0


def test_encoder_adaptor_config_errors():
    from speechkeep.models.adaptor import AdaptorConfig

    with pytest.raises(ValueError, match="divisible"):
        AdaptorConfig(arch="transformer", hidden_size=10, heads=4)
    with pytest.raises(ValueError, match="arch"):
        AdaptorConfig(arch="lstm")
    with pytest.raises(ValueError, match="odd"):
        AdaptorConfig(arch="conformer", conv_kernel=4)


def test_transformer_ctc_adaptor_saves_and_reloads_through_the_builder(tiny_speech_llm_factory, tmp_path):
    from speechkeep.models.adaptor import AdaptorConfig
    from speechkeep.models.builder import build_speech_llm

    m = tiny_speech_llm_factory(adaptor=AdaptorConfig(hidden_size=16, arch="conformer", layers=1, heads=2, ffn_size=16,
                                                      conv_kernel=3, output="ctc", ctc_vocab_size=40))
    m.adaptor.set_ctc_vocabulary(torch.arange(40) + 100)
    m.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "speechkeep.json").read_text())
    assert saved["config"]["adaptor"]["arch"] == "conformer" if "config" in saved else "conformer" in json.dumps(saved)
    back, trained = build_speech_llm(init_from=str(tmp_path / "m"))
    assert trained and back.adaptor.config.arch == "conformer"
    m.eval(), back.eval()
    feats = [torch.randn(37, m.adaptor.d_encoder)]
    with torch.no_grad():
        torch.testing.assert_close(back.adaptor.frame_outputs(feats)[0], m.adaptor.frame_outputs(feats)[0])
    assert torch.equal(back.adaptor.ctc_vocab, m.adaptor.ctc_vocab)


# ----------------------------------------------------------------------------- augmentation
def test_audio_augmentations_do_what_they_say():
    from speechkeep.data.augment import add_noise, reverberate, speed_perturb

    sr = 16000
    t = np.arange(sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    assert abs(len(speed_perturb(x, 1.1)) - sr / 1.1) < 5 and abs(len(speed_perturb(x, 0.9)) - sr / 0.9) < 5
    for color in ("white", "pink", "brown"):
        y = add_noise(x, 10.0, color, seed=1)
        snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
        assert abs(snr - 10.0) < 0.3, (color, snr)
        assert np.array_equal(y, add_noise(x, 10.0, color, seed=1))  # seeded
    r = reverberate(x, 0.5, seed=3)
    assert r.shape == x.shape and abs(np.abs(r).max() - np.abs(x).max()) < 1e-6 and not np.allclose(r, x)


def test_augment_plan_is_seeded_and_takes_its_share():
    from speechkeep.data.augment import AudioAugmentConfig, augment_plan

    cfg = AudioAugmentConfig(fraction=0.3)
    plans = [augment_plan(f"u{i}", cfg) for i in range(2000)]
    share = sum(p is not None for p in plans) / len(plans)
    assert 0.26 < share < 0.34
    assert {p["kind"] for p in plans if p} == {"speed", "noise", "reverb"}
    assert plans == [augment_plan(f"u{i}", cfg) for i in range(2000)]
    assert all(augment_plan(f"u{i}", AudioAugmentConfig()) is None for i in range(50))  # off by default
    with pytest.raises(ValueError, match="kinds"):
        AudioAugmentConfig(fraction=0.5, kinds=["echo"])
    with pytest.raises(ValueError, match="snr_db"):
        AudioAugmentConfig(snr_db=[20.0, 5.0])


def test_spec_augment_masks_spans_and_leaves_the_input_alone():
    from speechkeep.data.augment import spec_augment

    x = torch.ones(200, 40)
    g = torch.Generator().manual_seed(0)
    y = spec_augment(x, 2, 10, 2, 5, generator=g)
    assert torch.equal(x, torch.ones(200, 40))
    zero_rows = int((y == 0).all(1).sum())
    zero_cols = int((y == 0).all(0).sum())
    assert 0 < zero_rows <= 20 and zero_cols <= 10 and (y == 0).any()
    assert torch.equal(spec_augment(x, 0, 10, 0, 5), x)


# ----------------------------------------------------------------------------- voices
def test_extended_voice_pool_covers_every_english_accent_and_keeps_the_held_out_pitch_unseen():
    from speechkeep.data.tts import ESPEAK_ENGLISH, VOICES, extended_voices, get_voice, is_voice, voice_pool

    ext = extended_voices()
    espeak = voice_pool("extended", "espeak")
    piper = voice_pool("extended", "piper")
    assert len(piper) == 180 and len(espeak) >= 8 * 100
    for accent in ESPEAK_ENGLISH:
        assert sum(n.startswith(f"espeak-x-{accent}-") for n in espeak) >= 100
    held = VOICES["piper-joe-high"].params["pitch_factor"]
    assert all(ext[n].params["pitch_factor"] < held - 0.05 for n in piper)
    assert all(not (set(VOICES) & set(ext)) for _ in [0])
    assert is_voice("espeak-x-en-gb-scotland-m3") and not is_voice("espeak-x-klingon-m3")
    with pytest.raises(DataError, match="unknown voice"):
        get_voice("nobody")
    assert voice_pool("all")[:13] == list(VOICES)


def test_an_extended_espeak_voice_synthesizes_and_differs_from_its_accent_neighbour():
    from speechkeep.data.tts import Synthesizer

    s = Synthesizer()
    a = s.synthesize("the weather is nice today", "espeak-x-en-gb-scotland-m3")
    b = s.synthesize("the weather is nice today", "espeak-x-en-us-m3")
    assert a.size > 8000 and b.size > 8000 and (a.size != b.size or not np.allclose(a, b))
    assert np.array_equal(a, s.synthesize("the weather is nice today", "espeak-x-en-gb-scotland-m3"))


# ----------------------------------------------------------------------------- the general text corpus
WORDNET_NOUN = """  1 This software and database is being provided to you, the LICENSEE, by
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known or inferred to have its own distinct existence (living or nonliving)
00002137 03 n 02 abstraction 0 abstract_entity 0 010 | a general concept formed by extracting common features from specific examples
02084071 05 n 05 dog 0 | a member of the genus Canis; "the dog barked all night"; "she walked her dog in the park every morning"
"""


def _wordnet(tmp_path, extra_noun=""):
    d = tmp_path / "wn"
    d.mkdir()
    (d / "data.noun").write_text(WORDNET_NOUN + extra_noun)
    (d / "data.verb").write_text("01166351 34 v 01 eat 0 | take in solid food; \"she ate a big lunch at noon\"\n")
    (d / "data.adj").write_text("00001740 00 a 01 able 0 | having the necessary means or skill to do something\n")
    (d / "data.adv").write_text("00001740 02 r 01 very 0 | to a high degree; \"the house was very big indeed\"\n")
    return d


def test_wordnet_reader_takes_definitions_and_example_sentences(tmp_path):
    from speechkeep.data.text import read_wordnet

    texts = read_wordnet(_wordnet(tmp_path))
    got = {t.text for t in texts}
    assert "the dog barked all night" in got and "a member of the genus Canis" in got
    assert "take in solid food" in got and "she ate a big lunch at noon" in got
    assert {t.unit for t in texts if "dog" in t.text} == {"wn:noun:02084071"}
    (tmp_path / "bad").mkdir()
    for pos in ("noun", "verb", "adj", "adv"):
        (tmp_path / "bad" / f"data.{pos}").write_text("00001 no gloss here\n")
    with pytest.raises(DataError, match=r"data.noun:1: not a WordNet data line"):
        read_wordnet(tmp_path / "bad")


def test_clean_text_makes_speakable_transcripts():
    from speechkeep.data.text import clean_text

    assert clean_text("A member of the genus Canis (living or not)") == "a member of the genus canis"
    assert clean_text("He said \u201chello\u201d \u2014 then left.") == "he said hello, then left."
    assert clean_text("see http://x.y/z") is None and clean_text("two words") is None
    assert clean_text(" ".join(["word"] * 31)) is None


def test_text_corpus_holds_out_units_keeps_clean_questions_out_and_records_licenses(tmp_path, tiny_llm_dir):
    from speechkeep.data.questions import read_questions
    from speechkeep.data.text import TextCorpusConfig, build_text_corpus, clean_questions
    from speechkeep.data.webquestions import webquestions_file

    devtest_q = read_questions(webquestions_file("devtest")).items[0].text
    extra = tmp_path / "extra.txt"
    extra.write_text(f"my friend asked me {devtest_q.lower().rstrip('?')} yesterday\n"
                     "the quick brown fox jumps over the lazy dog\nok\n")
    cfg = TextCorpusConfig(out=str(tmp_path / "text"), sources=["wordnet", "requests", "webquestions:trainmodel",
                                                                  f"file:{extra}"],
                           wordnet_dir=str(_wordnet(tmp_path)), heldout_fraction=0.2, llm=str(tiny_llm_dir),
                           llm_prompts=0, file_license="CC0 (test)", command="speechkeep data text (test)",
                           progress=False)
    info = build_text_corpus(cfg)
    out = tmp_path / "text"
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    held = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    assert train and held and info["train_texts"] == len(train) and info["heldout_texts"] == len(held)
    assert info["removed"]["containing_a_clean_webquestions_question"] >= 1
    pool = clean_questions()
    everything = [r["text"] for r in train + held]
    assert not any(q in t for q in pool for t in everything)  # no corpus text contains a clean question
    assert not any(h["text"] in t["text"] for h in held for t in train)  # no training text contains a held-out one
    assert not any(h["source"].startswith("webquestions") for h in held)
    topics = {r["text"].split(" about ")[-1] for r in held if r["source"] == "requests" and " about " in r["text"]}
    assert not any(r["text"].endswith(" about " + tpc) for r in train for tpc in topics)  # whole topics held out
    card = (out / "CARD.md").read_text()
    assert "WordNet 3.0 license" in card and "CC-BY 4.0" in card and "CC0 (test)" in card
    assert "speechkeep data text (test)" in card
    voc = json.loads((out / "vocabulary.json").read_text())
    assert voc["size"] == len(voc["token_ids"]) and voc["heldout_coverage"]["n_unwritable_words"] == 0
    assert 0 < info["train_outside_webquestions"] < 1


def test_text_corpus_refuses_clean_splits_and_unknown_sources(tmp_path, tiny_llm_dir):
    from speechkeep.data.text import TextCorpusConfig, build_text_corpus

    for src, msg in (("webquestions:devtest", "clean evaluation split"), ("webquestions:clean", "clean evaluation split"),
                     ("file:/nonexistent.txt", "no such text file")):
        with pytest.raises(UsageError, match=msg):
            build_text_corpus(TextCorpusConfig(out=str(tmp_path / "t"), sources=[src], llm=str(tiny_llm_dir)))
    with pytest.raises(UsageError, match="unknown text source"):
        build_text_corpus(TextCorpusConfig(out=str(tmp_path / "t2"), sources=["requests", "books"],
                                           llm=str(tiny_llm_dir), llm_prompts=0, progress=False))
    assert not (tmp_path / "t").exists()


def test_llm_written_texts_are_generated_once_and_cached(tmp_path, tiny_llm_dir):
    from speechkeep.data.text import TextCorpusConfig, llm_texts, make_requests

    cfg = TextCorpusConfig(out=str(tmp_path), llm=str(tiny_llm_dir), llm_prompts=3, llm_max_new_tokens=6)
    got, stats = llm_texts(cfg, make_requests(), progress=False)
    assert stats["generated"] == 3 and (tmp_path / "llm_cache.jsonl").is_file()
    again, stats2 = llm_texts(cfg, make_requests(), progress=False)
    assert stats2["generated"] == 0 and stats2["cached"] == 3 and [t.text for t in again] == [t.text for t in got]
    assert all(t.source == "llm" and t.unit.startswith("topic:") for t in got)


def test_speechkeep_data_text_command(tmp_path, tiny_llm_dir, capsys):
    from speechkeep.cli import main

    rc = main(["data", "text", f"out={tmp_path / 'o'}", "sources=[requests]", f"llm={tiny_llm_dir}", "llm_prompts=0",
               "heldout_fraction=0.1", "progress=false"])
    assert rc == 0 and "General English text corpus" in capsys.readouterr().out
    rc = main(["data", "text", f"out={tmp_path / 'o2'}", "sources=[webquestions:heldout]", f"llm={tiny_llm_dir}"])
    assert rc == 2 and "clean evaluation split" in capsys.readouterr().err


# ----------------------------------------------------------------------------- corpus + CTC with the general vocabulary
def test_general_corpus_with_extended_voices_augmentation_and_general_vocabulary_trains(
        tmp_path, tiny_llm_dir, tiny_whisper_dir, smol_tokenizer):
    from speechkeep.align.corpus import AlignCorpusConfig, build_align_corpus, drop_clean_pool
    from speechkeep.align.ctc import CTCAlignConfig, train_ctc
    from speechkeep.config import load_config
    from speechkeep.data.augment import AudioAugmentConfig
    from speechkeep.data.manifest import read_manifest
    from speechkeep.models.ctc_vocab import build_vocabulary, save_vocabulary
    from speechkeep.models.speech_llm import SpeechLLM

    texts = tmp_path / "general.jsonl"
    texts.write_text("".join(json.dumps({"id": f"g{i}", "text": t}) + "\n" for i, t in enumerate(
        ["please summarize the meeting notes from yesterday", "the dog barked all night",
         "can you explain how photosynthesis works"])))
    cfg = AlignCorpusConfig(out=str(tmp_path / "corpus"), max_texts=2, piper_voices_per_text=0,
                            espeak_voices_per_text=1, include_answers=False, texts=[str(texts)], voice_pool="extended",
                            piper_share=0.0, workers=1, speech_encoder=str(tiny_whisper_dir),
                            augment=AudioAugmentConfig(fraction=1.0, kinds=["speed", "noise"]))
    manifest = build_align_corpus(cfg, progress=False)
    rows = read_manifest(manifest)
    info = json.loads((tmp_path / "corpus" / "build_info.json").read_text())
    assert info["general_utterances"] == 6 and info["augmented_utterances"] == 5 == len(rows) - 5
    assert info["outside_webquestions"] == 0.6
    assert all(r.voice.startswith("espeak-x-") for r in rows)
    assert set(info["augmentations"]) <= {"speed", "noise"} and sum(info["augmentations"].values()) == 5

    # a clean WebQuestions question in a corpus text is dropped from the plan
    from speechkeep.data.questions import read_questions
    from speechkeep.data.webquestions import webquestions_file

    q = read_questions(webquestions_file("heldout")).items[3].text.lower().rstrip("?")
    kept, n = drop_clean_pool([("x.v", f"so {q} then", "v"), ("y.v", "hello there friend", "v")])
    assert n == 1 and [k[0] for k in kept] == ["y.v"]

    # the vocabulary of only one sentence: the others are spelled by the fallback, not dropped
    vocab = build_vocabulary(smol_tokenizer, ["the dog barked all night"])
    save_vocabulary(vocab, tmp_path / "vocab.json")
    ccfg = load_config(CTCAlignConfig, None, [
        f"manifest={manifest}", f"out={tmp_path / 'ctc'}", f"model.llm={tiny_llm_dir}",
        f"model.speech_encoder={tiny_whisper_dir}", "model.adaptor.hidden_size=16", "model.adaptor.arch=transformer",
        "model.adaptor.heads=2", "model.adaptor.layers=1", "model.adaptor.ffn_size=16", "model.adaptor.conv_kernel=3",
        "model.adaptor.stack_frames=1", "batch_size=4", "max_steps=2", "warmup_steps=1",
        f"vocabulary={tmp_path / 'vocab.json'}", "time_masks=2", "feature_masks=1", "feature_mask_channels=2"])
    summary = train_ctc(ccfg, progress=False)
    assert summary["steps"] == 2 and summary["ctc_vocab_size"] == len(vocab.token_ids)
    assert summary["spelled_by_fallback"] > 0 and summary["utterances"] + summary["dropped_infeasible"] == len(rows)
    m = SpeechLLM.from_pretrained(tmp_path / "ctc" / "model")
    assert m.adaptor.ctc_vocab.tolist() == vocab.token_ids and m.adaptor.config.arch == "transformer"

    bad = tmp_path / "foreign.json"
    bad.write_text(json.dumps({"token_ids": [1, 10 ** 6]}))
    ccfg.vocabulary, ccfg.out = str(bad), str(tmp_path / "ctc2")
    from speechkeep.errors import ConfigError

    with pytest.raises(ConfigError, match="outside the LLM's"):
        train_ctc(ccfg, progress=False)


# ----------------------------------------------------------------------------- the measurement
def test_measure_frontend_reports_every_bar(tmp_path, tiny_speech_llm_factory):
    from speechkeep.align.measure import MeasureConfig, measure_frontend
    from speechkeep.models.adaptor import AdaptorConfig

    m = tiny_speech_llm_factory(adaptor=AdaptorConfig(hidden_size=16, output="ctc", ctc_vocab_size=300),
                                encode_mode="variable")
    from speechkeep.models.ctc_vocab import fallback_ids

    m.adaptor.set_ctc_vocabulary(torch.tensor(fallback_ids(m.tokenizer, 1)))
    m.save_pretrained(tmp_path / "fe")
    general = tmp_path / "heldout.jsonl"
    general.write_text(json.dumps({"id": "h1", "text": "the dog barked all night"}) + "\n"
                       + json.dumps({"id": "h2", "text": "she walked to the park"}) + "\n")
    res = measure_frontend(MeasureConfig(model=str(tmp_path / "fe"), general=str(general), out=str(tmp_path / "meas"),
                                         voice="espeak-us-f2", limit=2, max_new_tokens=2, workers=1,
                                         whisper_max_new_tokens=8, whisper="bundled:whisper-tiny.en", ctc_emit="hard"))
    assert res["ctc_emit"] == "hard" and "`ctc_emit=hard`" in (tmp_path / "meas" / "MEASURE.md").read_text()
    assert res["clean"]["n"] == 2 and res["general"]["n"] == 2
    assert 0 <= res["clean"]["whisper_wer"] and res["general"]["ctc_wer"] > 0
    assert res["general"]["unwritable_words"] == [] and res["bars"]["unwritable_words"]["passed"]
    expected = {"clean_ctc_wer", "general_ctc_wer", "unwritable_words"}
    if res["clean"]["cascade_accuracy"] > 0:  # a ratio exists only then
        expected.add("s2t_vs_cascade")
    assert set(res["bars"]) == expected and not res["bars"]["general_ctc_wer"]["passed"]  # an untrained front-end
    assert res["all_passed"] is False
    assert "Front-end measurement" in (tmp_path / "meas" / "MEASURE.md").read_text()
    lines = (tmp_path / "meas" / "transcripts.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "s2t" in json.loads(lines[0])


def test_data_build_takes_extended_voices_and_align_checks_its_new_inputs(tmp_path, capsys):
    from speechkeep.cli import main
    from speechkeep.data.build import DataBuildConfig, _voice_pools

    pool, held = _voice_pools(DataBuildConfig(voices=["espeak-x-en-029-m3", "piper-x-ls1-pf1-ns0.667-nw0.8"],
                                              eval_voices=["piper-joe-high"]))
    assert pool == ["espeak-x-en-029-m3", "piper-x-ls1-pf1-ns0.667-nw0.8"] and held == ["piper-joe-high"]
    with pytest.raises(UsageError, match="unknown voice 'espeak-x-nowhere'"):
        _voice_pools(DataBuildConfig(voices=["espeak-x-nowhere"]))
    assert main(["align", f"out={tmp_path / 'a'}", f"corpus.texts=[{tmp_path / 'missing.jsonl'}]"]) == 2
    assert "corpus.texts" in capsys.readouterr().err
    assert main(["align", f"out={tmp_path / 'b'}", f"ctc.vocabulary={tmp_path / 'missing.json'}"]) == 2
    assert "ctc.vocabulary" in capsys.readouterr().err and not (tmp_path / "a").exists()


def test_measure_refuses_a_protected_or_foreign_output_directory(tmp_path):
    from speechkeep.align.measure import MeasureConfig, measure_frontend
    from speechkeep.errors import OutputError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="overwrite"):
        measure_frontend(MeasureConfig(out=str(tmp_path / "mine")))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
