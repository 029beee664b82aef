"""`speechkeep align` end to end on tiny models (real TTS, few utterances) and the export format."""

import json

import pytest
import torch


@pytest.fixture
def tiny_align_cfg(tmp_path, tiny_llm_dir, tiny_whisper_dir):
    from speechkeep.align.recipe import AlignConfig
    from speechkeep.config import load_config

    return load_config(AlignConfig, None, [
        f"out={tmp_path / 'align'}", "corpus.max_texts=3", "corpus.piper_voices_per_text=1",
        "corpus.espeak_voices_per_text=1", "corpus.workers=1", f"ctc.model.llm={tiny_llm_dir}",
        f"ctc.model.speech_encoder={tiny_whisper_dir}", "ctc.model.adaptor.hidden_size=16", "ctc.batch_size=4",
        "ctc.max_steps=3", "ctc.warmup_steps=1", "ctc.eval_every=2", "ctc.save_every=2", "n_eval=2",
        "eval_voice=espeak-us-f2", "eval_tasks=[s2t, asr]", f"export_to={tmp_path / 'ship'}", "command=speechkeep align (test)",
    ])


def test_align_recipe_end_to_end_resumes_and_exports(tiny_align_cfg, tmp_path, capsys):
    from speechkeep.align.recipe import run_align
    from speechkeep.models.speech_llm import SpeechLLM

    report = run_align(tiny_align_cfg, progress=False)
    assert report["finished"] and report["ctc"]["steps"] == 3
    assert "ctc_wer" in report["eval"]["asr"] and "s2t" in report["eval"]
    corpus = report["corpus"]
    assert "espeak-us-f2" not in corpus["voices"] and "piper-joe-high" not in corpus["voices"]  # held out
    rows = (tmp_path / "align" / "ctc" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and any(r.rstrip().split(",")[-1] for r in rows[1:])  # a WER logged

    ship = tmp_path / "ship"
    card = (ship / "CARD.md").read_text()
    assert "speechkeep align (test)" in card and f"{100 * report['eval']['asr']['ctc_wer']:.1f}%" in card
    from safetensors.torch import load_file

    weights = load_file(str(ship / "adaptor.safetensors"))
    assert all(v.dtype in (torch.float16, torch.int64) for v in weights.values())
    m = SpeechLLM.from_pretrained(ship)
    full = SpeechLLM.from_pretrained(tmp_path / "align" / "ctc" / "model")
    assert torch.equal(m.adaptor.ctc_vocab, full.adaptor.ctc_vocab)
    torch.testing.assert_close(m.adaptor.proj[0].weight, full.adaptor.proj[0].weight, atol=1e-3, rtol=1e-2)

    from speechkeep.align.recipe import export_checkpoint

    export_checkpoint(tmp_path / "align" / "ctc" / "model", tmp_path / "align" / "report.json", ship)  # again
    assert "## History" not in (ship / "CARD.md").read_text()  # the same front-end does not become its own history
    import shutil

    from safetensors.torch import save_file

    other = tmp_path / "other_model"
    shutil.copytree(tmp_path / "align" / "ctc" / "model", other)
    save_file({k: (v + 1 if v.is_floating_point() else v) for k, v in weights.items()}, str(other / "adaptor.safetensors"))
    before = (ship / "CARD.md").read_text()
    export_checkpoint(other, tmp_path / "align" / "report.json", ship)  # a new front-end replaces it
    after = (ship / "CARD.md").read_text()
    assert "\n## History\n" in after and "The front-end this one replaced" in after
    assert "### " + before.splitlines()[0].lstrip("# ") in after  # the replaced card, headings demoted

    capsys.readouterr()
    run_align(tiny_align_cfg, progress=False)  # everything is reused
    out = capsys.readouterr().out
    assert "finished earlier (3 steps)" in out


def test_ctc_stage_resumes_after_interruption(tiny_align_cfg, tmp_path):
    from speechkeep.align.ctc import train_ctc
    from speechkeep.align.recipe import _filled
    from speechkeep.align.corpus import build_align_corpus

    cfg = _filled(tiny_align_cfg)
    build_align_corpus(cfg.corpus, progress=False)
    cfg.ctc.eval_manifest = None
    cfg.ctc.max_steps = 4
    cfg.ctc.max_minutes = 0.0  # stop after the first step, with a checkpoint
    first = train_ctc(cfg.ctc, progress=False)
    assert first["steps"] == 1 and first["stop_reason"] == "max_minutes"
    cfg.ctc.max_minutes = None
    resumed = train_ctc(cfg.ctc, progress=False)
    cfg.ctc.out = str(tmp_path / "straight")
    straight = train_ctc(cfg.ctc, progress=False)
    assert resumed["steps"] == straight["steps"] == 4
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "align" / "ctc" / "model" / "adaptor.safetensors"))
    wb = load_file(str(tmp_path / "straight" / "model" / "adaptor.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])


def test_card_names_the_models_it_was_made_of():
    import copy

    from speechkeep.align.recipe import render_card
    from speechkeep.models.bundled import CHECKPOINTS_DIR

    shipped = json.loads((CHECKPOINTS_DIR / "smollm2-135m+whisper-tiny.en" / "report.json").read_text())
    own = copy.deepcopy(shipped)
    own["ctc"]["config"]["model"].update(llm="/models/my-llm", speech_encoder="/models/my-whisper")
    own["command"] = "speechkeep align export_to=ship"
    card = render_card(own, n_params=1000)
    assert "/models/my-llm" in card and "/models/my-whisper" in card
    low = card.lower()
    assert "smollm2" not in low and "tiny.en" not in low and "bundled:" not in low
    card = render_card(shipped, n_params=1000)
    assert "`bundled:smollm2-135m+whisper-tiny.en`" in card and "SmolLM2-135M-Instruct does not copy text" in card


def test_card_names_the_questions_and_encoder_it_was_made_of():
    """The card said 'WebQuestions trainmodel + val' and 'Whisper frames' whatever the corpus and encoder were."""
    import copy

    from speechkeep.align.recipe import render_card
    from speechkeep.models.bundled import CHECKPOINTS_DIR

    shipped = json.loads((CHECKPOINTS_DIR / "smollm2-135m+whisper-tiny.en" / "report.json").read_text())
    own = copy.deepcopy(shipped)
    own["corpus"]["config"]["sources"] = ["/data/my_questions.jsonl"]
    own["corpus"]["config"]["include_answers"] = False
    own["ctc"]["config"]["model"]["speech_encoder"] = "/models/my-encoder"
    card = render_card(own, n_params=1000)
    assert "`my_questions.jsonl`" in card and "trainmodel" not in card and "reference answers" not in card
    assert "stacked /models/my-encoder frames" in card and "Whisper frames" not in card
    card = render_card(shipped, n_params=1000)
    assert "WebQuestions trainmodel + val" in card and "distinct\n  reference answers" in card


def _measure_json(model: str, fingerprint: str = "") -> dict:
    clean = {"n": 1205, "ctc_wer": 0.142, "ctc_wer_ci95": [0.13, 0.15], "whisper_wer": 0.101, "token_coverage": 0.998,
             "unwritable_words": [], "s2t_accuracy": 0.105, "cascade_accuracy": 0.124, "s2t_vs_cascade": 0.105 / 0.124}
    general = {"n": 1000, "ctc_wer": 0.31, "ctc_wer_ci95": [0.29, 0.33], "whisper_wer": 0.2, "token_coverage": 0.9976,
               "unwritable_words": []}
    return {"model": model, "voice": "piper-joe-high", "ctc_vocab_size": 28499, "ctc_emit": "soft",
            "adaptor_fingerprint": fingerprint,
            "options": {"questions": "webquestions:clean", "general": "runs/text/heldout.jsonl"},
            "adaptor": {"arch": "transformer", "hidden_size": 512, "stack_frames": 5}, "clean": clean, "general": general,
            "bars": {"clean_ctc_wer": {"passed": True, "bar": 0.15}, "s2t_vs_cascade": {"passed": True, "bar": 0.8},
                     "general_ctc_wer": {"passed": False, "bar": 0.25}, "unwritable_words": {"passed": True, "bar": 0}},
            "all_passed": False, "seconds": 1.0}


def test_card_shows_text_sources_licenses_and_the_measurement(tmp_path):
    """The general front-end's card names its text sources with their licenses and carries issue 16's
    measurement; a measure.json of another model is refused."""
    import copy

    from speechkeep.align.recipe import read_measurement, render_card, text_corpus_info
    from speechkeep.errors import UsageError
    from speechkeep.models.bundled import CHECKPOINTS_DIR

    text = tmp_path / "text"
    text.mkdir()
    (text / "train.jsonl").write_text('{"id": "a", "text": "hello there"}\n')
    (text / "info.json").write_text(json.dumps({
        "command": "speechkeep data text out=x", "train_by_source": {"wordnet": 5, "requests": 2},
        "sources": {"wordnet": {"license": "WordNet 3.0 license"}, "requests": {"license": "the project's own"}}}))
    other = tmp_path / "other"
    other.mkdir()
    (other / "train.jsonl").write_text("")
    info = text_corpus_info([str(text / "train.jsonl"), str(other / "train.jsonl")])
    assert info[0]["train_by_source"] == {"wordnet": 5, "requests": 2} and info[1] == {"file": str(other / "train.jsonl")}

    from safetensors.torch import save_file

    from speechkeep.align.measure import adaptor_fingerprint

    def saved(d, w, emit="soft"):
        d.mkdir(parents=True)
        save_file({"proj.weight": w, "ctc_vocab": torch.arange(3)}, str(d / "adaptor.safetensors"))
        (d / "speechkeep.json").write_text(json.dumps({"llm_format": "reference", "config": {"adaptor": {"ctc_emit": emit}}}))
        return d

    w = torch.randn(4, 3)
    model_dir = saved(tmp_path / "run" / "ctc" / "model", w)
    fp = adaptor_fingerprint({"proj.weight": w, "ctc_vocab": torch.arange(3)})
    (tmp_path / "m.json").write_text(json.dumps(_measure_json(str(model_dir), fp)))
    m = read_measurement(tmp_path / "m.json", model_dir)
    assert adaptor_fingerprint({"proj.weight": w.half(), "ctc_vocab": torch.arange(3)}) != fp  # rounding is told apart
    with pytest.raises(UsageError, match="other adaptor weights"):  # e.g. the run resumed for more steps since
        read_measurement(tmp_path / "m.json", saved(tmp_path / "later", w + 1e-3))
    with pytest.raises(UsageError, match="ctc_emit=soft, but the model reads ctc_emit=hard"):
        read_measurement(tmp_path / "m.json", saved(tmp_path / "hard", w, emit="hard"))
    with pytest.raises(UsageError, match="does not exist yet"):
        read_measurement(tmp_path / "m.json", tmp_path / "elsewhere")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UsageError, match="not a measure.json"):
        read_measurement(tmp_path / "bad.json", model_dir)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UsageError, match="not readable as JSON"):
        read_measurement(tmp_path / "bad.json", model_dir)
    partial = _measure_json(str(model_dir), fp)
    del partial["clean"]["token_coverage"]
    (tmp_path / "bad.json").write_text(json.dumps(partial))
    with pytest.raises(UsageError, match="incomplete measure.json"):
        read_measurement(tmp_path / "bad.json", model_dir)

    report = copy.deepcopy(json.loads((CHECKPOINTS_DIR / "smollm2-135m+whisper-tiny.en" / "report.json").read_text()))
    assert "## Measured on" not in render_card(report, n_params=1000)
    report["text_corpora"], report["measurement"] = info, m
    card = render_card(report, n_params=1000)
    assert "`wordnet` 5 (WordNet 3.0 license)" in card and "`requests` 2 (the project's own)" in card
    assert "## Measured on held-out questions and general English" in card and "| clean | 1205 | 14.2% [13.0, 15.0]" in card
    assert "The 1,205 questions of `webquestions:clean` and 1,000 texts of the general held-out set (`heldout.jsonl`)" in card
    assert "| general_ctc_wer <= 0.25 | 0.31 | NO |" in card and "All bars passed: no" in card


