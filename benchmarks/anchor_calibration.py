"""How far fine-tuning moves the textually important weights: f^2 = sum_i I_i (theta_i - theta0_i)^2 /
sum_i I_i theta0_i^2 (the anchor term at strength 1) of trained runs against the pre-trained LLM, with I the
pre-trained LLM's textual importance on 1/30 of the training set (as ``strategy=anchor`` computes it).
What ``anchor.strength``'s default is calibrated on.

    python benchmarks/anchor_calibration.py --runs runs/distill_cmp/runs/full runs/distill_cmp/runs/lora \\
        --data runs/distill_cmp/data/train/manifest.jsonl [--importance DIR]
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--data", required=True, help="the training manifest (its 1/30, text input, gives the importance)")
    ap.add_argument("--importance", default=None, help="an importance run of the pre-trained LLM instead")
    ap.add_argument("--init", default="bundled:smollm2-135m+whisper-tiny.en")
    args = ap.parse_args()

    from speechkeep.importance.runs import batched, load_scores, queries_from_manifest
    from speechkeep.importance.taylor import compute_importance
    from speechkeep.models.llm import load_llm
    from speechkeep.models.persistence import load_speech_llm

    start, _ = load_speech_llm(args.init)
    if args.importance:
        scores = load_scores(args.importance)
    else:
        qs = queries_from_manifest(args.data, "text", start, 1 / 30, None, None, seed=0)
        scores = compute_importance(start, batched(qs, 8), include_adaptor=False).scores
    base = {n: p.detach() for n, p in load_llm(start.config.llm).model.named_parameters()}
    del start
    for run in args.runs:
        m, _ = load_speech_llm(run)
        if m.is_peft():
            m.llm = m.llm.merge_and_unload()
        num = den = 0.0
        for n, p in m.llm.named_parameters():
            w, b = scores[n], base[n]
            num += float((w * (p.detach() - b) ** 2).sum())
            den += float((w * b ** 2).sum())
        f2 = num / den
        print(f"{run}: f^2 = {f2:.3g} (importance-weighted relative change {100 * f2 ** 0.5:.2f}%); "
              f"anchor term at strength 1e5: {1e5 * f2:.3g}")


if __name__ == "__main__":
    main()
