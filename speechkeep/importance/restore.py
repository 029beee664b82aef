"""Importance-guided restoration: give a speech-fine-tuned LLM its most text-important weights back.

Seed 001 shows that text ability lives in a few percent of the LLM's parameters (zeroing the top 3%
by textual importance destroys it). After speech fine-tuning, :func:`restore_weights` puts the
top ``p``% of the LLM's parameters by the *pre-trained* LLM's textual importance back to their
pre-trained values, or interpolates, without retraining::

    theta = alpha * theta_pre + (1 - alpha) * theta_ft      (on the selected entries; alpha = 1: restore)

The ranking is global over every LLM parameter tensor the importance run scored (embeddings
included; the adaptor is never touched). ``p = 0`` changes nothing and ``p = 100`` with ``alpha = 1``
gives back the pre-trained LLM exactly. It works on runs that changed the LLM's weights (``full``,
``layer_lr``, ``distill`` with a full student) and on LoRA runs through their merged weights; an
up-scaled LLM keeps its original weights frozen, so there is nothing to restore (an error says so).

``speechkeep restore`` writes a loadable SpeechLLM; ``sweep=[0.5, 1, 3, 10]`` writes one per ``p``,
evaluates each (T2T and S2T by default) and writes the curve of T2T recovered vs S2T lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from speechkeep.config import Checked, ranged
from speechkeep.errors import SpeechkeepError, UsageError


@dataclass
class RestoreConfig(Checked):
    """Options of ``speechkeep restore``."""

    run: str = ""
    """The speech-fine-tuned model: a training run directory or a saved SpeechLLM directory."""
    importance: str = ""
    """A `speechkeep importance` run of the pre-trained LLM with text input (its scores rank the parameters)."""
    fraction: float = ranged(1.0, ge=0, le=100)
    """p: the percentage of LLM parameters (top by textual importance) to restore."""
    alpha: float = ranged(1.0, ge=0, le=1)
    """theta = alpha * theta_pre + (1 - alpha) * theta_ft on the selected entries (1: put them back exactly)."""
    out: str = ""
    """Output directory: the restored SpeechLLM (or, with sweep, one per p under p<value>/ plus curve.json/csv/png)."""
    sweep: list[float] = field(default_factory=list)
    """Percentages to restore and evaluate in turn (e.g. [0.5, 1, 3, 10]); p = 0 (the fine-tuned model) is always included."""
    data: str = ""
    """Evaluation data of the sweep (a spoken manifest with answers), e.g. the clean held-out set."""
    tasks: list[str] = field(default_factory=lambda: ["t2t", "s2t"])
    """Tasks evaluated at each point of the sweep."""
    limit: int | None = ranged(None, ge=1)
    """Evaluate only the first N items of the sweep's data."""
    max_new_tokens: int = ranged(48, ge=1)
    """Answer length limit of the sweep's evaluation."""
    ranking: Literal["importance", "random", "change"] = "importance"
    """What ranks the parameters: importance (the pre-trained LLM's textual importance, the method), or one of two
    controls over the same scored tensors: random (a seeded uniform draw) or change (|theta_ft - theta_pre|: the weights
    fine-tuning moved most)."""
    seed: int = ranged(0, ge=0)
    """Seed of ranking=random."""
    finetuned_eval: str = ""
    """An existing `speechkeep eval` output of the fine-tuned model on the same data (its directory): the sweep's
    p = 0 point is read from it instead of being evaluated again."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not a previous `speechkeep restore` output."""


