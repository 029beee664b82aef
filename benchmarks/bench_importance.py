"""Cost of importance: time against plain forward+backward passes, and extra memory.

    python benchmarks/bench_importance.py --data runs/demo/data/train/manifest.jsonl --batches 6

Target (issue): importance over N batches <= 1.3x the time of N plain forward+backward passes, and at
most one extra fp32 copy of the parameters (the accumulator; ``signed_sum`` needs none beyond the
gradient buffers a backward pass allocates anyway).
"""

from __future__ import annotations

import argparse
import resource

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)

    from speechkeep.importance.runs import batched, queries_from_manifest
    from speechkeep.importance.taylor import compute_importance, plain_forward_backward_seconds, scored_parameters
    from speechkeep.models.speech_llm import SpeechLLM, SpeechLLMConfig

    model = SpeechLLM.build(SpeechLLMConfig())
    qs = queries_from_manifest(args.data, "text", model, None, args.batches * args.batch_size, None)
    bs = batched(qs, args.batch_size)[: args.batches]
    plain_forward_backward_seconds(model, bs[:1])  # warm-up
    plain = plain_forward_backward_seconds(model, bs)
    param_bytes = sum(p.numel() * 4 for p in scored_parameters(model).values())
    for conv in ("abs_sum", "signed_sum"):
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        res = compute_importance(model, bs, conv, progress=False)
        acc_bytes = sum(t.numel() * t.element_size() for t in res.scores.values())
        extra = acc_bytes if conv == "abs_sum" else 0
        print(f"{conv:10s} {res.meta['seconds']:6.1f} s vs plain fwd+bwd {plain:6.1f} s -> {res.meta['seconds'] / plain:.2f}x;"
              f" accumulator {extra / 2**20:.0f} MiB = {extra / param_bytes:.2f} fp32 parameter copies "
              f"(peak RSS grew {(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024:.0f} MiB)")
        del res


if __name__ == "__main__":
    main()
