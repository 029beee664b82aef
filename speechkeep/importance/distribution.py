"""Layer-wise importance distribution and its shift after fine-tuning (seed 001 Fig. 2/3).

Per-layer share ``p_l = I_layer(l) / sum_l I_layer(l)``, with ``I_layer`` the sum of importance over
every parameter of transformer block l. Shift metrics between two runs A (before) and B (after):
Jensen-Shannon divergence (base 2, in [0, 1]; scipy's ``jensenshannon`` returns its square root,
squared here), Spearman rank correlation of the per-layer totals, total-magnitude ratio B/A, and the
peak layer of each. An up-scaled model's run (``layer_origin`` in its summary) is compared layer by
layer through each block's original index; its inserted blocks are listed apart (``new_blocks``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speechkeep.importance.runs import check_same_architecture, load_summary


def layer_shares(summary: dict) -> np.ndarray:
    v = np.asarray(summary["per_layer"], dtype=np.float64)
    return v / v.sum() if v.sum() > 0 else v


def shift_metrics(before: dict, after: dict) -> dict:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import spearmanr

    pa, pb = layer_shares(before), layer_shares(after)
    ta, tb = float(np.sum(before["per_layer"])), float(np.sum(after["per_layer"]))
    rho = spearmanr(before["per_layer"], after["per_layer"]).statistic
    return {
        "js_divergence": float(jensenshannon(pa, pb, base=2) ** 2),
        "spearman": float(rho),
        "magnitude_ratio": tb / ta if ta > 0 else float("nan"),
        "peak_layer_before": int(np.argmax(pa)),
        "peak_layer_after": int(np.argmax(pb)),
        "peak_shift": int(np.argmax(pb)) - int(np.argmax(pa)),
    }


def compare_runs(runs: list[str], labels: list[str] | None = None, out: str | None = None, relative: bool = True) -> dict:
    """Shift metrics of every run against the first; optionally a plot of all on the same axes."""
    labels = labels or [Path(r).name for r in runs]
    summaries = [load_summary(r) for r in runs]
    for s, r in zip(summaries[1:], runs[1:]):
        check_same_architecture(summaries[0], s, (runs[0], r))
    result = {"reference": labels[0],
              "layer_shares": {lab: layer_shares(s).tolist() for lab, s in zip(labels, summaries)},
              "shift": {lab: shift_metrics(summaries[0], s) for lab, s in zip(labels[1:], summaries[1:])}}
    new = {lab: s["new_blocks"] for lab, s in zip(labels, summaries) if s.get("new_blocks")}
    if new:  # up-scaled models: layers compared by original index, inserted blocks reported apart
        result["new_blocks"] = new
    if out:
        plot_distributions(summaries, labels, Path(out), relative=relative)
        result["plot"] = str(out)
    return result


def plot_distributions(summaries: list[dict], labels: list[str], out: Path, relative: bool = True) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for s, lab in zip(summaries, labels):
        y = layer_shares(s) if relative else np.asarray(s["per_layer"])
        ax.plot(np.arange(len(y)), y, marker="o", ms=3, label=lab)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of layer importance" if relative else "layer importance (sum |g*theta|)")
    ax.set_title("Layer-wise textual importance")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
