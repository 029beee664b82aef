"""Step time of ``distill`` against ``lora`` on the same batches (issue 14).

Bundled SmolLM2-135M + Whisper tiny.en, starting from the shipped aligned front-end (``init_from=auto``,
like ``speechkeep train``), the demo's training set, batch 8, cached encoder features. Every variant
trains a fresh copy of the same model on the same batches: ``warmup`` steps, then ``steps`` timed
optimizer steps (prepare + loss + backward + AdamW). Variants:

- ``lora``: the baseline (LoRA r=8, CE only);
- ``distill``: LoRA student, CE + kl_t2t + kl_s2t, no teacher cache;
- ``distill_cache``: the same with the teacher top-k cache (``distill.cache_top_k``; its one-time build
  over the benchmark's items is timed separately);
- ``distill_t2t``: LoRA student, CE + kl_t2t only, no cache;
- ``distill_s2t_cache``: LoRA student, CE + kl_s2t only, with the cache (no second student pass).

The variants take turns step by step (round-robin, every model in memory), so a machine that speeds
up or slows down during the run (a shared one) affects them alike; each ratio is the mean over the
timed rounds of the variant's step time divided by ``lora``'s in the same round.

    OMP_NUM_THREADS=1 python benchmarks/bench_distill.py --data runs/demo/data/train/manifest.jsonl --steps 3

``--kl`` times only the KL terms (two students, one teacher, forward + backward) on random logits of the
benchmark's size: the fused, chunked implementation against plain autograd, with and without the top-k cache.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch

VARIANTS = {
    "lora": ["strategy=lora"],
    "distill": ["strategy=distill"],
    "distill_cache": ["strategy=distill", "distill.cache_top_k={k}"],
    "distill_t2t": ["strategy=distill", "distill.weights={{ce: 1, kl_t2t: 1, kl_s2t: 0}}"],
    "distill_s2t_cache": ["strategy=distill", "distill.weights={{ce: 1, kl_t2t: 0, kl_s2t: 1}}", "distill.cache_top_k={k}"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a spoken training manifest with teacher responses (speechkeep data build)")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before the timed ones")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=64, help="distill.cache_top_k of the cached variants")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--kl", action="store_true", help="time only the KL terms on random logits (no model, no data)")
    args = ap.parse_args()
    if args.kl:
        return bench_kl(args.top_k)
    if not args.data:
        ap.error("--data is required (or --kl)")

    from transformers.utils import logging as hf_logging

    from speechkeep.config import load_config
    from speechkeep.data.manifest import read_manifest
    from speechkeep.strategies import get_strategy
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.data import BatchStream, examples_from_rows, to_queries
    from speechkeep.train.loop import _feature_fn, build_model, make_optimizer

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_flush_denormal(True)  # as the training loop does on CPU
    common = [f"data.train={args.data}", f"data.batch_size={args.batch_size}", "lora.r=8", "lora.dropout=0",
              "optim.lr=1e-3", "optim.adaptor_lr=1e-4", "seed=0"]
    base_cfg = load_config(TrainConfig, None, common + ["strategy=lora"])
    base = build_model(base_cfg)  # the shipped aligned front-end, as `speechkeep train` starts
    rows = read_manifest(args.data)
    per_task = examples_from_rows(rows, base_cfg.data.tasks)
    stream = BatchStream(per_task, base_cfg.data.tasks, args.batch_size, 0, True)
    n = args.warmup + args.steps
    batches = [next(stream) for _ in range(n)]
    features = _feature_fn(base_cfg, base)
    queries = [to_queries(b, features, base_cfg.data.asr_instruction) for b in batches]
    items = {"qa": [e for b in batches for e in b]}
    tokens = [sum(len(base.chat.response_ids(q.response)) for q in qs) for qs in queries]
    print(f"torch threads {torch.get_num_threads()}, {n} batches of {args.batch_size} ({args.warmup} warm-up), "
          f"{statistics.mean(tokens):.0f} response tokens per batch, encode_mode {base.config.encode_mode}", flush=True)

    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench_distill_") as tmp:
        for name in args.variants:
            over = [o.format(k=args.top_k) for o in VARIANTS[name]] + [f"distill.cache_dir={tmp}/{name}"]
            cfg = load_config(TrainConfig, None, common + over)
            model = copy.deepcopy(base)
            strategy = get_strategy(cfg.strategy, cfg)
            groups = strategy.setup(model)
            opt = make_optimizer([{"params": g["params"], "lr": g["lr"]} for g in groups], cfg)
            model.adaptor.train()
            model.llm.train() if strategy.llm_changed else model.llm.eval()
            note = ""
            if "cache" in name:
                t0 = time.perf_counter()
                strategy.begin(model, items)
                c = strategy.cache
                note = (f"cache of {len(c.index)} items built in {time.perf_counter() - t0:.1f} s, "
                        f"{c.nbytes() / 1e6:.2f} MB, {c.nbytes() / max(c._rows, 1):.0f} B per response token; ")
            runs[name] = {"model": model, "strategy": strategy, "opt": opt, "times": [], "note": note,
                          "calls0": getattr(strategy, "teacher_calls", 0), "first": None}

        for i, qs in enumerate(queries):  # round-robin: every variant on batch i, then batch i + 1
            for name, v in runs.items():
                t0 = time.perf_counter()
                terms = v["model"](qs, loss_fn=v["strategy"].loss)
                terms.total().backward()
                v["opt"].step()
                v["opt"].zero_grad(set_to_none=True)
                dt = time.perf_counter() - t0
                if i == 0:
                    v["first"] = {k: float(t.detach()) for k, t in terms.terms.items()}
                if i >= args.warmup:
                    v["times"].append(dt)

    ref = runs.get("lora")
    for name, v in runs.items():
        mean = statistics.mean(v["times"])
        ratio = ""
        if ref is not None:
            ratio = f"{statistics.mean(a / b for a, b in zip(v['times'], ref['times'])):5.2f}x lora"
        note = v["note"]
        if "distill" in name:
            note += f"teacher passes in the steps: {getattr(v['strategy'], 'teacher_calls', 0) - v['calls0']}; "
            note += "step-1 terms " + " ".join(f"{k}={x:.4f}" for k, x in v["first"].items())
        print(f"{name:18s} {mean:6.2f} s/step  {ratio}  (steps: {' '.join(f'{t:.2f}' for t in v['times'])})"
              + (f"  [{note.rstrip('; ')}]" if note else ""), flush=True)


def bench_kl(k: int, n: int = 230, vocab: int = 49152, repeat: int = 3) -> None:
    import speechkeep.strategies.distill as d

    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(n, vocab, generator=g) * 3
    students = [torch.randn(n, vocab, generator=g, requires_grad=True) for _ in range(2)]
    ids, logp = d.teacher_top_k(teacher, k, 2.0)
    cases = {
        "plain autograd, full vocabulary": lambda: [d.distill_divergence(s, teacher, "forward", 2.0) for s in students],
        "fused, full vocabulary": lambda: d.fused_divergences(students, teacher, "forward", 2.0),
        f"plain autograd, top-{k} cache": lambda: [d.top_k_divergence(s, ids, logp, "forward", 2.0) for s in students],
        f"fused, top-{k} cache": lambda: d.fused_top_k_divergences(students, ids, logp, "forward", 2.0),
    }
    print(f"torch threads {torch.get_num_threads()}; two students' and one teacher's {n} x {vocab} logits, "
          f"forward KL at T=2, forward + backward, best of {repeat}")
    for name, f in cases.items():
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            sum(f()).backward()
            best = min(best, time.perf_counter() - t0)
            for s in students:
                s.grad = None
        print(f"{name:34s} {best:6.3f} s", flush=True)


if __name__ == "__main__":
    main()
