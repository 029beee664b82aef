"""Cost of one CTC alignment step by CTC vocabulary size and adaptor architecture (issue 16).

One optimizer step of ``--batch`` utterances (CTC loss, backward, AdamW) of the adaptor's CTC head
against V token embeddings of SmolLM2's width, on encoder features of realistic lengths (Whisper
tiny.en: 384 channels, 50 frames/s; durations drawn uniformly from 1.5-6 s, seeded). The features are
random: the cost of a step does not depend on their values. Run at one thread to compare with the
README's numbers::

    OMP_NUM_THREADS=1 python benchmarks/bench_ctc_vocab.py --vocab 6652 28379 49152 --steps 3
    OMP_NUM_THREADS=1 python benchmarks/bench_ctc_vocab.py --vocab 28379 --arch mlp transformer

Prints s/step per (vocabulary size, architecture); the variants take turns step by step (after one
warm-up round), so a machine whose load changes affects them alike.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[6652, 28379, 49152], help="CTC vocabulary sizes")
    ap.add_argument("--arch", nargs="+", default=["mlp"], choices=["mlp", "transformer", "conformer"], help="adaptor architectures")
    ap.add_argument("--loss", nargs="+", default=["compact"], choices=["compact", "full"],
                    help="CTC computation: compact (blank + the batch's labels + the rest of the mass; the default) "
                         "or full (every vocabulary column through the padded CTC, as before issue 16)")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                    help="fp32, or bf16 autocast (what train's precision=bf16 does; fast on CPUs with AMX/AVX512-BF16)")
    ap.add_argument("--batch", type=int, default=64, help="utterances per step")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    ap.add_argument("--layers", type=int, default=2, help="Transformer/Conformer adaptor layers")
    ap.add_argument("--hidden", type=int, default=1024, help="adaptor hidden size (MLP width, Transformer model width)")
    ap.add_argument("--ffn", type=int, default=1024, help="Transformer/Conformer feed-forward width")
    args = ap.parse_args()

    from speechkeep.models.adaptor import AdaptorConfig, FrameStackAdaptor
    from speechkeep.models.ctc_head import ctc_loss

    g = torch.Generator().manual_seed(0)
    d_enc, d_llm, n_tok = 384, 576, 49152
    emb = torch.randn(n_tok, d_llm, generator=g) * 0.05
    lens = (torch.rand(args.batch, generator=g) * 4.5 + 1.5).mul(50).long().tolist()
    frames = [torch.randn(n, d_enc, generator=g) for n in lens]
    variants = []
    for arch, v, how, prec in [(a, v, h, p) for a in args.arch for v in args.vocab for h in args.loss
                               for p in args.precision]:
        torch.manual_seed(0)
        cfg = AdaptorConfig(hidden_size=args.hidden, ffn_size=args.ffn, output="ctc", ctc_vocab_size=v, arch=arch,
                            layers=args.layers)
        a = FrameStackAdaptor(d_enc, d_llm, cfg)
        a.set_ctc_vocabulary(torch.randperm(n_tok, generator=g)[:v].sort().values)
        opt = torch.optim.AdamW(a.parameters(), lr=1e-4, fused=True)
        ntoks = [a.num_tokens(n) for n in lens]
        targets = [torch.randint(1, v + 1, (max(1, t // 3),), generator=g).tolist() for t in ntoks]
        variants.append((arch, v, how, prec, a, opt, targets, sum(p.numel() for p in a.parameters())))

    def step(a, opt, targets, how, prec):
        vocab_emb = emb[a.ctc_vocab]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            loss = ctc_loss(a, frames, targets, vocab_emb, compact=how == "compact")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {i: [] for i in range(len(variants))}
    for r in range(args.steps + 1):
        for i, (_, _, how, prec, a, opt, targets, _) in enumerate(variants):
            t0 = time.perf_counter()
            step(a, opt, targets, how, prec)
            if r:
                times[i].append(time.perf_counter() - t0)
    print(f"batch {args.batch} utterances, {sum(lens) / 50 / 60:.1f} min of audio, torch threads {torch.get_num_threads()}")
    base = None
    print("| adaptor | CTC vocabulary | CTC computation | precision | parameters | s/step | vs first |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for i, (arch, v, how, prec, _, _, _, n) in enumerate(variants):
        s = sorted(times[i])[len(times[i]) // 2]
        base = base or s
        print(f"| {arch} | {v:,} | {how} | {prec} | {n:,} | {s:.3f} | {s / base:.2f}x |")


if __name__ == "__main__":
    main()
