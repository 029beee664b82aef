"""The earlier strategy comparisons (issues 14 and 15), now a thin wrapper of ``speechkeep reproduce``
(:mod:`speechkeep.recipes.reproduce`) with the importance cells off, as these comparisons had none:

    python benchmarks/strategy_comparison.py --preset distill --out runs/distill_cmp [--steps 300]
    python benchmarks/strategy_comparison.py --preset upscale --out runs/upscale_cmp [--reuse runs/distill_cmp]

is ``speechkeep reproduce preset=distill out=runs/distill_cmp steps=300 importance=false`` (and so on for each
option below). The on-disk layout and cell names are unchanged, so a directory this script wrote earlier is
resumed, its finished cells reused. Writes ``report.html``, ``report.md``, ``results.json``, ``cells.json`` and
``times.json``. Run it alone on the machine (one torch job at a time), or with OMP_NUM_THREADS=1 beside one
other 1-thread job.
"""

from __future__ import annotations

import argparse
import sys


def overrides(args: argparse.Namespace) -> list[str]:
    """The ``speechkeep reproduce`` key=value overrides of this script's options."""
    ov = [f"preset={args.preset}", f"out={args.out or f'runs/{args.preset}_cmp'}", f"steps={args.steps}",
          f"batch_size={args.batch_size}", f"lr={args.lr}", f"full_lr={args.full_lr}", f"upscale_lr={args.upscale_lr}",
          f"n_train={args.n_train}", f"eval_questions={args.eval_questions}", "importance=false"]
    if args.train_data:
        ov.append(f"train_data={args.train_data}")
    if args.eval_limit:
        ov.append(f"eval_limit={args.eval_limit}")
    if args.reuse:
        ov.append(f"reuse={args.reuse}")
    if args.only:
        ov.append(f"cells=[{args.only}]")
    return ov


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=["distill", "upscale"], default="distill")
    ap.add_argument("--out", default=None, help="default: runs/<preset>_cmp")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps of every strategy")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak lr of LoRA parameters (lora, distill)")
    ap.add_argument("--full-lr", type=float, default=5e-5, help="peak lr of the LLM's weights under full fine-tuning")
    ap.add_argument("--upscale-lr", type=float, default=2e-4, help="peak lr of the new blocks under upscale")
    ap.add_argument("--n-train", type=int, default=400, help="trainmodel questions (the demo's training set)")
    ap.add_argument("--train-data", default=None, help="an existing spoken training set (e.g. runs/demo/data/train)")
    ap.add_argument("--eval-questions", default="webquestions:clean", help="default: heldout + devtest (1,205)")
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--reuse", default=None, help="another comparison directory whose data and No-FT cells to use")
    ap.add_argument("--only", default=None, help="comma-separated strategy cells (default: the preset's)")
    args = ap.parse_args(argv)
    from speechkeep.cli import main as speechkeep

    return speechkeep(["reproduce", *overrides(args)])


if __name__ == "__main__":
    sys.exit(main())
