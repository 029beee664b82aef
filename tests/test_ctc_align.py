"""`strategy=ctc_align` (the CTC alignment objective on the training engine) against the CTC stage's
own loop as it was before it moved onto the engine (speechkeep 50f7cd2, `align/ctc.py: train_ctc`).

Same model init, same data, same batches: the engine gives the same per-step losses and weights as the
old loop's algorithm (copied below, minus its I/O). Two intended differences are outside this
comparison, and the test fixes them: (1) the batches: the old loop had its own length-grouped batcher,
the engine's is :class:`~speechkeep.train.data.BatchStream`, so the old algorithm is replayed on the
engine's batches; (2) warmup: the old schedule gave step k (0-based) of the warmup k+1/W of the peak,
the engine's (transformers' convention) k/W, i.e. the same ramp one step later; after warmup both are
cosine from the peak to 10% of it at max_steps, and with warmup 0 they are the same formula."""

import csv
import math
from pathlib import Path

import pytest
import torch

from speechkeep.models.ctc_head import ctc_feasible, ctc_loss, ctc_vocabulary
from test_train import Row

ROWS = [Row(f"u{i}", t, "", f"a{i}.wav", 1.0 + i % 3 * 0.2) for i, t in enumerate(
    ["what is the capital of france", "who wrote hamlet", "where is the eiffel tower", "what language do they speak",
     "who is the president", "what is the time zone", "where was he born", "what team does he play for",
     "what is the currency", "when did it start", "how tall is the tower", "what music does she make", "ab"])]
"""Transcripts; with stack_frames=8 below the first has more tokens than CTC frames (dropped as infeasible)."""


def frames_of(paths, calls=None):
    if calls is not None:
        calls.append(list(paths))
    out = []
    for p in paths:
        i = int(Path(p).name[1:-4])
        g = torch.Generator().manual_seed(100 + i)
        out.append(torch.randn(40 + i % 4 * 6 if i != 12 else 8, 16, generator=g))
    return out


def old_train_ctc_steps(model, feats, targets, batches, lr, weight_decay, warmup_steps, max_steps):
    """The pre-engine train_ctc's optimizer, schedule and step, verbatim (minus data, metrics and I/O)."""
    adaptor = model.adaptor
    with torch.no_grad():
        vocab_emb = adaptor.vocab_embeddings(model.llm.get_input_embeddings()).detach().float()
    params = [p for p in adaptor.parameters() if p.requires_grad]
    try:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        p = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    adaptor.train()
    losses = []
    for b in batches:
        loss = ctc_loss(adaptor, [feats[i].float() for i in b], [targets[i] for i in b], vocab_emb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


@pytest.fixture
def ctc_cfg(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    from speechkeep.align.ctc import CTCAlignConfig
    from speechkeep.config import load_config

    return load_config(CTCAlignConfig, None, [
        f"manifest={tmp_path / 'unused.jsonl'}", f"out={tmp_path / 'ctc'}", f"model.llm={tiny_llm_dir}",
        f"model.speech_encoder={tiny_whisper_dir}", "model.adaptor.hidden_size=16", "model.adaptor.stack_frames=8",
        "batch_size=4", "max_steps=5", "warmup_steps=0", "lr=3e-2", "save_every=5", "seed=3"])


def test_engine_ctc_equals_the_old_loop(ctc_cfg, tmp_path):
    from speechkeep.align.ctc import train_config
    from speechkeep.models.speech_llm import SpeechLLM
    from speechkeep.train.loop import train

    tcfg = train_config(ctc_cfg)
    tcfg.log_every = 1
    calls: list[list[str]] = []
    res = train(tcfg, rows=ROWS, features=lambda p: frames_of(p, calls), progress=False)
    assert res.steps == 5
    assert res.summary["utterances"] == 12 and res.summary["dropped_infeasible"] == 1
    with open(tmp_path / "ctc" / "metrics.csv", newline="") as f:
        logged = [float(r["term_ctc"]) for r in csv.DictReader(f)]
    step_batches = calls[1:]  # the first call measured every utterance's frames (prepare_examples)
    assert len(step_batches) == 5 and all(len(b) == 4 for b in step_batches)

    # the old loop: vocabulary and feasibility from all rows, a model built with the same seed
    tok = res.model.tokenizer
    ids = [tok(r.text, add_special_tokens=False)["input_ids"] for r in ROWS]
    vocab = ctc_vocabulary(ids)
    index = {int(t): i + 1 for i, t in enumerate(vocab.tolist())}
    model_cfg = ctc_cfg.model
    model_cfg.adaptor.ctc_vocab_size = len(vocab)
    old = SpeechLLM.build(model_cfg, seed=ctc_cfg.seed)
    old.adaptor.ctc_vocab.copy_(vocab)
    old.llm.eval()
    feats = frames_of([r.audio for r in ROWS])
    keep = [i for i in range(len(ROWS)) if ctc_feasible(old.adaptor.num_tokens(feats[i].shape[0]), ids[i])]
    assert len(keep) == 12 and not set(i for b in step_batches for i in [int(p[1:-4]) for p in b]) - set(keep)
    targets = [[index[t] for t in ids[i]] for i in range(len(ROWS))]
    batches = [[int(p[1:-4]) for p in b] for b in step_batches]
    losses = old_train_ctc_steps(old, feats, targets, batches, ctc_cfg.lr, ctc_cfg.weight_decay,
                                 ctc_cfg.warmup_steps, ctc_cfg.max_steps)

    assert torch.equal(res.model.adaptor.ctc_vocab, vocab)
    assert losses[-1] < losses[0]  # it learns, so equal weights are not equal by standing still
    torch.testing.assert_close(torch.tensor(logged), torch.tensor(losses), rtol=0, atol=1e-5)
    new_state, old_state = res.model.adaptor.state_dict(), old.adaptor.state_dict()
    assert new_state.keys() == old_state.keys()
    for k in new_state:
        torch.testing.assert_close(new_state[k], old_state[k], rtol=1e-5, atol=1e-6)


def test_schedule_is_the_old_one_after_warmup_and_one_step_later_during_it():
    from speechkeep.train.loop import lr_factor

    W, T = 4, 20

    def old(step):
        if step < W:
            return (step + 1) / W
        p = min(1.0, (step - W) / max(1, T - W))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))

    for k in range(W, T + 1):
        assert lr_factor(k, W, T, "cosine", 0.1) == pytest.approx(old(k), abs=1e-12)
    for k in range(1, W):
        assert lr_factor(k, W, T, "cosine", 0.1) == pytest.approx(old(k - 1))
    assert lr_factor(0, W, T, "cosine", 0.1) == 0.0 and lr_factor(T, W, T, "cosine", 0.1) == pytest.approx(0.1)


