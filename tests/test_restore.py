"""Importance-guided restoration (speechkeep restore) on tiny random models."""

import json

import pytest
import torch

from speechkeep.errors import UsageError
from speechkeep.importance.restore import RestoreConfig, restore_weights, run_restore, selected_masks
from speechkeep.importance.runs import save_importance
from speechkeep.importance.taylor import compute_importance
from speechkeep.models.speech_llm import Query, SpeechLLM

QA = [("What is the capital of France?", "Paris."), ("Who wrote Hamlet?", "Shakespeare wrote it."),
      ("Name a color.", "Blue is a color."), ("What is two plus two?", "Four.")]


def _finetune(model: SpeechLLM, seed: int = 3, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.llm.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def setup(tiny_speech_llm_factory, tmp_path_factory):
    """A pre-trained tiny model's importance run and a 'fine-tuned' copy saved as a SpeechLLM."""
    root = tmp_path_factory.mktemp("restore")
    base = tiny_speech_llm_factory()
    qs = [Query(text=q, response=r) for q, r in QA]
    res = compute_importance(base, [qs[:2], qs[2:]], include_adaptor=True, progress=False)
    save_importance(root / "imp", res.scores, res.meta)
    ft = tiny_speech_llm_factory()
    _finetune(ft)
    ft.llm_weights_changed = True
    ft.save_pretrained(root / "ft")
    pre = {n: p.detach().clone() for n, p in base.llm.named_parameters()}
    return root, res.scores, pre


def _llm_params(path):
    m = SpeechLLM.from_pretrained(path)
    return {n: p.detach() for n, p in m.llm.named_parameters()}


def test_selected_masks_endpoints_and_share():
    scores = {"a": torch.arange(100.0).view(10, 10), "b": torch.arange(100.0, 200.0)}
    assert selected_masks(scores, 0) == {}
    assert all(m.all() for m in selected_masks(scores, 100).values())
    m = selected_masks(scores, 10)  # the top 10% of 200 entries: the 20 largest, all in b
    assert int(m["a"].sum()) == 0 and int(m["b"].sum()) == 20 and bool(m["b"][-20:].all())


def test_restore_endpoints(setup, tiny_speech_llm_factory):
    root, scores, pre = setup
    ft = SpeechLLM.from_pretrained(root / "ft")
    before = {n: p.detach().clone() for n, p in ft.llm.named_parameters()}
    counts = restore_weights(ft.llm, pre, scores, 0.0)
    assert counts["restored"] == 0
    for n, p in ft.llm.named_parameters():
        assert torch.equal(p, before[n])  # p = 0 changes nothing
    counts = restore_weights(ft.llm, pre, scores, 100.0)
    assert counts["restored"] == counts["scored"] == sum(p.numel() for p in ft.llm.parameters())
    for n, p in ft.llm.named_parameters():
        assert torch.equal(p, pre[n])  # p = 100%: the pre-trained LLM exactly


def test_restore_selects_by_importance_and_interpolates(setup):
    root, scores, pre = setup
    ft = SpeechLLM.from_pretrained(root / "ft")
    before = {n: p.detach().clone() for n, p in ft.llm.named_parameters()}
    counts = restore_weights(ft.llm, pre, scores, 5.0, alpha=0.25)
    n_llm = sum(p.numel() for p in ft.llm.parameters())
    assert abs(counts["restored"] - 0.05 * n_llm) <= 0.001 * n_llm + 5
    masks = selected_masks({n: s for n, s in scores.items() if not n.startswith("adaptor.")}, 5.0)
    top_min = min(float(scores[n][m].min()) for n, m in masks.items() if m.any())
    for n, p in ft.llm.named_parameters():
        m = masks[n]
        torch.testing.assert_close(p[m], 0.25 * pre[n][m] + 0.75 * before[n][m])
        assert torch.equal(p[~m], before[n][~m])  # the rest keeps its fine-tuned value
        if (~m).any():
            assert float(scores[n][~m].max()) <= top_min  # what was restored is the most important


def test_restore_command_writes_a_loadable_model(setup, tmp_path):
    root, scores, pre = setup
    info = run_restore(RestoreConfig(run=str(root / "ft"), importance=str(root / "imp"), fraction=100, out=str(tmp_path / "r")))
    assert info["restored"] == info["scored"]
    got = _llm_params(tmp_path / "r")
    for n, p in got.items():
        assert torch.equal(p, pre[n])
    assert json.loads((tmp_path / "r" / "restore.json").read_text())["fraction_percent"] == 100
    with pytest.raises(UsageError, match="importance"):
        run_restore(RestoreConfig(run=str(root / "ft"), out=str(tmp_path / "x")))


def test_restore_merges_lora_and_refuses_upscale(setup, tiny_speech_llm_factory, tmp_path):
    root, scores, pre = setup
    m = tiny_speech_llm_factory()
    m.apply_transform("lora", {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]})
    with torch.no_grad():
        for n, p in m.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    m.save_pretrained(tmp_path / "lora")
    run_restore(RestoreConfig(run=str(tmp_path / "lora"), importance=str(root / "imp"), fraction=100, out=str(tmp_path / "r")))
    loaded = SpeechLLM.from_pretrained(tmp_path / "r")
    assert not loaded.is_peft()
    for n, p in loaded.llm.named_parameters():
        assert torch.equal(p, pre[n])  # the merged LoRA delta is undone entirely at p = 100%
    up = tiny_speech_llm_factory()
    up.apply_transform("upscale", {"block": "transformer", "after": [0]})
    up.save_pretrained(tmp_path / "up")
    with pytest.raises(UsageError, match="nothing to restore"):
        run_restore(RestoreConfig(run=str(tmp_path / "up"), importance=str(root / "imp"), out=str(tmp_path / "r2")))


