"""The seed papers' claims, each checked on a ``speechkeep reproduce`` run by a paired test on the same questions.

Every claim is an ordering of two measurements (a cell's T2T, S2T or ASR WER against another's, or seed 003's
degradation reduction against its 75% bar). A claim **holds** only where the paired test is significant in the
claimed direction (exact McNemar for accuracy, paired bootstrap for WER; 5% level); it is **reversed** where the
test is significant the other way, and **not shown** where the difference is not significant. A claim of parity
("ASR comparable to full fine-tuning", "T2T stable") cannot be proven by a test of difference: it is **not refuted**
where no significant difference is found (the interval says how large a difference is still possible) and
**refuted** where one is. A claim whose cells were not run is listed as not measured.

Checked: the orderings of seed 001's Tables 2 and 3, seed 002's and seed 003's (the latter per up-scaling cell, its
75% bar on E-Branchformer cells only, as the paper claims it). Seed 001's Table 1 and Figs. 1-4 are shown in the
report, not tested here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

Direction = Literal["higher", "lower", "same", "not_worse"]


@dataclass(frozen=True)
class Claim:
    """One ordering the seed papers report."""

    seed: str
    """Seed document number ('001', '002', '003')."""
    text: str
    """The claim in words, as the paper makes it."""
    a: tuple[str, str]
    """(cell, task) of the left-hand side; cell 'noft' is the text LLM as is; task t2t, s2t or asr."""
    b: tuple[str, str]
    """(cell, task) of the right-hand side."""
    direction: Direction
    """'higher': A above B; 'lower': A below B; 'same': no difference (accuracy); 'not_worse': A's WER not above B's."""


def upscale_claims(cell: str, label: str, block: str) -> list[Claim]:
    """Seed 003's orderings for one up-scaling cell with ``block`` ('transformer' or 'ebranchformer') blocks (the
    degradation reduction of E-Branchformer cells: :func:`reduction_claims`)."""
    asr = (Claim("003", f"{label} matches or surpasses full fine-tuning's ASR", (cell, "asr"), ("full", "asr"), "not_worse")
           if block == "ebranchformer" else
           Claim("003", f"{label} reaches ASR comparable to full fine-tuning", (cell, "asr"), ("full", "asr"), "same"))
    return [
        Claim("003", f"{label} loses less text than full fine-tuning", (cell, "t2t"), ("full", "t2t"), "higher"),
        Claim("003", f"{label} loses less text than LoRA", (cell, "t2t"), ("lora", "t2t"), "higher"),
        asr,
    ]


SEED_CLAIMS: tuple[Claim, ...] = (
    Claim("001", "speech fine-tuning degrades text: full fine-tuning's T2T below the base LLM's", ("full", "t2t"),
          ("noft", "t2t"), "lower"),
    Claim("001", "Layer-LR keeps more text than full fine-tuning", ("layer_lr", "t2t"), ("full", "t2t"), "higher"),
    Claim("001", "LoRA keeps more text than full fine-tuning", ("lora", "t2t"), ("full", "t2t"), "higher"),
    Claim("001", "Layer-LR improves S2T over full fine-tuning", ("layer_lr", "s2t"), ("full", "s2t"), "higher"),
    Claim("001", "LoRA improves S2T over full fine-tuning", ("lora", "s2t"), ("full", "s2t"), "higher"),
    Claim("001", "Layer-LR keeps more text than LoRA", ("layer_lr", "t2t"), ("lora", "t2t"), "higher"),
    Claim("001", "LoRA reaches higher S2T than Layer-LR", ("lora", "s2t"), ("layer_lr", "s2t"), "higher"),
    Claim("001", "Table 3: LoRA r=16 improves S2T over r=8", ("lora_r16", "s2t"), ("lora", "s2t"), "higher"),
    Claim("001", "Table 3: LoRA r=16 keeps r=8's T2T (stable)", ("lora_r16", "t2t"), ("lora", "t2t"), "same"),
    Claim("001", "Table 3: LoRA r=24 loses T2T against r=16", ("lora_r24", "t2t"), ("lora_r16", "t2t"), "lower"),
    Claim("001", "Table 3: LoRA r=24 loses S2T against r=16 (the Web Questions column)", ("lora_r24", "s2t"),
          ("lora_r16", "s2t"), "lower"),
    Claim("002", "modality inequivalence: full fine-tuning answers spoken questions worse than written ones",
          ("full", "s2t"), ("full", "t2t"), "lower"),
    # the distillation cells train a LoRA student: their counterpart without distillation is `lora`
    Claim("002", "cross-modal distillation keeps more text than the same student trained without it",
          ("distill", "t2t"), ("lora", "t2t"), "higher"),
    Claim("002", "cross-modal distillation improves S2T over the same student trained without it",
          ("distill", "s2t"), ("lora", "s2t"), "higher"),
    Claim("002", "the text-to-text channel alone keeps more text than the same student trained without it",
          ("distill_t2t", "t2t"), ("lora", "t2t"), "higher"),
)
"""Seeds 001 and 002: the orderings of their Tables 2 and 3 and their text, on the default cell names."""


def claims_for(upscale_cells: dict[str, tuple[str, str]]) -> list[Claim]:
    """The seed claims plus seed 003's for every up-scaling cell (cell name -> (label, block)); with both block types
    interleaved, also seed 003's "E-Branchformer blocks reach better ASR than Transformer blocks"."""
    claims = [*SEED_CLAIMS, *(c for cell, (label, block) in upscale_cells.items() for c in upscale_claims(cell, label, block))]
    if {"upscale_ebranchformer", "upscale_transformer"} <= set(upscale_cells):
        claims.append(Claim("003", "E-Branchformer blocks reach better ASR than Transformer blocks (both interleaved)",
                            ("upscale_ebranchformer", "asr"), ("upscale_transformer", "asr"), "lower"))
    return claims


