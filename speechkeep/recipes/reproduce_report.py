"""The report of ``speechkeep reproduce``: ``report.html`` (self-contained, figures embedded as base64
PNG), ``report.md`` (figures as files under ``figures/``) and ``results.json``, built from the cells'
outputs on disk (any subset of finished cells: the report says what is missing).

Contents: Table 1 (deactivation of the top/bottom/random parameters by textual importance), Table 2
(T2T / S2T / retention / modality gap / ASR WER / perplexity per strategy, 95% bootstrap intervals),
Table 3 (LoRA rank), seed 003's degradation reduction, paired tests of every strategy against the
reference (``full``) and No-FT (exact McNemar on accuracy, paired bootstrap on WER; a difference is
called one only when significant), Fig. 1 (rank clustering), Figs. 2/3 (layer-wise importance before
and after each strategy, JS divergence and Spearman), Fig. 4 (parameter-change heatmaps), a Pareto plot
of T2T retention against S2T accuracy, training curves, and the command, versions, machine and wall
time of every cell.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIGURES = "figures"


# ---------------------------------------------------------------------------------------- a tiny document model
@dataclass
class Section:
    """A report section: paragraphs, tables and figures, rendered to both Markdown and HTML."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def p(self, text: str) -> "Section":
        self.blocks.append(("p", text))
        return self

    def table(self, header: list[str], rows: list[list[Any]]) -> "Section":
        self.blocks.append(("table", header, rows))
        return self

    def fig(self, path: Path, caption: str) -> "Section":
        self.blocks.append(("fig", path, caption))
        return self

    def items(self, items: list[str]) -> "Section":
        self.blocks.append(("ul", items))
        return self

    def pre(self, text: str) -> "Section":
        self.blocks.append(("pre", text))
        return self


def _cell_text(x: Any) -> str:
    return "-" if x is None else str(x)


