"""The options of the importance commands (``importance``, ``deactivate``, ``importance-compare``,
``heatmap``): each command's config dataclass, from which its ``[CONFIG.yaml] [key=value ...]``
interface, its alias flags and its ``--help`` are generated (see :mod:`speechkeep.importance.cli`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from speechkeep.config import Checked, ranged
from speechkeep.importance.taylor import DEFAULT_CONVENTION


@dataclass
class ImportanceConfig(Checked):
    """Options of ``speechkeep importance``."""

    model: str = ""
    """A training run, a saved SpeechLLM directory, or an LLM spec."""
    data: str = ""
    """Spoken manifest with teacher responses."""
    input: Literal["text", "speech"] = "text"
    """Loss of the responses given the text question (textual importance) or the spoken one."""
    out: str = ""
    """Output directory (importance.safetensors, summary.json, summary.csv)."""
    convention: Literal["abs_sum", "signed_sum"] = DEFAULT_CONVENTION
    """abs_sum: sum_b |g_b*theta|; signed_sum: |theta * sum_b g_b|."""
    fraction: float = ranged(1 / 30, gt=0, le=1)
    """Seeded share of the manifest's rows (1/30 as the seed; 1 = all)."""
    limit: int | None = ranged(None, ge=1)
    """At most N rows (after fraction)."""
    split: str | None = None
    """Only rows of this split."""
    batch_size: int = ranged(8, ge=1)
    """Batch size."""
    seed: int = ranged(0, ge=0)
    """Seed of the row sample."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not an earlier importance run."""


@dataclass
class DeactivateConfig(Checked):
    """Options of ``speechkeep deactivate``."""

    model: str = ""
    """The model the importance was computed on."""
    importance: str = ""
    """An importance run directory."""
    data: str = ""
    """Held-out spoken manifest with reference responses."""
    input: Literal["text", "speech"] = "text"
    """Text or spoken questions."""
    fraction: float = ranged(0.03, gt=0, lt=1)
    """Share of parameters to zero."""
    scope: Literal["global", "per_matrix"] = "global"
    """Rank all parameters together (global) or within each weight tensor."""
    include_embeddings: bool = False
    """Also rank and zero the (tied) embedding matrix (default: excluded; see speechkeep.importance.deactivate)."""
    split: str | None = None
    """Only rows of this split."""
    limit: int | None = ranged(None, ge=1)
    """At most N held-out items."""
    batch_size: int = ranged(16, ge=1)
    """Batch size."""
    seed: int = ranged(0, ge=0)
    """Seed of the random selection."""
    out: str | None = None
    """Directory for deactivation.json (None: print only)."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not an earlier deactivate output."""


@dataclass
class CompareConfig(Checked):
    """Options of ``speechkeep importance-compare``."""

    runs: list[str] = field(default_factory=list)
    """Importance run directories (the first is the reference); bare arguments on the command line."""
    labels: list[str] | None = None
    """Legend labels (None: the directory names)."""
    absolute: bool = False
    """Plot absolute layer totals instead of shares."""
    out: str = ""
    """Output directory (layer_importance.png, shift.json)."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not an earlier importance-compare output."""


@dataclass
class HeatmapConfig(Checked):
    """Options of ``speechkeep heatmap``."""

    importance: str | None = None
    """Importance run directory (rank clustering)."""
    before: str | None = None
    """Model before fine-tuning (LLM spec or SpeechLLM directory)."""
    after: str | None = None
    """Model after fine-tuning (run or SpeechLLM directory)."""
    matrices: list[str] | None = None
    """Parameter names (None: q, o, down projections of layer 0 and of layer)."""
    layer: int = ranged(15, ge=0)
    """Second layer for the default matrices."""
    top: float = ranged(0.05, gt=0, le=1)
    """Share of entries marked important."""
    rows: float = ranged(0.05, gt=0, le=1)
    """Share of rows/columns for the concentration score."""
    out: str = ""
    """Output directory."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not an earlier heatmap output."""