REDUCTION_BAR = 0.75
"""Seed 003: E-Branchformer up-scaling reduces text degradation by over 75% against full fine-tuning."""


def _verdict(direction: Direction, difference: float, significant: bool, lower_is_better: bool = False) -> str:
    if direction in ("same", "not_worse"):
        if not significant:
            return "not refuted (no significant difference)"
        worse = difference > 0 if lower_is_better else difference < 0
        if direction == "not_worse" and not worse:
            return "holds (significantly better)"
        return "refuted (significantly " + ("worse" if worse else "better" if direction == "same" else "different") + ")"
    if not significant:
        return "not shown (no significant difference)"
    return "holds" if (difference > 0) == (direction == "higher") else "reversed (significant)"


def check_claims(accuracy: Callable[[str, str], dict[str, bool] | None],
                 errors: Callable[[str], dict[str, tuple[int, int]] | None],
                 claims: list[Claim] | tuple[Claim, ...] = SEED_CLAIMS) -> list[dict]:
    """One row per claim: the paired difference A - B (points), its interval, p and the verdict.

    ``accuracy(cell, task)`` gives a cell's per-question outcomes (None: not evaluated); ``errors(cell)`` its
    per-utterance ASR (errors, words) (None: not evaluated)."""
    from speechkeep.evaluate.stats import paired_difference, paired_wer_difference

    rows = []
    for c in claims:
        row = {"seed": c.seed, "claim": c.text, "a": list(c.a), "b": list(c.b), "direction": c.direction}
        wer = c.a[1] == "asr"
        a = errors(c.a[0]) if wer else accuracy(*c.a)
        b = errors(c.b[0]) if wer else accuracy(*c.b)
        missing = [cell for cell, got in ((c.a[0], a), (c.b[0], b)) if not got]
        if missing:
            rows.append({**row, "verdict": "not measured (needs " + ", ".join(dict.fromkeys(missing)) + ")"})
            continue
        if set(a) != set(b):  # a paired test needs the same questions (e.g. not two different eval_limits)
            rows.append({**row, "verdict": f"not comparable (evaluated on different questions: {len(a)} vs {len(b)})"})
            continue
        ids = sorted(a)
        try:
            if wer:
                r = paired_wer_difference([a[i] for i in ids], [b[i] for i in ids])
                p = None
            else:
                r = paired_difference([a[i] for i in ids], [b[i] for i in ids])
                p = r.p_value
        except ValueError as e:
            rows.append({**row, "verdict": f"not comparable ({e})"})
            continue
        rows.append({**row, "n": len(ids), "difference": r.difference, "ci_low": r.ci_low, "ci_high": r.ci_high,
                     "p_value": p, "significant": bool(r.significant),
                     "verdict": _verdict(c.direction, r.difference, bool(r.significant), lower_is_better=wer)})
    return rows


def reduction_claims(reductions: dict[str, dict], labels: dict[str, str]) -> list[dict]:
    """Seed 003's bar per E-Branchformer up-scaling cell (``labels``: those cells -> label): degradation reduction
    above 75%. Holds when the interval's lower end is above it, does not hold when its upper end is below it, and is
    not shown otherwise. Not measurable when full fine-tuning's T2T did not drop, or did not drop significantly (more
    than 2.5% of the bootstrap resamples without a drop)."""
    rows = []
    for cell, label in labels.items():
        r = reductions.get(cell)
        if r is None:
            continue
        lo, hi = r.get("ci_low"), r.get("ci_high")
        if r.get("reduction") is None:
            v = "not measurable (full fine-tuning's T2T did not drop)"
        elif r.get("undefined_fraction", 0) > 0.025 or lo is None:
            v = (f"not measurable (full fine-tuning's drop is not significant: {100 * r.get('undefined_fraction', 0):.1f}% "
                 "of resamples without one)")
        elif lo > REDUCTION_BAR:
            v = "holds"
        elif hi is not None and hi < REDUCTION_BAR:
            v = "does not hold (interval below 75%)"
        else:
            v = "not shown (interval includes 75%)"
        rows.append({"seed": "003", "claim": f"{label} reduces text degradation by over 75%",
                     "a": [cell, "t2t"], "b": ["full", "t2t"], "direction": "reduction", "difference": r.get("reduction"),
                     "ci_low": lo, "ci_high": hi, "p_value": None, "verdict": v})
    return rows