def render_markdown(title: str, sections: list[Section], out: Path) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            if b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "ul":
                lines += [f"- {x}" for x in b[1]] + [""]
            elif b[0] == "pre":
                lines += ["```", b[1], "```", ""]
            elif b[0] == "table":
                lines += ["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                lines += ["| " + " | ".join(_cell_text(c).replace("|", "\\|") for c in r) + " |" for r in b[2]] + [""]
            elif b[0] == "fig":
                lines += [f"![{b[2]}]({b[1].relative_to(out).as_posix()})", "", f"*{b[2]}*", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #bbb;padding:4px 8px;text-align:left}
th{background:#eee}figure{margin:1.5em 0}img{max-width:100%;border:1px solid #ddd}figcaption{font-size:0.9em;color:#555}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:0.8em;white-space:pre-wrap}code{font-size:0.85em}"""


def compact_png(path: Path) -> bytes:
    """The PNG's bytes, re-encoded with a 256-colour palette when that is smaller (for embedding).

    Matplotlib writes 32-bit RGBA; a figure drawn with one colour map has far fewer colours, so the palette
    version looks the same and is 0.28-0.43 of the size (measured: a parameter-change grid 500 KB -> 215 KB),
    which keeps a report with a dozen heatmaps small enough to commit and to open.
    """
    raw = path.read_bytes()
    from PIL import Image

    with Image.open(path) as im:
        if im.format != "PNG":
            return raw
        buf = io.BytesIO()
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
    return buf.getvalue() if buf.tell() < len(raw) else raw


def render_html(title: str, sections: list[Section]) -> str:
    """One self-contained page: every figure is embedded as a base64 data URI (no other file is read)."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    parts.append("<nav><ul>" + "".join(f'<li><a href="#s{i}">{e(s.title)}</a></li>' for i, s in enumerate(sections))
                 + "</ul></nav>")
    for i, s in enumerate(sections):
        parts.append(f'<section id="s{i}"><h2>{e(s.title)}</h2>')
        for b in s.blocks:
            if b[0] == "p":
                parts.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "ul":
                parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
            elif b[0] == "pre":
                parts.append(f"<pre>{e(b[1])}</pre>")
            elif b[0] == "table":
                parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr></thead><tbody>"
                             + "".join("<tr>" + "".join(f"<td>{e(_cell_text(c))}</td>" for c in r) + "</tr>" for r in b[2])
                             + "</tbody></table>")
            elif b[0] == "fig":
                data = base64.b64encode(compact_png(Path(b[1]))).decode("ascii")
                parts.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{e(b[2])}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------- numbers
def _interval(lo: float | None, hi: float | None) -> str | None:
    """'lo to hi' in points (fractions x 100); an open end (None beside a finite one) is -inf / +inf."""
    if lo is None and hi is None:
        return None
    return (f"{'-inf' if lo is None else f'{100 * lo:+.1f}'} to {'+inf' if hi is None else f'{100 * hi:+.1f}'}")


def _aligned_asr_note(asr: dict | None) -> str:
    """Why the aligned front-end's ASR WER is large, and its own (CTC) transcript's WER."""
    if not asr or asr.get("ctc_wer") is None:
        return ""
    ci = asr.get("ctc_wer_ci95")
    ci_text = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
    return (" The aligned front-end row's ASR WER is the LLM given the transcription instruction, which the front-end "
            "alone was never trained to follow (it answers or rambles instead of repeating); the front-end's own CTC "
            f"transcript has WER {_pct(asr['ctc_wer'])}{ci_text}.")


def _pct(x: float | None, nd: int = 1) -> str | None:
    return None if x is None else f"{100 * x:.{nd}f}"


def _acc(m: dict | None) -> str | None:
    if not m or m.get("accuracy") is None:
        return None
    ci = m.get("ci95")
    return _pct(m["accuracy"]) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")


def _point(c: dict, task: str) -> dict:
    """A restoration-curve point's task as an evaluation's accuracy record (for _acc and the Pareto plot)."""
    return {"accuracy": c.get(task), "ci95": c.get(f"{task}_ci95")}


CONTROL_WHAT = {"random": "a seeded random draw", "change": "the weights fine-tuning moved most"}
"""The control rankings of the restoration (``speechkeep restore ranking=...``)."""

BEYOND_PAIRS = (("anchor", "full"), ("anchor", "layer_lr"), ("lora_importance", "lora"))
"""Issue 19's matched comparisons: each method beyond the seeds against the seed strategy it builds on."""


def _beyond_section(results: dict, metrics: dict, labels: dict, ev: Path, out: Path, curves_r: dict, outcomes,
                    paired) -> "Section":
    """Issue 19: anchoring, importance-guided LoRA and restoration, each against the strategy it builds on (paired
    tests), and each against the seeds' best trade-off: T2T drop at most layer_lr's (T2T at least layer_lr's) while
    S2T is at least LoRA's."""
    sec = Section("Beyond the seeds: anchoring, importance-guided LoRA and restoration")
    cand: dict[str, Path] = {labels.get(n, n): ev / n for n in ("anchor", "lora_importance") if n in metrics}
    comps: list[dict] = []

    def test(a_label, a_dir, b_label, b_dir, task):
        a, b = _outcomes_or_none(outcomes, a_dir, task), _outcomes_or_none(outcomes, b_dir, task)
        if not a or not b:
            return None
        try:
            c = paired(a, b)
        except ValueError:
            return None
        comps.append({"a": a_label, "b": b_label, "task": task.upper(), **c.to_dict(), "verdict": verdict(c),
                      "describe": c.describe()})
        return c

    for a, b in BEYOND_PAIRS:
        if a in metrics and b in metrics:
            for task in ("t2t", "s2t"):
                test(labels.get(a, a), ev / a, labels.get(b, b), ev / b, task)
    for key, curve in curves_r.items():
        n, _, control = key.partition(":")
        for c in curve:
            p = c["fraction_percent"]
            d = out / (f"restore_{control}" if control else "restore") / n / f"p{p:g}" / "eval"
            if p > 0 and (d / "predictions.jsonl").is_file():
                name = f"{labels.get(n, n)}, top {p:g}% restored" + (f" ({control} ranking)" if control else "")
                cand[name] = d
                for task in ("t2t", "s2t"):
                    test(name, d, labels.get(n, n), ev / n, task)
                if control:  # the importance ranking at the same p against the control
                    imp = out / "restore" / n / f"p{p:g}" / "eval"
                    for task in ("t2t", "s2t"):
                        test(f"{labels.get(n, n)}, top {p:g}% restored", imp, name, d, task)
    sec.table(COMPARISON_HEADER, _comparison_rows(comps) or [["(no pair evaluated yet)"] + [None] * 7])

    trade, box = [], None
    if "layer_lr" in metrics and "lora" in metrics and cand:
        box = {"t2t_at_least": metrics["layer_lr"].get("t2t", {}).get("accuracy"),
               "s2t_at_least": metrics["lora"].get("s2t", {}).get("accuracy")}
        for name, d in cand.items():
            t = test(name, d, labels.get("layer_lr", "layer_lr"), ev / "layer_lr", "t2t")
            s_ = test(name, d, labels.get("lora", "lora"), ev / "lora", "s2t")
            if t is None or s_ is None:
                continue
            meets = t.difference >= 0 and s_.difference >= 0
            fails = [f"{w} significantly below {o}'s" for w, o, c in (("T2T", "layer_lr", t), ("S2T", "LoRA", s_))
                     if c.difference < 0 and c.p_value < 0.05]
            better = [f"{w} significantly above {o}'s" for w, o, c in (("T2T", "layer_lr", t), ("S2T", "LoRA", s_))
                      if c.difference > 0 and c.p_value < 0.05]
            if meets:
                v = "inside the box" + (f" ({'; '.join(better)})" if better else " (on point estimates; no significant gain)")
            else:
                v = "outside the box" + (f": {'; '.join(fails)}" if fails else " on point estimates (not significant)")
            trade.append({"model": name, "t2t_minus_layer_lr": t.difference, "t2t_p": t.p_value,
                          "s2t_minus_lora": s_.difference, "s2t_p": s_.p_value, "meets": meets,
                          "significant_fail": bool(fails), "significant_gain": better, "verdict": v})
    sec.p("The seeds' best trade-off: T2T drop at most layer_lr's (T2T at least layer_lr's) while S2T is at least "
          "LoRA's. Paired exact McNemar tests on the same questions; a model is called better or worse only where the "
          "test is significant at the 5% level.")
    sec.table(["model", "T2T - layer_lr (points, p)", "S2T - LoRA (points, p)", "verdict"],
              [[r["model"], f"{100 * r['t2t_minus_layer_lr']:+.1f} (p {r['t2t_p']:.3g})",
                f"{100 * r['s2t_minus_lora']:+.1f} (p {r['s2t_p']:.3g})", r["verdict"]] for r in trade]
              or [["needs layer_lr, lora and anchor / lora_importance / restore evaluations", None, None, None]])
    results["beyond_the_seeds"] = {"comparisons": comps, "trade_off_box": box, "trade_off": trade}
    return sec


def _claims_section(results: dict, variants: dict, labels: dict, ev: Path, red: dict, outcomes, asr_errors) -> "Section":
    """Each ordering the seed papers report, checked by a paired test on this run's cells (seed_claims.py)."""
    from speechkeep.recipes.seed_claims import check_claims, claims_for, reduction_claims

    def errors(cell):
        try:
            return asr_errors(ev / cell)
        except (ValueError, OSError):
            return None

    upscale = {n: (v.label, v.setting("upscale.block", "transformer")) for n, v in variants.items() if v.strategy == "upscale"}
    rows = check_claims(lambda cell, task: _outcomes_or_none(outcomes, ev / cell, task), errors, claims_for(upscale))
    rows += reduction_claims({k: v.to_dict() for k, v in red.items()},
                             {n: label for n, (label, block) in upscale.items() if block == "ebranchformer"})
    results["seed_claims"] = rows
    name = {**labels, "noft": "No-FT"}

    def side(x):
        return f"{name.get(x[0], x[0])} {x[1].upper() if x[1] != 'asr' else 'ASR WER'}"

    sec = Section("Claims of the seed papers, checked here")
    sec.p("Each ordering the seed papers report, tested on this run: it holds only where the paired test (exact McNemar "
          "on the same questions; WER: paired bootstrap; 5% level) is significant in the claimed direction, is reversed "
          "where it is significant the other way, and is not shown otherwise. A parity claim is not refuted where no "
          "significant difference is found (the interval bounds the difference still possible) and refuted where one is. "
          "Seed 003's 75% bar (E-Branchformer cells) is checked on the degradation reduction's 95% interval. Seed 001's "
          "Table 1 and Figs. 1-4 are shown above and below, not tested.")
    sec.table(["seed", "claim", "A", "B", "A - B (points)", "95% CI", "p", "verdict"],
              [[r["seed"], r["claim"], side(r["a"]), side(r["b"]),
                (f"{100 * r['difference']:+.1f}" if r["direction"] != "reduction" else f"{_pct(r['difference'])}%")
                if r.get("difference") is not None else None,
                _interval(r.get("ci_low"), r.get("ci_high")),
                f"{r['p_value']:.3g}" if r.get("p_value") is not None else None, r["verdict"]] for r in rows])
    return sec


COMPARISON_HEADER = ["A", "B", "task", "A - B (points)", "95% CI", "A only / B only", "p", "verdict"]


def _comparison_rows(comps: list[dict]) -> list[list]:
    """Table rows of paired comparisons (accuracy: McNemar; WER: paired bootstrap, no discordant counts)."""
    return [[c["a"], c["b"], c["task"], f"{100 * c['difference']:+.1f}",
             _interval(c["ci_low"], c["ci_high"]),
             f"{c['only_a']} / {c['only_b']}" if "only_a" in c else None,
             f"{c['p_value']:.3g}" if c.get("p_value") is not None else "bootstrap", c["verdict"]] for c in comps]


def _outcomes_or_none(outcomes, eval_dir: Path, task: str) -> dict[str, bool] | None:
    try:
        return outcomes(eval_dir, task)
    except (ValueError, OSError):
        return None


def _wer(m: dict | None) -> str | None:
    if not m or m.get("wer") is None:
        return None
    ci = m.get("ci95")
    return _pct(m["wer"]) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")


def _finite(obj: Any) -> Any:
    """NaN and infinity -> None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _absent(cfg, cells: str) -> str:
    return "importance cells are off (importance=false)" if not cfg.importance else f"not run yet (cell {cells})"


def verdict(c, higher_is_better: bool = True) -> str:
    """'higher' / 'lower' only for a significant difference; otherwise 'no significant difference'."""
    if not c.significant:
        return "no significant difference"
    return ("higher" if c.difference > 0 else "lower") + ("" if higher_is_better else " (worse)" if c.difference > 0 else " (better)")


def _read_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (ValueError, OSError):
        return None


def training_curve(run_dir: Path) -> dict[str, list[float]]:
    """step and loss columns of a run's metrics.csv (empty if it has none)."""
    p = run_dir / "metrics.csv"
    if not p.is_file():
        return {}
    steps, loss, elapsed = [], [], []
    with open(p, newline="") as f:
        for row in csv.DictReader(f):
            try:
                s, v = int(row["step"]), float(row["loss"])
            except (KeyError, TypeError, ValueError):
                continue
            steps.append(s)
            loss.append(v)
            try:
                elapsed.append(float(row.get("elapsed_s") or "nan"))
            except ValueError:
                elapsed.append(float("nan"))
    return {"step": steps, "loss": loss, "elapsed_s": elapsed}


def median_step_seconds(curve: dict) -> float | None:
    """The median seconds per optimizer step between consecutive metrics.csv rows: unlike wall time / steps, a run
    that was paused or stopped and resumed keeps its true step time."""
    import statistics

    st, el = curve.get("step", []), curve.get("elapsed_s", [])
    rates = [(e1 - e0) / (s1 - s0) for s0, s1, e0, e1 in zip(st, st[1:], el, el[1:])
             if s1 > s0 and math.isfinite(e0) and math.isfinite(e1) and e1 > e0]
    return statistics.median(rates) if rates else None


# ---------------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_points(rows: dict[str, dict], base_acc: float | None) -> list[dict]:
    """Per model: x = T2T retention % (T2T accuracy % when No-FT's is 0), y = S2T accuracy %, with
    intervals, and whether it is on the Pareto front (no other point is at least as good on both and
    better on one)."""
    pts = []
    for name, m in rows.items():
        t2t, s2t = m.get("t2t"), m.get("s2t")
        if not t2t or not s2t:
            continue
        scale = (100 / base_acc) if base_acc else 100
        pts.append({"name": name, "x": t2t["accuracy"] * scale, "y": 100 * s2t["accuracy"],
                    "x_ci": [v * scale for v in t2t.get("ci95") or [t2t["accuracy"]] * 2],
                    "y_ci": [100 * v for v in s2t.get("ci95") or [s2t["accuracy"]] * 2]})
    for p in pts:
        p["pareto"] = not any(q is not p and q["x"] >= p["x"] and q["y"] >= p["y"] and (q["x"] > p["x"] or q["y"] > p["y"])
                              for q in pts)
    return pts


def plot_pareto(pts: list[dict], out: Path, retention: bool) -> Path:
    """Each model a numbered point with its 95% intervals; the key (number -> model) beside the axes, so that two dozen
    long names never overlap the points or each other."""
    plt = _plt()
    fig = plt.figure(figsize=(12, 6))
    ax = fig.add_axes((0.07, 0.1, 0.5, 0.8))
    for i, p in enumerate(pts, 1):
        colour = "C3" if p["pareto"] else "C0"
        ax.errorbar(p["x"], p["y"], xerr=[[p["x"] - p["x_ci"][0]], [p["x_ci"][1] - p["x"]]],
                    yerr=[[p["y"] - p["y_ci"][0]], [p["y_ci"][1] - p["y"]]], fmt="none", ecolor=colour, elinewidth=0.8,
                    capsize=2, alpha=0.35)
        ax.plot(p["x"], p["y"], "o" if p["pareto"] else "s", ms=6, color=colour)
        ax.annotate(str(i), (p["x"], p["y"]), textcoords="offset points", xytext=(4, 3), fontsize=8, weight="bold",
                    color=colour)
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["x"])
    if len(front) > 1:
        ax.plot([p["x"] for p in front], [p["y"] for p in front], "--", color="C3", lw=1, label="Pareto front")
        ax.legend(fontsize=8, loc="lower left")
    fig.text(0.6, 0.9, "\n".join(f"{i:>2}  {p['name']}{'  [front]' if p['pareto'] else ''}" for i, p in enumerate(pts, 1)),
             va="top", ha="left", fontsize=7.5, family="monospace")
    ax.set_xlabel("T2T retention % of No-FT" if retention else "T2T accuracy % (No-FT scores 0: no retention)")
    ax.set_ylabel("S2T accuracy %")
    ax.set_title("Text ability kept vs speech ability gained (95% intervals)")
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_curves(curves: dict[str, dict], out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, c in curves.items():
        if c.get("step"):
            ax.plot(c["step"], c["loss"], label=name, lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Training curves (metrics.csv of each run)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------- the report
def write_report(cfg, out: Path, cells: list, init: str | None) -> dict:
    """Build the three reports from every finished cell; returns the results (also in results.json)."""
    from speechkeep.config import config_to_dict
    from speechkeep.evaluate.report import asr_errors, outcomes, paired, paired_wer
    from speechkeep.evaluate.stats import degradation_reduction, retention_ci
    from speechkeep.io import atomic_path, write_json
    from speechkeep.recipes.reproduce import LORA_RANKS, Ledger

    ev, figs = out / "eval", out / FIGURES
    figs.mkdir(parents=True, exist_ok=True)
    variants = cfg.variants()
    ref = cfg.reference or cfg.resolved_preset().reference
    ledger = Ledger(out)
    metrics = {n: m for n in ["noft", "aligned", *variants] if (m := _read_json(ev / n / "metrics.json"))}
    noft = metrics.get("noft")
    names = [n for n in variants if n in metrics]
    summaries = {n: s for n in variants if (s := _read_json(out / "runs" / n / "summary.json"))}
    base_acc = noft["t2t"]["accuracy"] if noft and "t2t" in noft else None
    results: dict[str, Any] = {"config": config_to_dict(cfg), "init_from": init, "reference": ref, "evaluations": metrics,
                               "train_summaries": summaries}
    sections: list[Section] = []
    preset = cfg.resolved_preset()

    # --- setup
    n_eval = noft["n"] if noft else None
    targets = "the LLM's own greedy answers" if cfg.teacher else "the responses of the question file"
    s = Section("Setup").p(
        f"{preset.title}. LLM {cfg.llm}, speech encoder {cfg.speech_encoder}; every strategy starts from "
        f"{init or 'a fresh adaptor'}, trains {cfg.steps} optimizer steps of {cfg.batch_size} on the same spoken "
        f"training set ({cfg.n_train} {cfg.train_questions} questions, "
        f"{targets} as targets; tasks "
        f"{cfg.resolved_train_tasks()}), seed {cfg.seed}; LoRA/default lr {cfg.lr:g}, full and layer_lr lr {cfg.full_lr:g}, "
        f"upscale new-block lr {cfg.upscale_lr:g}, aligned adaptor lr {cfg.adaptor_lr:g}.").p(
        f"Evaluation: {n_eval if n_eval is not None else '?'} held-out questions ({cfg.eval_questions}) spoken by the "
        f"held-out voice {cfg.eval_voice}; greedy decoding, {cfg.eval_max_new_tokens} new tokens. Brackets: 95% "
        "percentile-bootstrap intervals over the questions. A difference between two models is called a difference "
        "only when its paired test is significant at the 5% level (exact McNemar for accuracy, paired bootstrap for WER); "
        "otherwise the report says 'no significant difference'.")
    missing = [c.name for c in cells if not c.done() and not ledger.cells.get(c.name, {}).get("skipped")]
    if missing:
        s.p(f"Not finished yet ({len(missing)} cells; run the same command again to go on): {', '.join(missing)}.")
    sections.append(s)

    # --- Table 2
    rows, table2 = [], {}
    if noft:
        table2["No-FT (text LLM as is)"] = {"t2t": noft.get("t2t"), "ppl": noft.get("ppl")}
        if "cascade" in noft:
            from speechkeep.models.speech_encoder import whisper_label

            c = noft["cascade"]
            table2[f"cascade ({whisper_label(c.get('whisper'))} transcript -> text LLM)"] = {
                "s2t": c, "asr": {"wer": c.get("asr_wer"), "ci95": c.get("asr_wer_ci95")}}
        if "aligned" in metrics:
            table2["aligned front-end, before any strategy"] = {"t2t": noft.get("t2t"), **metrics["aligned"]}
    labels = {n: variants[n].label for n in variants}
    for n in names:
        table2[n] = metrics[n]
    noft_t2t = _outcomes_or_none(outcomes, ev / "noft", "t2t") if noft and "t2t" in noft else None
    retention: dict[str, list] = {}
    for key, m in table2.items():
        t2t, s2t = (m.get("t2t") or {}).get("accuracy"), (m.get("s2t") or {}).get("accuracy")
        ppl = m.get("ppl") or {}
        summ = summaries.get(key, {})
        ret = _pct(t2t / base_acc) if t2t is not None and base_acc else None
        x_t2t = _outcomes_or_none(outcomes, ev / key, "t2t") if key in names and noft_t2t else None
        if x_t2t and not set(noft_t2t) <= set(x_t2t):
            ret = None  # not evaluated on No-FT's questions: a ratio of the two accuracies would compare other questions
        elif x_t2t:
            ids = sorted(noft_t2t)
            r = retention_ci([noft_t2t[i] for i in ids], [x_t2t[i] for i in ids])
            if r:
                retention[key] = list(r)
                ret = f"{_pct(r[0])} [{_pct(r[1])}, {_pct(r[2])}]"
        rows.append([labels.get(key, key), _acc(m.get("t2t")), _acc(m.get("s2t")), ret,
                     _pct(t2t - s2t) if t2t is not None and s2t is not None else None, _wer(m.get("asr")),
                     " / ".join(f"{ppl[k]:.2f}" for k in ("text", "speech") if ppl.get(k) is not None) or None,
                     summ.get("steps"), f"{summ['trainable_params']:,}" if summ.get("trainable_params") else None])
    sections.append(Section("Table 2: text and speech ability per strategy").table(
        ["model", "T2T acc % [95% CI]", "S2T acc % [95% CI]", "T2T retention % [95% CI]", "modality gap (points)",
         "ASR WER % [95% CI]", "perplexity text / speech", "steps", "trainable params"], rows).p(
        "Retention: T2T accuracy / No-FT's T2T accuracy (interval: paired bootstrap over the same questions). Modality gap: T2T - S2T. ASR: the LLM's own transcript of the "
        "spoken question (Whisper-normalized); the cascade's row is Whisper's. Perplexity of the held-out teacher answers."
        + _aligned_asr_note((metrics.get("aligned") or {}).get("asr"))))
    results["table2"] = rows
    results["retention"] = retention

    # --- paired tests
    comps: list[dict] = []

    def add(a_name, a_dir, b_name, b_dir, task, what):
        try:
            c = paired(outcomes(a_dir, task), outcomes(b_dir, task))
        except (ValueError, OSError):
            return
        comps.append({"a": a_name, "b": b_name, "task": what, **c.to_dict(), "verdict": verdict(c), "describe": c.describe()})

    others = [x for x in dict.fromkeys([ref, "full"]) if x in metrics]
    for n in names:
        if noft and "t2t" in noft:
            add(n, ev / n, "No-FT", ev / "noft", "t2t", "T2T")
        if noft and "cascade" in noft and "s2t" in metrics[n]:
            try:
                c = paired(outcomes(ev / n, "s2t"), outcomes(ev / "noft", "cascade"))
                comps.append({"a": n, "b": "cascade (No-FT's speech path)", "task": "S2T", **c.to_dict(),
                              "verdict": verdict(c), "describe": c.describe()})
            except (ValueError, OSError):
                pass
        for o in others:
            if o == n:
                continue
            add(n, ev / n, o, ev / o, "t2t", "T2T")
            add(n, ev / n, o, ev / o, "s2t", "S2T")
            if "asr" in metrics[n] and "asr" in metrics[o]:
                try:
                    w = paired_wer(asr_errors(ev / n), asr_errors(ev / o))
                    comps.append({"a": n, "b": o, "task": "ASR WER", **w.to_dict(), "verdict": verdict(w, False),
                                  "describe": w.describe()})
                except (ValueError, OSError):
                    pass
    results["comparisons"] = comps
    sections.append(Section(f"Paired significance: every strategy against No-FT, the cascade and {' and '.join(others) or ref}").table(
        COMPARISON_HEADER, _comparison_rows(comps)))

    # --- degradation reduction (seed 003)
    red = {}
    if noft and "full" in metrics:
        try:
            base_o, full_o = outcomes(ev / "noft", "t2t"), outcomes(ev / "full", "t2t")
            ids = sorted(base_o)
            for n in names:
                if n != "full":
                    x = outcomes(ev / n, "t2t")
                    if all(i in x and i in full_o for i in ids):
                        red[n] = degradation_reduction([base_o[i] for i in ids], [full_o[i] for i in ids], [x[i] for i in ids])
        except (ValueError, OSError):
            pass
    results["degradation_reduction"] = {k: v.to_dict() for k, v in red.items()}
    s = Section("Degradation reduction against full fine-tuning (seed 003)").p(
        "(drop_full - drop_X) / drop_full, drop = No-FT's T2T accuracy - the model's; 95% interval over paired bootstrap "
        "resamples of the questions.")
    s.items([f"{labels.get(k, k)}: {v.describe()}" for k, v in red.items()] or ["needs the No-FT and full evaluations"])
    sections.append(s)

    # --- Table 3
    lora_rows = []
    for n, r in LORA_RANKS.items():
        if n in metrics:
            m, summ = metrics[n], summaries.get(n, {})
            t2t = (m.get("t2t") or {}).get("accuracy")
            ret = retention.get(n)
            lora_rows.append([r, _acc(m.get("t2t")), _acc(m.get("s2t")),
                              f"{_pct(ret[0])} [{_pct(ret[1])}, {_pct(ret[2])}]" if ret
                              else _pct(t2t / base_acc) if t2t is not None and base_acc else None,
                              _wer(m.get("asr")), f"{summ['trainable_params']:,}" if summ.get("trainable_params") else None])
    if "lora" in metrics:
        for n in ("lora_r16", "lora_r24"):
            if n in metrics:
                for task in ("t2t", "s2t"):
                    try:
                        c = paired(outcomes(ev / n, task), outcomes(ev / "lora", task))
                        comps.append({"a": n, "b": "lora", "task": task.upper(), **c.to_dict(), "verdict": verdict(c),
                                      "describe": c.describe()})
                    except (ValueError, OSError):
                        pass
    s3 = Section("Table 3: LoRA rank").table(["rank", "T2T acc % [95% CI]", "S2T acc % [95% CI]", "T2T retention % [95% CI]",
                                              "ASR WER % [95% CI]", "trainable params"], lora_rows)
    s3.items([f"{c['a']} vs {c['b']} {c['task']}: {c['describe']}" for c in comps if c["b"] == "lora" and c["a"] in LORA_RANKS]
             or ["paired tests against r=8 need the r=8 run and another rank"])
    sections.append(s3)
    results["table3"] = lora_rows

    # --- the seeds' claims
    sections.append(_claims_section(results, variants, labels, ev, red, outcomes, asr_errors))

    # --- Table 1
    deact = _read_json(out / "deactivate" / "base" / "deactivation.json")
    results["table1"] = deact
    s1 = Section("Table 1: deactivation by textual importance (base LLM)")
    if deact:
        pct = f"{100 * cfg.deactivate_fraction:g}%"
        s1.table(["untouched", f"top {pct} zeroed", f"bottom {pct} zeroed", f"random {pct} zeroed"],
                 [[f"{deact[k]:.3g}" if isinstance(deact.get(k), (int, float)) else None for k in ("base", "top", "bottom", "random")]])
        s1.p(f"Perplexity of {deact.get('n_eval')} held-out answers (text input) with {pct} of the "
             f"{deact.get('n_scored_params', 0):,} scored parameters zeroed; parameters ranked by first-order Taylor importance.")
    else:
        s1.p(_absent(cfg, "deactivate/base"))
    sections.append(s1)

    # --- Fig 1
    f1 = Section("Fig. 1: rank clustering of textual importance (base LLM)")
    hm = _read_json(out / "heatmap" / "base" / "heatmaps.json")
    results["rank_clustering"] = (hm or {}).get("rank_clustering")
    if hm and (out / "heatmap" / "base" / "rank_clustering.png").is_file():
        dst = figs / "fig1_rank_clustering.png"
        shutil.copyfile(out / "heatmap" / "base" / "rank_clustering.png", dst)
        f1.fig(dst, "Share of the top-5% parameters in each 3x3 neighbourhood: rows/columns where important weights cluster")
        f1.table(["matrix", "rows concentration (random)", "columns concentration (random)"],
                 [[k, f"{v['rows']:.2f} ({v['rows_random']:.2f})", f"{v['cols']:.2f} ({v['cols_random']:.2f})"]
                  for k, v in hm["rank_clustering"].items()])
    else:
        f1.p(_absent(cfg, "heatmap/base"))
    sections.append(f1)

    # --- Figs 2/3
    f23 = Section("Figs. 2/3: layer-wise textual importance before and after each strategy")
    imp = [n for n in names if (out / "importance" / n / "summary.json").is_file()]
    if (out / "importance" / "base" / "summary.json").is_file() and imp:
        from speechkeep.importance.distribution import compare_runs

        shift = compare_runs([str(out / "importance" / "base")] + [str(out / "importance" / n) for n in imp],
                             ["base LLM"] + imp, str(figs / "fig23_layer_importance.png"))
        shift.pop("plot", None)
        results["importance_shift"] = _finite(shift)
        f23.fig(figs / "fig23_layer_importance.png", "Share of each layer in the total textual importance (original "
                "layers; an up-scaled model's inserted blocks are left out)")
        f23.table(["strategy", "JS divergence vs base", "Spearman vs base", "magnitude ratio", "peak layer before -> after"],
                  [[k, f"{v['js_divergence']:.4f}", None if not math.isfinite(v["spearman"]) else f"{v['spearman']:.3f}",
                    None if not math.isfinite(v["magnitude_ratio"]) else f"{v['magnitude_ratio']:.3f}",
                    f"{v['peak_layer_before']} -> {v['peak_layer_after']}"] for k, v in shift["shift"].items()])
    else:
        f23.p(_absent(cfg, "importance/base and at least one importance/<strategy>"))
    sections.append(f23)

    # --- Fig 4
    f4 = Section("Fig. 4: parameter change of each strategy (|W_after - W_before|)")
    pc = {}
    for n in variants:
        d = out / "heatmap" / n
        h = _read_json(d / "heatmaps.json")
        if h and (d / "parameter_change.png").is_file():
            dst = figs / f"fig4_parameter_change_{n}.png"
            shutil.copyfile(d / "parameter_change.png", dst)
            f4.fig(dst, f"{labels[n]}: normalized |dW| of the chosen matrices")
            pc[n] = h.get("parameter_change")
        elif ledger.cells.get(f"heatmap/{n}", {}).get("skipped"):
            f4.p(f"{labels[n]}: {ledger.cells[f'heatmap/{n}']['skipped']}")
    if pc:
        f4.table(["strategy", "matrix", "mean |dW|", "max |dW|", "energy in top-8 singular directions"],
                 [[n, k, f"{v['mean_abs_change']:.2e}", f"{v['max_abs_change']:.2e}", None if v.get('energy_top8') is None else f"{v['energy_top8']:.3f}"]
                  for n, d in pc.items() for k, v in d.items()])
    if not f4.blocks:
        f4.p(_absent(cfg, "heatmap/<strategy>"))
    results["parameter_change"] = _finite(pc)
    sections.append(f4)

    # --- importance-guided restoration (speechkeep restore)
    fr = Section("Importance-guided restoration: the top p% textually important LLM weights put back")
    restored_rows: dict[str, dict] = {}
    curves_r = {}
    for n in getattr(cfg, "restore_cells", []):
        cj = _read_json(out / "restore" / n / "curve.json")
        if not cj:
            continue
        curves_r[n] = cj["curve"]
        fr.table(["p %", "restored params", "T2T acc % [95% CI]", "S2T acc % [95% CI]", "T2T recovered (points)",
                  "S2T lost (points)"],
                 [[f"{c['fraction_percent']:g}", f"{c.get('restored', 0):,}", _acc(_point(c, "t2t")), _acc(_point(c, "s2t")),
                   _pct(c.get("t2t_recovered")), _pct(c.get("s2t_lost"))] for c in cj["curve"]])
        if (out / "restore" / n / "curve.png").is_file():
            with atomic_path(figs / f"restore_{n}.png") as tmp:
                shutil.copyfile(out / "restore" / n / "curve.png", tmp)
            fr.fig(figs / f"restore_{n}.png", f"{labels.get(n, n)}: T2T and S2T against p (no retraining)")
        for c in cj["curve"]:
            if c["fraction_percent"] > 0 and "t2t" in c and "s2t" in c:
                restored_rows[f"{labels.get(n, n)}, top {c['fraction_percent']:g}% restored"] = {
                    "t2t": _point(c, "t2t"), "s2t": _point(c, "s2t")}
        controls = []
        for control in getattr(cfg, "restore_controls", []):
            cc = _read_json(out / f"restore_{control}" / n / "curve.json")
            for c in (cc or {}).get("curve", []):
                if c["fraction_percent"] > 0:
                    controls.append([f"{control} ({CONTROL_WHAT[control]})", f"{c['fraction_percent']:g}",
                                     _acc(_point(c, "t2t")), _acc(_point(c, "s2t")), _pct(c.get("t2t_recovered")),
                                     _pct(c.get("s2t_lost"))])
                    curves_r.setdefault(f"{n}:{control}", cc["curve"])
        if controls:
            fr.p("Controls: the same number of weights restored by another ranking (is it the importance that helps?). "
                 "Paired tests against the importance ranking at the same p are in the next section.")
            fr.table(["ranking", "p %", "T2T acc % [95% CI]", "S2T acc % [95% CI]", "T2T recovered (points)",
                      "S2T lost (points)"], controls)
    if not curves_r:
        fr.p(_absent(cfg, "restore/<strategy>"))
    else:
        fr.p("p = 0 is the fine-tuned model itself. Ranking: the textual importance of the base LLM (importance/base).")
    results["restoration"] = curves_r
    sections.append(fr)

    # --- beyond the seeds: anchor, importance-guided LoRA and restoration against the seeds' best trade-off
    sections.append(_beyond_section(results, metrics, labels, ev, out, curves_r, outcomes, paired))

    # --- Pareto
    fp = Section("Pareto: T2T retention against S2T accuracy")
    pareto_rows = {labels.get(k, k): v for k, v in table2.items() if k != "No-FT (text LLM as is)"}
    pareto_rows.update(restored_rows)
    for k, v in pareto_rows.items():  # the cascade's LLM is the text LLM as is: its T2T is No-FT's
        if k.startswith("cascade") and noft and noft.get("t2t"):
            pareto_rows[k] = {**v, "t2t": noft["t2t"]}
    pts = pareto_points(pareto_rows, base_acc)
    results["pareto"] = pts
    if pts:
        plot_pareto(pts, figs / "pareto.png", retention=bool(base_acc))
        fp.fig(figs / "pareto.png", "Each strategy (and the cascade and the aligned front-end), numbered as in the key; red circles: the Pareto "
               "front (no other model is at least as good on both axes). Error bars: 95% intervals of the S2T accuracy and of "
               "the T2T accuracy (drawn on the retention scale).")
        fp.p("On the front: " + ", ".join(p["name"] for p in pts if p["pareto"]) + ".")
    else:
        fp.p("needs evaluations with both T2T and S2T")
    sections.append(fp)

    # --- training curves
    curves = {n: training_curve(out / "runs" / n) for n in variants}
    curves = {k: v for k, v in curves.items() if v.get("step")}
    results["training_curves"] = curves
    fc = Section("Training curves")
    if curves:
        plot_curves(curves, figs / "training_curves.png")
        fc.fig(figs / "training_curves.png", "Training loss (the strategy's total loss) per logged step")
        step_s = {n: median_step_seconds(c) for n, c in curves.items()}
        fc.table(["strategy", "steps", "final loss", "train seconds (wall)", "s / step (median)", "tokens / s"],
                 [[n, s_.get("steps"), f"{s_['final_loss']:.4f}" if s_.get("final_loss") is not None else None,
                   f"{s_.get('train_seconds', s_.get('seconds', 0)):.0f}",
                   f"{step_s[n]:.2f}" if step_s.get(n) else None,
                   s_.get("tokens_per_second")] for n, s_ in summaries.items()])
        fc.p("s / step: the median over consecutive metrics.csv rows (a paused or resumed run keeps its step time); "
             "train seconds: wall time of the training, pauses included.")
        results["step_seconds"] = step_s
    else:
        fc.p("no training run has logged a step yet")
    sections.append(fc)

    # --- provenance
    sp = Section("Cells: commands, wall time, versions, machine")
    rows = []
    for c in cells:
        rec = ledger.cells.get(c.name, {})
        state = "skipped" if rec.get("skipped") else "done" if c.done() else "not run"
        secs = rec.get("seconds", ledger.times.get(c.time_key))
        cmd = rec.get("command") or (rec.get("skipped") if state == "skipped" else None)
        if rec.get("found"):
            cmd = (f"made before speechkeep reproduce recorded it (its settings: the files of "
                   f"{os.path.relpath(c.directory, out)}/); "
                   f"this config's command: {rec.get('command_now')}")
        rows.append([c.name, state, None if secs is None else f"{secs:.0f}", rec.get("finished"), cmd])
    sp.table(["cell", "state", "wall s", "finished (UTC)", "command"], rows)
    provs = {json.dumps({k: rec.get(k) for k in ("versions", "machine", "speechkeep_commit")}, sort_keys=True)
             for rec in ledger.cells.values() if rec.get("versions")}
    for pv in sorted(provs):
        sp.pre(json.dumps(json.loads(pv), indent=1))
    if not provs:
        sp.p("no cell was run by speechkeep reproduce here (versions and machine are recorded per cell when it runs)")
    total = sum(v for v in ledger.times.values() if isinstance(v, (int, float)))
    sp.p(f"Total wall time of all cells: {total / 3600:.2f} h.")
    sections.append(sp)
    results["cells"] = ledger.cells
    results["times"] = ledger.times

    title = "speechkeep reproduce: " + preset.title
    results["figures"] = sorted(str(p.relative_to(out)) for p in figs.glob("*.png"))
    write_json(out / "results.json", _finite(results))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(render_markdown(title, sections, out) + "\n")
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(render_html(title, sections))
    return results