def test_restore_sweep_writes_a_curve_and_resumes(setup, tmp_path, tone):
    import soundfile as sf

    root, scores, pre = setup
    rows = []
    for i, (q, a) in enumerate(QA):
        sf.write(tmp_path / f"q{i}.wav", tone, 16000)
        rows.append({"id": f"q{i}", "text": q, "answers": [a.rstrip(".")], "audio": f"q{i}.wav", "sample_rate": 16000,
                     "duration": len(tone) / 16000, "voice": "tone"})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RestoreConfig(run=str(root / "ft"), importance=str(root / "imp"), out=str(tmp_path / "sweep"),
                        sweep=[1, 100], data=str(tmp_path / "manifest.jsonl"), max_new_tokens=4)
    res = run_restore(cfg)
    assert [c["fraction_percent"] for c in res["curve"]] == [0.0, 1.0, 100.0]
    assert res["curve"][0]["restored"] == 0 and res["curve"][2]["restored"] == res["curve"][2]["scored"]
    for name in ("curve.json", "curve.csv", "curve.png"):
        assert (tmp_path / "sweep" / name).stat().st_size > 0
    assert "t2t_recovered" in res["curve"][1] and "s2t_lost" in res["curve"][1]
    got = _llm_params(tmp_path / "sweep" / "p100" / "model")
    assert all(torch.equal(p, pre[n]) for n, p in got.items())
    stamp = (tmp_path / "sweep" / "p1" / "eval" / "metrics.json").stat().st_mtime_ns
    again = run_restore(cfg)  # a finished point is not recomputed
    assert (tmp_path / "sweep" / "p1" / "eval" / "metrics.json").stat().st_mtime_ns == stamp
    assert again["curve"] == json.loads((tmp_path / "sweep" / "curve.json").read_text())["curve"]


def test_restore_sweep_takes_p0_from_an_existing_evaluation(setup, tmp_path, tone):
    import soundfile as sf

    from speechkeep.evaluate.run import EvalConfig, evaluate

    root, scores, pre = setup
    for i in range(len(QA)):
        sf.write(tmp_path / f"q{i}.wav", tone, 16000)
    rows = [{"id": f"q{i}", "text": q, "answers": [a.rstrip(".")], "audio": f"q{i}.wav", "sample_rate": 16000,
             "duration": len(tone) / 16000, "voice": "tone"} for i, (q, a) in enumerate(QA)]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ev = evaluate(EvalConfig(model=str(root / "ft"), data=str(tmp_path / "manifest.jsonl"), out=str(tmp_path / "ev"),
                             tasks=["t2t", "s2t"], max_new_tokens=4))
    res = run_restore(RestoreConfig(run=str(root / "ft"), importance=str(root / "imp"), out=str(tmp_path / "sweep"),
                                    sweep=[100], data=str(tmp_path / "manifest.jsonl"), max_new_tokens=4,
                                    finetuned_eval=str(tmp_path / "ev")))
    assert "s2t" in ev, ev.get("skipped")
    assert res["curve"][0]["t2t"] == ev["t2t"]["accuracy"] and not (tmp_path / "sweep" / "p0" / "model").exists()
    # the data given as its directory is the same data as its manifest.jsonl
    res = run_restore(RestoreConfig(run=str(root / "ft"), importance=str(root / "imp"), out=str(tmp_path / "s3"),
                                    sweep=[100], data=str(tmp_path), max_new_tokens=4, finetuned_eval=str(tmp_path / "ev")))
    assert res["curve"][0]["t2t"] == ev["t2t"]["accuracy"]
    with pytest.raises(UsageError, match="evaluated"):
        run_restore(RestoreConfig(run=str(root / "ft"), importance=str(root / "imp"), out=str(tmp_path / "s2"),
                                  sweep=[100], data=str(tmp_path / "other.jsonl"), finetuned_eval=str(tmp_path / "ev")))


