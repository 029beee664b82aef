"""The CTC adaptor output and the CTC alignment stage (tiny models; real runs are in test_align_real)."""

import pytest
import torch
from torch import nn

from speechkeep.align.ctc import ctc_feasible, ctc_loss, ctc_vocabulary
from speechkeep.models.adaptor import AdaptorConfig, FrameStackAdaptor


def _ctc_adaptor(vocab=(5, 9, 11, 20), d_enc=4, d_llm=6, emit="soft"):
    torch.manual_seed(0)
    a = FrameStackAdaptor(d_enc, d_llm, AdaptorConfig(stack_frames=1, hidden_size=8, output="ctc",
                                                      ctc_vocab_size=len(vocab), ctc_emit=emit))
    a.ctc_vocab.copy_(torch.tensor(vocab))
    return a, nn.Embedding(32, d_llm)


def test_ctc_config_needs_a_vocabulary():
    with pytest.raises(ValueError, match="ctc_vocab_size"):
        AdaptorConfig(output="ctc")
    with pytest.raises(ValueError, match="output"):
        AdaptorConfig(output="tokens")


def test_greedy_runs_collapse_repeats_and_drop_blanks():
    # frames' best labels: blank, 2, 2, blank, 2, 3, 3, blank -> tokens 2, 2, 3
    best = torch.tensor([0, 2, 2, 0, 2, 3, 3, 0])
    logits = nn.functional.one_hot(best, 5).float()
    run, labels = FrameStackAdaptor.greedy_runs(logits)
    assert labels.tolist() == [2, 2, 3]
    assert run.tolist() == [-1, 0, 0, -1, 1, 2, 2, -1]


def test_hard_emission_is_exactly_the_decoded_tokens_embeddings():
    a, emb = _ctc_adaptor(emit="hard")
    frames = [torch.randn(12, 4), torch.randn(7, 4)]
    decoded = a.ctc_decode(frames, emb)
    outs = a(frames, token_embedding=emb)
    for ids, o in zip(decoded, outs):
        if ids:  # all-blank utterances still emit one (the least-blank frame's best token)
            torch.testing.assert_close(o, emb(torch.tensor(ids)))
        assert o.shape[0] == max(len(ids), 1)


def test_soft_emission_is_a_posterior_average_and_carries_gradients():
    a, emb = _ctc_adaptor(emit="soft")
    with torch.no_grad():
        a.blank.bias.fill_(-50.0)  # never blank: every change of best token emits
    frames = [torch.randn(10, 4)]
    out = a(frames, token_embedding=emb)[0]
    assert out.shape[0] == len(a.ctc_decode(frames, emb)[0])
    # every output is a convex combination of the vocabulary's embeddings: inside their hull's box
    v = emb(a.ctc_vocab)
    assert (out <= v.max(0).values + 1e-5).all() and (out >= v.min(0).values - 1e-5).all()
    out.sum().backward()
    assert a.proj[0].weight.grad is not None and a.proj[0].weight.grad.abs().sum() > 0


def test_ctc_adaptor_needs_the_token_embedding():
    a, _ = _ctc_adaptor()
    with pytest.raises(ValueError, match="token_embedding"):
        a([torch.randn(5, 4)])


def test_vocabulary_and_feasibility():
    assert ctc_vocabulary([[7, 3], [3, 9]]).tolist() == [3, 7, 9]
    assert ctc_feasible(3, [1, 2, 3]) and not ctc_feasible(3, [1, 1, 2])  # repeat needs a blank
    assert not ctc_feasible(5, [])


def test_ctc_loss_learns_a_toy_mapping():
    """Frames whose features encode a token id: CTC training must make greedy decoding exact."""
    a, emb = _ctc_adaptor(vocab=(5, 9, 11, 20), d_enc=4, d_llm=6)
    emb.weight.requires_grad_(False)
    proto = torch.randn(5, 4) * 3  # 0 = silence, 1..4 = the CTC labels
    seqs = [[1, 2], [3, 4, 1], [2, 2], [4]]

    def utter(labels):
        frames = [proto[0]] * 2
        for lab in labels:
            frames += [proto[lab]] * 2 + [proto[0]]
        return torch.stack(frames) + 0.05 * torch.randn(len(frames), 4)

    opt = torch.optim.Adam(a.parameters(), lr=3e-2)
    vocab_emb = a.vocab_embeddings(emb)
    first = None
    for _ in range(150):
        loss = ctc_loss(a, [utter(s) for s in seqs], seqs, vocab_emb)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    decoded = a.ctc_decode([utter(s) for s in seqs], emb)
    assert decoded == [[a.ctc_vocab[x - 1].item() for x in s] for s in seqs]


def test_batches_are_length_grouped_resumable_and_cover_every_item():
    """The CTC stage's batches are the training engine's (asr task only): length-grouped within a chunk,
    resumable, each item at most once per epoch and all but a last partial batch covered."""
    from speechkeep.train.data import BatchStream, Example

    lengths = [((i * 37) % 100) + 1 for i in range(100)]
    ex = {"asr": [Example(f"u{i}", "asr", "t", "t", f"u{i}.wav", float(n)) for i, n in enumerate(lengths)]}
    b = BatchStream(ex, {"asr": 1.0}, 8, seed=1)
    first_epoch = [next(b) for _ in range(12)]  # 100 // 8 full batches
    ids = [int(e.id[1:]) for batch in first_epoch for e in batch]
    assert len(ids) == len(set(ids)) == 96
    assert all(len(batch) == 8 for batch in first_epoch)
    # grouped by length: a batch's spread is far below the data's (1..100)
    assert sum(max(e.length for e in bt) - min(e.length for e in bt) for bt in first_epoch) / 12 < 15
    st = b.state()
    nxt = [next(b) for _ in range(3)]
    c = BatchStream(ex, {"asr": 1.0}, 8, seed=1)
    c.load_state(st)
    assert [[e.id for e in bt] for bt in (next(c) for _ in range(3))] == [[e.id for e in bt] for bt in nxt]


def test_speech_llm_with_ctc_adaptor_round_trips(tiny_speech_llm_factory, tmp_path, tone):
    from speechkeep.models.speech_llm import Query, SpeechLLM

    cfg = AdaptorConfig(stack_frames=5, hidden_size=16, output="ctc", ctc_vocab_size=3, ctc_emit="hard")
    m = tiny_speech_llm_factory(adaptor=cfg)
    m.adaptor.ctc_vocab.copy_(torch.tensor([4, 8, 15]))
    batch = m.prepare([Query(audio=tone, response="ok")])
    assert 1 <= batch.num_speech_tokens[0] <= 13  # one input per emitted token, not per 100 ms
    m.save_pretrained(tmp_path / "m")
    m2 = SpeechLLM.from_pretrained(tmp_path / "m")
    assert m2.adaptor.ctc_vocab.tolist() == [4, 8, 15]
    b2 = m2.prepare([Query(audio=tone, response="ok")])
    torch.testing.assert_close(b2.inputs_embeds, batch.inputs_embeds)
