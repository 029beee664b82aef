"""The seed papers' claims, each checked on a ``speechkeep reproduce`` run by a paired test on the same questions.

Every claim is an ordering of two measurements (a cell's T2T, S2T or ASR WER against another's, or seed 003's
degradation reduction against its 75% bar). A claim **holds** only where the paired test is significant in the
claimed direction (exact McNemar for accuracy, paired bootstrap for WER; 5% level); it is **reversed** where the
test is significant the other way, and **not shown** where the difference is not significant. Claims of parity
("ASR comparable to full fine-tuning", "T2T stable") hold unless the test finds a significant difference. A claim
whose cells were not run is listed as not measured.
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


def upscale_claims(cell: str, label: str) -> list[Claim]:
    """Seed 003's orderings for one up-scaling cell (its degradation reduction: :func:`reduction_claims`)."""
    return [
        Claim("003", f"{label} loses less text than full fine-tuning", (cell, "t2t"), ("full", "t2t"), "higher"),
        Claim("003", f"{label} loses less text than LoRA", (cell, "t2t"), ("lora", "t2t"), "higher"),
        Claim("003", f"{label} reaches ASR comparable to full fine-tuning", (cell, "asr"), ("full", "asr"), "not_worse"),
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
    Claim("001", "Table 3: LoRA r=24 loses S2T against r=16", ("lora_r24", "s2t"), ("lora_r16", "s2t"), "lower"),
    Claim("002", "modality inequivalence: full fine-tuning answers spoken questions worse than written ones",
          ("full", "s2t"), ("full", "t2t"), "lower"),
    Claim("002", "text-to-text distillation keeps more text than full fine-tuning", ("distill_t2t", "t2t"),
          ("full", "t2t"), "higher"),
    Claim("002", "cross-modal distillation keeps more text than full fine-tuning", ("distill", "t2t"), ("full", "t2t"),
          "higher"),
    Claim("002", "cross-modal distillation improves S2T over full fine-tuning", ("distill", "s2t"), ("full", "s2t"),
          "higher"),
    Claim("002", "the speech-to-text channel improves S2T over text-to-text distillation alone", ("distill", "s2t"),
          ("distill_t2t", "s2t"), "higher"),
)
"""Seeds 001 and 002: the orderings of their Tables 2 and 3 and their text, on the default cell names."""


def claims_for(labels: dict[str, str]) -> list[Claim]:
    """The seed claims plus seed 003's for every up-scaling cell of ``labels`` (cell name -> label)."""
    return [*SEED_CLAIMS, *(c for cell, label in labels.items() if cell.startswith("upscale")
                            for c in upscale_claims(cell, label))]


REDUCTION_BAR = 0.75
"""Seed 003: E-Branchformer up-scaling reduces text degradation by over 75% against full fine-tuning."""


def _verdict(direction: Direction, difference: float, significant: bool, lower_is_better: bool = False) -> str:
    if direction in ("same", "not_worse"):
        if not significant:
            return "holds (no significant difference)"
        worse = difference > 0 if lower_is_better else difference < 0
        if direction == "not_worse" and not worse:
            return "holds (significantly better)"
        return "does not hold (significantly " + ("worse" if worse else "different") + ")"
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
        ids = [i for i in (a or {}) if i in (b or {})]
        if not ids:
            missing = [cell for cell, got in ((c.a[0], a), (c.b[0], b)) if not got]
            rows.append({**row, "verdict": "not measured (needs " + ", ".join(dict.fromkeys(missing or [c.a[0]])) + ")"})
            continue
        if wer:
            r = paired_wer_difference([a[i] for i in ids], [b[i] for i in ids])
            p = None
        else:
            r = paired_difference([a[i] for i in ids], [b[i] for i in ids])
            p = r.p_value
        rows.append({**row, "n": len(ids), "difference": r.difference, "ci_low": r.ci_low, "ci_high": r.ci_high,
                     "p_value": p, "significant": bool(r.significant),
                     "verdict": _verdict(c.direction, r.difference, bool(r.significant), lower_is_better=wer)})
    return rows


def reduction_claims(reductions: dict[str, dict], labels: dict[str, str]) -> list[dict]:
    """Seed 003's bar per up-scaling cell: degradation reduction above 75%. Holds when the interval's lower end is
    above it, does not hold when its upper end is below it, and is not shown otherwise."""
    rows = []
    for cell, r in reductions.items():
        if not cell.startswith("upscale"):
            continue
        lo, hi = r.get("ci_low"), r.get("ci_high")
        if lo is not None and lo > REDUCTION_BAR:
            v = "holds"
        elif hi is not None and hi < REDUCTION_BAR:
            v = "does not hold (interval below 75%)"
        else:
            v = "not shown (interval includes 75%)"
        rows.append({"seed": "003", "claim": f"{labels.get(cell, cell)} reduces text degradation by over 75%",
                     "a": [cell, "t2t"], "b": ["full", "t2t"], "direction": "reduction", "difference": r.get("reduction"),
                     "ci_low": lo, "ci_high": hi, "p_value": None, "verdict": v})
    return rows