def selected_masks(scores: dict[str, torch.Tensor], percent: float) -> dict[str, torch.Tensor]:
    """Boolean masks of the top ``percent``% entries over all tensors of ``scores`` together (ties at
    the threshold included); empty for 0, everything for 100."""
    if percent <= 0:
        return {}
    if percent >= 100:
        return {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    from speechkeep.importance.deactivate import selection_masks

    return selection_masks(scores, percent / 100, "top")


def restore_weights(llm: torch.nn.Module, pretrained: dict[str, torch.Tensor], scores: dict[str, torch.Tensor],
                    percent: float, alpha: float = 1.0) -> dict:
    """In place: move the top ``percent``% of ``llm``'s parameters (by ``scores``) toward ``pretrained``.
    Returns counts: restored entries, scored entries, tensors touched."""
    params = dict(llm.named_parameters())
    scored = {n: s for n, s in scores.items() if not n.startswith("adaptor.")}
    missing = [n for n in scored if n not in params or n not in pretrained]
    if missing:
        raise SpeechkeepError(f"the importance run scores {missing[0]}, which the fine-tuned or the pre-trained LLM "
                              "does not have: importance of another architecture")
    for n, s in scored.items():
        if tuple(s.shape) != tuple(params[n].shape) or tuple(pretrained[n].shape) != tuple(params[n].shape):
            raise SpeechkeepError(f"{n}: importance {tuple(s.shape)}, fine-tuned {tuple(params[n].shape)}, "
                                  f"pre-trained {tuple(pretrained[n].shape)}: shapes differ")
    masks = selected_masks(scored, percent)
    restored = 0
    with torch.no_grad():
        for n, m in masks.items():
            p = params[n]
            pre = pretrained[n].to(p.device, p.dtype)
            if alpha == 1.0:
                p.data[m] = pre[m]
            else:
                p.data[m] = alpha * pre[m] + (1 - alpha) * p.data[m]
            restored += int(m.sum())
    return {"restored": restored, "scored": sum(s.numel() for s in scored.values()), "tensors": len(masks)}


def ranking_scores(ranking: str, scores: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor],
                   finetuned: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """The scores that rank the LLM's parameters for restoration, over the tensors the importance run scored:
    ``importance`` (those scores), ``random`` (seeded uniform) or ``change`` (|theta_ft - theta_pre|)."""
    scored = {n: s for n, s in scores.items() if not n.startswith("adaptor.")}
    if ranking == "importance":
        return scored
    if ranking == "random":
        g = torch.Generator().manual_seed(seed)
        return {n: torch.rand(s.shape, generator=g) for n, s in sorted(scored.items())}
    if ranking == "change":
        missing = [n for n in scored if n not in pretrained or n not in finetuned]
        if missing:
            raise SpeechkeepError(f"ranking=change: {missing[0]} is not in both the fine-tuned and the pre-trained LLM")
        return {n: (finetuned[n].float() - pretrained[n].float()).abs() for n in scored}
    raise UsageError(f"ranking: unknown {ranking!r} (importance, random or change)")


def prepare_for_restore(model) -> None:
    """Merge LoRA into the weights (restoration acts on the LLM's own parameters); refuse up-scaled LLMs."""
    names = [t["name"] for t in model.transforms]
    if "upscale" in names:
        raise UsageError("an up-scaled model keeps the pre-trained LLM's weights frozen: there is nothing to restore "
                         "(`speechkeep export drop_upscale=true` gives the base LLM back)")
    if model.is_peft():
        model.llm = model.llm.merge_and_unload()
        model.transforms = [t for t in model.transforms if t["name"] != "lora"]
    model.llm_weights_changed = True


def pretrained_state(model) -> dict[str, torch.Tensor]:
    """The untouched pre-trained LLM's parameters (loaded from the model's own LLM spec)."""
    from speechkeep.models.llm import load_llm

    base = load_llm(model.config.llm)
    return {n: p.detach() for n, p in base.model.named_parameters()}


def run_restore(cfg: RestoreConfig) -> dict:
    """``speechkeep restore``: one restored model, or a sweep of them with their evaluation curve."""
    import json

    from speechkeep.importance.runs import load_scores
    from speechkeep.io import OutputDir, write_json
    from speechkeep.models.persistence import check_model_spec, load_speech_llm

    for key in ("run", "importance", "out"):
        if not str(getattr(cfg, key)).strip():
            raise UsageError(f"{key}: required (speechkeep restore --help)")
    check_model_spec(cfg.run, "run")
    if cfg.sweep and not cfg.data:
        raise UsageError("sweep: give the evaluation data (data=PATH)")
    bad = [p for p in cfg.sweep if not 0 <= p <= 100]
    if bad:
        raise UsageError(f"sweep: percentages must be in [0, 100], got {bad[0]}")
    guard = OutputDir(cfg.out, "restore", overwrite=cfg.overwrite, inputs=[cfg.run, cfg.importance, cfg.data], key="out")
    guard.check()
    scores = load_scores(cfg.importance)
    model, _ = load_speech_llm(cfg.run)
    prepare_for_restore(model)
    pre = pretrained_state(model)
    finetuned = {n: p.detach().clone() for n, p in model.llm.named_parameters()}
    scores = ranking_scores(cfg.ranking, scores, pre, finetuned, cfg.seed)
    out = Path(cfg.out)
    with guard:
        if not cfg.sweep:
            counts = restore_weights(model.llm, pre, scores, cfg.fraction, cfg.alpha)
            model.save_pretrained(out)
            info = {"run": cfg.run, "importance": cfg.importance, "ranking": cfg.ranking, "fraction_percent": cfg.fraction,
                    "alpha": cfg.alpha, **counts}
            write_json(out / "restore.json", info)
            print(f"restored {counts['restored']:,} of {counts['scored']:,} LLM parameters ({cfg.fraction:g}%, "
                  f"alpha {cfg.alpha:g}) -> {out}")
            return info
        points = sorted({0.0, *map(float, cfg.sweep)})
        curve = []
        for p in points:
            dest = out / f"p{p:g}"
            if (dest / "point.json").exists():  # finished on an earlier, interrupted sweep
                curve.append(json.loads((dest / "point.json").read_text()))
                print(f"restore sweep p={p:g}%: done")
                continue
            if p == 0 and cfg.finetuned_eval:
                point = {"fraction_percent": 0.0, "alpha": cfg.alpha, "restored": 0, "tensors": 0,
                         "scored": sum(t.numel() for n, t in scores.items() if not n.startswith("adaptor.")),
                         **_point_metrics(_read_finetuned_eval(cfg))}
                dest.mkdir(parents=True, exist_ok=True)
                write_json(dest / "point.json", point)
                curve.append(point)
                print(f"restore sweep p=0%: from {cfg.finetuned_eval}")
                continue
            with torch.no_grad():
                for n, prm in model.llm.named_parameters():
                    prm.data.copy_(finetuned[n])
            counts = restore_weights(model.llm, pre, scores, p, cfg.alpha)
            model.save_pretrained(dest / "model")
            metrics = _evaluate_point(cfg, dest)
            point = {"fraction_percent": p, "alpha": cfg.alpha, "ranking": cfg.ranking, **counts, **_point_metrics(metrics)}
            write_json(dest / "point.json", point)
            curve.append(point)
            print(f"restore sweep p={p:g}%: " + ", ".join(f"{t} {100 * point[t]:.1f}%" for t in ("t2t", "s2t") if t in point))
        write_curve(out, curve)
        return {"curve": curve}


def _point_metrics(metrics: dict) -> dict:
    return {**{t: metrics[t]["accuracy"] for t in ("t2t", "s2t") if t in metrics},
            **{f"{t}_ci95": metrics[t].get("ci95") for t in ("t2t", "s2t") if t in metrics}}


def _read_finetuned_eval(cfg: RestoreConfig) -> dict:
    from speechkeep.io import read_json_object

    path = Path(cfg.finetuned_eval) / "metrics.json"
    if not path.is_file():
        raise UsageError(f"finetuned_eval: {path} does not exist (give a `speechkeep eval` output directory)")
    m = read_json_object(path, "evaluation metrics")
    if _manifest(m.get("data", "")) != _manifest(cfg.data):
        raise UsageError(f"finetuned_eval: {path} evaluated {m.get('data')}, the sweep uses {cfg.data}")
    if cfg.limit is not None and m.get("n") != cfg.limit:
        raise UsageError(f"finetuned_eval: {path} has {m.get('n')} items, the sweep limit={cfg.limit}")
    missing = [t for t in cfg.tasks if t in ("t2t", "s2t") and t not in m]
    if missing:
        raise UsageError(f"finetuned_eval: {path} has no {missing[0]} result")
    return m


def _manifest(data: str) -> Path:
    """A data argument as the manifest file it means (a directory means its manifest.jsonl)."""
    p = Path(str(data)).resolve()
    return p / "manifest.jsonl" if p.is_dir() else p


def _evaluate_point(cfg: RestoreConfig, dest: Path) -> dict:
    from speechkeep.evaluate.run import EvalConfig, evaluate

    return evaluate(EvalConfig(model=str(dest / "model"), data=cfg.data, out=str(dest / "eval"), tasks=list(cfg.tasks),
                               limit=cfg.limit, max_new_tokens=cfg.max_new_tokens, overwrite=True))


def write_curve(out: Path, curve: list[dict]) -> None:
    """curve.json, curve.csv and curve.png: T2T recovered and S2T lost against p (relative to p = 0)."""
    import csv

    from speechkeep.io import atomic_path, write_json

    base = next(c for c in curve if c["fraction_percent"] == 0)
    for c in curve:
        if "t2t" in c and "t2t" in base:
            c["t2t_recovered"] = c["t2t"] - base["t2t"]
        if "s2t" in c and "s2t" in base:
            c["s2t_lost"] = base["s2t"] - c["s2t"]
    write_json(out / "curve.json", {"curve": curve})
    keys = ["fraction_percent", "alpha", "restored", "t2t", "s2t", "t2t_recovered", "s2t_lost"]
    with atomic_path(out / "curve.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for c in curve:
            w.writerow([c.get(k, "") for k in keys])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [c["fraction_percent"] for c in curve]
    for task, style in (("t2t", "o-"), ("s2t", "s--")):
        if all(task in c for c in curve):
            ys = [100 * c[task] for c in curve]
            lo = [100 * (c[task] - c[f"{task}_ci95"][0]) if c.get(f"{task}_ci95") else 0 for c in curve]
            hi = [100 * (c[f"{task}_ci95"][1] - c[task]) if c.get(f"{task}_ci95") else 0 for c in curve]
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, capsize=3, label=task.upper())
    ax.set_xscale("symlog", linthresh=0.5)
    ax.set_xlabel("restored: top p% of LLM parameters by textual importance")
    ax.set_ylabel("accuracy % (95% CI)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "curve.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