def test_frontend_ablation_trains_and_measures_each_variant(tiny_align_cfg, tmp_path):
    """benchmarks/frontend_ablation.py: each variant drops what it says (checked against the corpus's own counts),
    trains the same steps, is measured on the same utterances with a paired difference from `full`; a re-run
    reuses the finished variants, and refuses an out made from another recipe or step count."""
    import os

    from speechkeep.align.ablation import AblationConfig, render, run_ablation
    from speechkeep.align.recipe import run_align
    from speechkeep.data.manifest import read_manifest
    from speechkeep.errors import OutputError, UsageError
    from speechkeep.models.speech_llm import SpeechLLM

    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"id": "g-requests-1", "text": "please explain how rainbows form"}\n'
                     '{"id": "g-requests-2", "text": "tell me a short story about a cat"}\n')
    tiny_align_cfg.corpus.texts = [str(texts)]
    tiny_align_cfg.corpus.augment.fraction = 0.5
    tiny_align_cfg.ctc.time_masks = 2
    ad = tiny_align_cfg.ctc.model.adaptor
    ad.arch, ad.heads, ad.ffn_size = "transformer", 2, 32
    tiny_align_cfg.export_to = None
    run_align(tiny_align_cfg, progress=False)
    info = json.loads((tmp_path / "align" / "corpus" / "build_info.json").read_text())
    measure = tmp_path / "measure"
    measure.mkdir()
    os.symlink(tmp_path / "align" / "eval", measure / "clean")  # the held-out spoken set as the test set
    cfg = AblationConfig(run=str(tmp_path / "align"), measure=str(measure), out=str(tmp_path / "abl"), steps=2)
    with pytest.raises(UsageError, match="unknown variant 'big'"):
        run_ablation(AblationConfig(**{**vars(cfg), "variants": ["full", "big"]}), progress=False)
    rep = run_ablation(cfg, progress=False)
    res = rep["results"]
    assert list(res) == ["full", "mlp", "no_augment", "no_general"]
    n_rows = {v: len(read_manifest(tmp_path / "abl" / "manifests" / f"{v}.jsonl")) for v in res}
    assert n_rows["full"] == info["utterances"] and info["augmented_utterances"] > 0 and info["general_utterances"] > 0
    assert n_rows["full"] - n_rows["no_augment"] == info["augmented_utterances"]
    assert n_rows["full"] - n_rows["no_general"] == info["general_utterances"]
    assert {v: r["utterances"] for v, r in res.items()} == n_rows
    tc = {v: json.loads((tmp_path / "abl" / v / "train_config.json").read_text()) for v in res}
    assert tc["full"]["ctc_align"]["time_masks"] == 2 and tc["no_augment"]["ctc_align"]["time_masks"] == 0
    assert tc["full"]["model"]["adaptor"]["arch"] == "transformer"
    mlp = SpeechLLM.from_pretrained(tmp_path / "abl" / "mlp" / "model").adaptor.config
    assert mlp.arch == "mlp" and mlp.hidden_size == 1024
    n = res["full"]["clean"]["n"]
    assert n == 2 and all(r["clean"]["n"] == n and 0 <= r["clean"]["wer_ci95"][0] <= r["clean"]["wer"] for r in res.values())
    assert "vs_full" not in res["full"]["clean"] and all("vs_full" in res[v]["clean"] for v in ("mlp", "no_augment"))
    assert json.loads((tmp_path / "abl" / "ablation.json").read_text()) == json.loads(json.dumps(rep))
    assert "| no_general |" in render(rep)
    stamp = (tmp_path / "abl" / "full" / "summary.json").stat().st_mtime_ns
    again = run_ablation(AblationConfig(**{**vars(cfg), "variants": ["mlp"]}), progress=False)
    assert (tmp_path / "abl" / "full" / "summary.json").stat().st_mtime_ns == stamp  # measured again, not retrained
    assert list(again["results"]) == list(res) and again["results"]["full"]["clean"]["wer"] == res["full"]["clean"]["wer"]
    with pytest.raises(UsageError, match="another steps"):
        run_ablation(AblationConfig(**{**vars(cfg), "steps": 3}), progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(OutputError):
        run_ablation(AblationConfig(**{**vars(cfg), "out": str(foreign)}), progress=False)
    assert (foreign / "mine.txt").read_text() == "keep"


def test_frontend_ablation_refuses_a_variant_that_would_equal_full(tmp_path):
    from speechkeep.align.ablation import variant_rows
    from speechkeep.data.manifest import ManifestRow
    from speechkeep.errors import DataError

    corpus = tmp_path / "corpus"
    rows = [ManifestRow(id=f"q{i}.v", text="a b", audio=str(corpus / "audio" / "v" / f"q{i}.wav"), sample_rate=16000,
                        duration=1.0, voice="v", split="train") for i in range(3)]
    rows.append(ManifestRow(id="my-text-1.v", text="c d", audio=str(corpus / "audio_aug" / "v" / "x.speed1.1.wav"),
                            sample_rate=16000, duration=1.0, voice="v", split="train"))
    assert len(variant_rows(rows, "no_augment", corpus, {"augmented_utterances": 1})) == 3
    with pytest.raises(DataError, match="no augmented copies"):
        variant_rows(rows, "no_augment", corpus, {"augmented_utterances": 0})
    with pytest.raises(DataError, match="removed 0 utterances.*must start with 'g-'"):  # general ids of another format
        variant_rows(rows, "no_general", corpus, {"general_utterances": 1})
