"""Human-readable tables of evaluation metrics (accuracies with their 95% bootstrap interval)."""

from __future__ import annotations

import json
from pathlib import Path


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _acc_ci(m: dict | None) -> str:
    """'12.0 [6.0, 19.0]' (accuracy % and its 95% interval) or '-'."""
    if not m:
        return "-"
    ci = m.get("ci95")
    return _pct(m["accuracy"]) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")


def outcomes(eval_dir: str | Path, task: str) -> dict[str, bool]:
    """Per-question correctness of one task from an evaluation's predictions.jsonl: id -> correct."""
    path = Path(eval_dir) / "predictions.jsonl"
    out: dict[str, bool] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("task") == task and row.get("correct") is not None:  # None: a question without answers, unscored
                out[row["id"]] = bool(row["correct"])
    if not out:
        raise ValueError(f"{path}: no scored predictions for task {task!r}")
    return out


def asr_errors(eval_dir: str | Path, task: str = "asr") -> dict[str, tuple[int, int]]:
    """Per-utterance ``(word edits, reference words)`` of an evaluation's ASR hypotheses (task ``asr``, or
    ``asr_ctc`` for the front-end's own CTC transcript): id -> pair, for :func:`paired_wer`."""
    from speechkeep.metrics import utterance_errors

    path = Path(eval_dir) / "predictions.jsonl"
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("task") == task:
                rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no {task!r} hypotheses")
    keep = [r for r in rows if r["reference"].strip()]
    errs = utterance_errors([r["reference"] for r in keep], [r["hypothesis"] for r in keep])
    if len(errs) != len(keep):  # a reference empty after normalization: match by recomputing one by one
        errs = [utterance_errors([r["reference"]], [r["hypothesis"]]) for r in keep]
        return {r["id"]: e[0] for r, e in zip(keep, errs) if e}
    return {r["id"]: e for r, e in zip(keep, errs)}


def paired_wer(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]]):
    """:func:`speechkeep.evaluate.stats.paired_wer_difference` of two :func:`asr_errors` on the same utterances."""
    from speechkeep.evaluate.stats import paired_wer_difference

    ids = [i for i in a if i in b]
    if len(ids) != len(a) or len(ids) != len(b):
        raise ValueError(f"paired WER needs the same utterances: {len(a)} vs {len(b)}, {len(ids)} in common")
    return paired_wer_difference([a[i] for i in ids], [b[i] for i in ids])


def paired(a: dict[str, bool], b: dict[str, bool]):
    """:func:`speechkeep.evaluate.stats.paired_difference` of two :func:`outcomes` on their common questions."""
    from speechkeep.evaluate.stats import paired_difference

    ids = [i for i in a if i in b]
    if len(ids) != len(a) or len(ids) != len(b):
        raise ValueError(f"paired comparison needs the same questions: {len(a)} vs {len(b)}, {len(ids)} in common")
    return paired_difference([a[i] for i in ids], [b[i] for i in ids])


def format_metrics(m: dict) -> str:
    lines = [f"model: {m['model']}   data: {m['data']}   n={m['n']}   max_new_tokens={m['max_new_tokens']}"]
    for task in ("t2t", "s2t", "cascade"):
        if task in m:
            extra = f"   (Whisper WER {100 * m[task]['asr_wer']:.1f}%)" if "asr_wer" in m[task] else ""
            lines.append(f"  {task:8s} accuracy {_acc_ci(m[task])}%  ({m[task]['correct']}/{m[task]['n']}; "
                         f"95% bootstrap interval in brackets){extra}")
    if "asr" in m:
        ctc = f"; the front-end's own CTC transcript {100 * m['asr']['ctc_wer']:.1f}%" if "ctc_wer" in m["asr"] else ""
        ci = m["asr"].get("ci95")
        ci = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
        lines.append(f"  asr      WER {100 * m['asr']['wer']:.1f}%{ci} (LLM-written){ctc}")
    if "ppl" in m:
        num = lambda x: "not finite" if x is None else f"{x:.2f}"  # noqa: E731
        sp = f", speech input {num(m['ppl']['speech'])}" if "speech" in m["ppl"] else ""
        lines.append(f"  ppl      text input {num(m['ppl']['text'])}{sp}")
    if "modality_gap" in m:
        lines.append(f"  modality gap (T2T - S2T): {100 * m['modality_gap']:.1f} points")
    vb = m.get("vs_baseline")
    if vb:
        for task, r in vb.get("retention", {}).items():
            lines.append(f"  {task} retention vs baseline {_pct(r)}%, drop {100 * vb['drop'][task]:.1f} points")
    for task, why in m.get("skipped", {}).items():
        lines.append(f"  ({task} skipped: {why})")
    if m.get("without_answers"):
        w = m["without_answers"]
        lines.append(f"  ({w['n']} items have no reference answers and are not scored for accuracy: "
                     f"{', '.join(w['ids'][:5])}{', ...' if w['n'] > 5 else ''})")
    if m.get("non_finite"):
        lines.append(f"  (not finite, written as null: {', '.join(m['non_finite']['keys'])})")
    return "\n".join(lines)


def markdown_table(rows: list[tuple[str, dict]], base: dict | None = None) -> str:
    """One row per (name, metrics): T2T and S2T accuracy with their 95% bootstrap interval, T2T
    retention vs ``base``, modality gap."""
    out = ["| model | T2T acc % [95% CI] | S2T acc % [95% CI] | T2T retention % | modality gap (points) |",
           "|---|---|---|---|---|"]
    b = base["t2t"]["accuracy"] if base and "t2t" in base else None
    for name, m in rows:
        t2t = m.get("t2t", {}).get("accuracy")
        s2t = m.get("s2t", {}).get("accuracy")
        ret = (t2t / b) if (t2t is not None and b) else None
        gap = (t2t - s2t) if (t2t is not None and s2t is not None) else None
        out.append(f"| {name} | {_acc_ci(m.get('t2t'))} | {_acc_ci(m.get('s2t'))} | {_pct(ret)} | "
                   f"{'-' if gap is None else f'{100 * gap:.1f}'} |")
    return "\n".join(out)