def test_wer_is_logged_and_the_stage_resumes_exactly(ctc_cfg, tmp_path, monkeypatch):
    """eval_wer every eval_every steps (an engine column), and an interrupted run resumes to the same weights."""
    from speechkeep.align.ctc import train_config
    from speechkeep.data.manifest import ManifestRow, write_manifest
    from speechkeep.train.loop import train

    ev = write_manifest(tmp_path / "ev" / "manifest.jsonl", [
        ManifestRow(id=r.id, text=r.text, audio=r.audio, sample_rate=16000, duration=r.duration, voice="v")
        for r in ROWS[:3]])
    import speechkeep.data.features as F

    monkeypatch.setattr(F.FeatureCache, "get", lambda self, paths, dtype=torch.float32: [
        f.to(dtype) for f in frames_of(paths)])
    ctc_cfg.eval_manifest, ctc_cfg.eval_every, ctc_cfg.max_steps = str(ev), 2, 4
    tcfg = train_config(ctc_cfg)
    tcfg.max_minutes = 0.0  # stops after step 1 with a checkpoint
    first = train(tcfg, rows=ROWS, features=frames_of, progress=False)
    assert first.steps == 1 and first.summary["stopped_early"]
    tcfg.max_minutes = None
    resumed = train(tcfg, rows=ROWS, features=frames_of, progress=False)
    straight_cfg = train_config(ctc_cfg)
    straight_cfg.output_dir = str(tmp_path / "straight")
    straight = train(straight_cfg, rows=ROWS, features=frames_of, progress=False)
    assert resumed.steps == straight.steps == 4
    for k, v in straight.model.adaptor.state_dict().items():
        torch.testing.assert_close(resumed.model.adaptor.state_dict()[k], v)
    with open(tmp_path / "straight" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["eval_wer"]] == [2, 4]
    assert "term_ctc" in rows[0] and straight.summary["ctc_vocab_size"] > 1
    # the logged WER is the final model's greedy-CTC WER on the held-out rows
    from speechkeep.metrics import corpus_wer

    model = straight.model.eval()
    hyps = model.ctc_transcribe(frames_of([r.audio for r in ROWS[:3]]))
    wer = round(corpus_wer([r.text for r in ROWS[:3]], hyps), 4)
    assert straight.summary["eval_wer"] == wer and float(rows[-1]["eval_wer"]) == pytest.approx(wer, abs=1e-5)


def test_bf16_precision_autocasts_the_step_and_keeps_fp32_weights(ctc_cfg, tmp_path):
    """`precision=bf16` (autocast on CPU too): the same run's losses follow the fp32 run's closely but not
    bit for bit (the matmuls ran in bfloat16), and the trained weights stay fp32."""
    from speechkeep.align.ctc import train_config
    from speechkeep.train.loop import train

    def run(precision: str, out: str):
        ctc_cfg.precision, ctc_cfg.out = precision, str(tmp_path / out)
        tcfg = train_config(ctc_cfg)
        assert tcfg.precision == precision
        tcfg.log_every = 1
        res = train(tcfg, rows=ROWS, features=frames_of, progress=False)
        with open(tmp_path / out / "metrics.csv", newline="") as f:
            return res, torch.tensor([float(r["term_ctc"]) for r in csv.DictReader(f)])

    res32, l32 = run("fp32", "fp32")
    res16, l16 = run("bf16", "bf16")
    assert len(l16) == len(l32) == 5 and torch.isfinite(l16).all()
    assert not torch.equal(l16, l32)
    torch.testing.assert_close(l16, l32, rtol=0.05, atol=0.05)
    assert all(p.dtype == torch.float32 for p in res16.model.adaptor.parameters())
