"""Rank clustering (seed 001 Fig. 1) and parameter-change heatmaps (Fig. 4), each with a number.

Rank clustering: mark the top-``q`` (5%) entries of a weight matrix by importance; the heatmap cell is
the share of marked entries in its 3x3 neighbourhood. The score makes "important parameters cluster
along rows and columns" comparable: rank rows by how many marked entries they hold, take the top
``r`` share of rows (5%), and divide the share of all marked entries that fall in them by ``r`` (the
share a uniform spread would give). 1 = no clustering. The same for columns. A random permutation of
the same mask is the baseline (score about 1).

Parameter change: ``|W_after - W_before| / max``; low-rank-ness = share of the change's energy
(squared singular values) in its top-k singular directions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def top_mask(scores: torch.Tensor, q: float = 0.05) -> torch.Tensor:
    k = max(1, int(round(q * scores.numel())))
    thr = torch.topk(scores.flatten().float(), k).values[-1]
    return scores >= thr


def neighbourhood_share(mask: torch.Tensor) -> torch.Tensor:
    """Share of marked entries in each cell's 3x3 neighbourhood (edges count only existing cells)."""
    x = mask.float()[None, None]
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)[0, 0]


def concentration(mask: torch.Tensor, r: float = 0.05, dim: int = 1) -> float:
    """(share of marked entries in the top-r rows (dim=1) or columns (dim=0)) / r."""
    counts = mask.sum(dim=dim).float()
    n = counts.numel()
    k = max(1, int(round(r * n)))
    top = torch.topk(counts, k).values.sum()
    total = counts.sum()
    return float(top / total / (k / n)) if total > 0 else float("nan")


def rank_clustering_score(scores: torch.Tensor, q: float = 0.05, r: float = 0.05, seed: int = 0) -> dict:
    mask = top_mask(scores, q)
    g = torch.Generator().manual_seed(seed)
    perm = mask.flatten()[torch.randperm(mask.numel(), generator=g)].view(mask.shape)
    return {"rows": concentration(mask, r, 1), "cols": concentration(mask, r, 0),
            "rows_random": concentration(perm, r, 1), "cols_random": concentration(perm, r, 0),
            "top_share": q, "r": r, "shape": list(scores.shape)}


def low_rank_energy(delta: torch.Tensor, k: int = 8) -> float:
    """Share of ||delta||_F^2 in the top-k singular directions."""
    s = torch.linalg.svdvals(delta.double())
    e = s ** 2
    return float(e[:k].sum() / e.sum()) if e.sum() > 0 else float("nan")


def block_means(m: np.ndarray, max_cells: int = 128) -> np.ndarray:
    """``m`` averaged over equal blocks so that neither side exceeds ``max_cells``.

    A heatmap panel is about 300 pixels wide: drawing a 576 x 1536 matrix cell by cell makes the
    renderer pick one entry per pixel (aliasing: which entries are shown is arbitrary) and a PNG of
    noise (2 MB per figure). Block means show every entry's contribution and compress well.
    """
    rows, cols = m.shape
    if rows <= max_cells and cols <= max_cells:
        return m
    x = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    return torch.nn.functional.adaptive_avg_pool2d(x, (min(rows, max_cells), min(cols, max_cells)))[0, 0].numpy()


def _plot_grid(mats: dict[str, np.ndarray], out: Path, title: str, cmap: str = "viridis",
               max_cells: int = 128) -> Path:
    """One panel per matrix, each drawn as block means (``block_means``) on its own colour scale 0..max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(mats)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (name, m) in zip(axes.flat, mats.items()):
        shown = block_means(m, max_cells)
        top = float(shown.max())
        im = ax.imshow(shown, aspect="auto", cmap=cmap, vmin=0, vmax=top if top > 0 else 1, interpolation="nearest",
                       extent=(0, m.shape[1], m.shape[0], 0))  # axes in the matrix's own row/column indices
        pooled = "" if shown.shape == m.shape else f" ({m.shape[0]}x{m.shape[1]} in {shown.shape[0]}x{shown.shape[1]} block means)"
        ax.set_title(name + pooled, fontsize=7)
        ax.set_xlabel("input (column)")
        ax.set_ylabel("output (row)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def rank_clustering_report(scores: dict[str, torch.Tensor], names: list[str], out: Path | None = None,
                           q: float = 0.05, r: float = 0.05) -> dict:
    """Scores per chosen matrix, plus a heatmap grid (``out``, PNG)."""
    missing = [n for n in names if n not in scores]
    if missing:
        from speechkeep.errors import SpeechkeepError

        raise SpeechkeepError(f"no importance scores for {missing[0]}; e.g. {next(iter(scores))}")
    result = {n: rank_clustering_score(scores[n], q, r) for n in names}
    if out is not None:
        _plot_grid({n: neighbourhood_share(top_mask(scores[n], q)).numpy() for n in names}, out,
                   f"share of top-{int(q * 100)}% parameters in 3x3 neighbourhood")
    return result


def parameter_change_report(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], names: list[str],
                            out: Path | None = None, k: int = 8) -> dict:
    result, mats = {}, {}
    for n in names:
        d = (after[n].float() - before[n].float()).abs()
        mx = float(d.max())
        mats[n] = (d / mx).numpy() if mx > 0 else d.numpy()
        result[n] = {"max_abs_change": mx, "mean_abs_change": float(d.mean()),
                     f"energy_top{k}": low_rank_energy(after[n].float() - before[n].float(), k)}
    if out is not None:
        _plot_grid(mats, out, "|W_after - W_before| (normalized)", cmap="magma")
    return result