def test_restore_a_layer_lr_run_directory(setup, tiny_llm_dir, tiny_whisper_dir, tmp_path):
    """A real `layer_lr` run (2 steps of the engine): restoring 100% gives the pre-trained LLM back, 0% the run's."""
    from test_train import Row

    from speechkeep.config import load_config
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import train

    root, scores, pre = setup
    rows = [Row(f"r{i}", q, a, "", 0.0) for i, (q, a) in enumerate(QA)]
    cfg = load_config(TrainConfig, None, [
        f"model.llm={tiny_llm_dir}", f"model.speech_encoder={tiny_whisper_dir}", "init_from=none",
        f"output_dir={tmp_path / 'run'}", "strategy=layer_lr", f"layer_lr.importance={root / 'imp'}", "optim.lr=1e-2",
        "optim.warmup_steps=0", "data.batch_size=2", "max_steps=2", "save_every=2", "data.tasks={t2t: 1}"])
    res = train(cfg, rows=rows, progress=False)
    trained = {n: p.detach().clone() for n, p in res.model.llm.named_parameters()}
    assert any(not torch.equal(trained[n], pre[n]) for n in pre)
    run_restore(RestoreConfig(run=str(tmp_path / "run"), importance=str(root / "imp"), fraction=100, out=str(tmp_path / "r100")))
    assert all(torch.equal(p, pre[n]) for n, p in _llm_params(tmp_path / "r100").items())
    run_restore(RestoreConfig(run=str(tmp_path / "run"), importance=str(root / "imp"), fraction=0, out=str(tmp_path / "r0")))
    assert all(torch.equal(p, trained[n]) for n, p in _llm_params(tmp_path / "r0").items())


def test_control_rankings_random_and_change(setup, tmp_path):
    """The controls of the method: a seeded random ranking and the largest-change ranking restore the same number of
    entries as the importance ranking, but others; each selects what it says, and p = 100% is exact for all."""
    from speechkeep.importance.restore import ranking_scores

    root, scores, pre = setup
    ft = _llm_params(root / "ft")
    rnd = ranking_scores("random", scores, pre, ft, seed=1)
    assert set(rnd) == {n for n in scores if not n.startswith("adaptor.")}
    assert all(torch.equal(a, b) for a, b in zip(rnd.values(), ranking_scores("random", scores, pre, ft, seed=1).values()))
    chg = ranking_scores("change", scores, pre, ft)
    for n, c in chg.items():
        torch.testing.assert_close(c, (ft[n] - pre[n]).abs())
    sel = {}
    for ranking in ("importance", "random", "change"):
        info = run_restore(RestoreConfig(run=str(root / "ft"), importance=str(root / "imp"), fraction=10,
                                         ranking=ranking, seed=1, out=str(tmp_path / ranking)))
        assert info["ranking"] == ranking and info["restored"] >= int(0.1 * info["scored"])
        got = _llm_params(tmp_path / ranking)
        sel[ranking] = {n: ~torch.isclose(got[n], ft[n], rtol=0, atol=0) | (ft[n] == pre[n]) for n in chg}
        # every restored entry is back at its pre-trained value; the rest keep the fine-tuned one
        for n in chg:
            assert torch.equal(got[n][sel[ranking][n]], pre[n][sel[ranking][n]])
    assert any(not torch.equal(sel["random"][n], sel["importance"][n]) for n in chg)
    # change: the restored entries moved at least as far as any entry left fine-tuned
    moved_back = torch.cat([chg[n][sel["change"][n] & (ft[n] != pre[n])] for n in chg])
    kept = torch.cat([chg[n][~sel["change"][n]] for n in chg])
    assert moved_back.min() >= kept.max()
    full = run_restore(RestoreConfig(run=str(root / "ft"), importance=str(root / "imp"), fraction=100, ranking="change",
                                     out=str(tmp_path / "all")))
    assert full["restored"] == full["scored"]
    assert all(torch.equal(p, pre[n]) for n, p in _llm_params(tmp_path / "all").items())
