"""``speechkeep reproduce CONFIG.yaml [key=value ...]``: the seeds' whole comparison in one command.

On the same data, seed, starting front-end and training budget: No-FT (the text LLM as is), the cascade
(Whisper transcript -> text LLM), the aligned front-end alone, and one training run per strategy cell
(``full``, ``layer_lr``, ``lora`` at r = 8/16/24 for seed 001's Table 3, ``distill``, ``upscale`` with
transformer and E-Branchformer blocks (and E-Branchformer on speech positions only), ``adaptor``, ``anchor``
and importance-placed LoRA (``lora_importance``), and one cell for any strategy registered later);
textual importance of the base LLM and after every strategy, the deactivation test (Table 1), rank
clustering (Fig. 1), layer-wise importance shift (Figs. 2/3) and parameter-change heatmaps (Fig. 4);
evaluation of T2T, S2T, ASR and perplexity. Then ``report.html`` (self-contained), ``report.md`` and
``results.json`` (:mod:`speechkeep.recipes.reproduce_report`).

Every cell is one ``speechkeep`` command (recorded in ``cells.json`` with its wall time, the package
versions and the machine) writing one directory; a cell whose output is complete is skipped, so a
killed run resumes with the same command (training cells resume from their last checkpoint). The
on-disk layout is the one ``benchmarks/strategy_comparison.py`` wrote (``data/{train,eval}``,
``eval/<cell>``, ``runs/<cell>``, ``times.json``), so its finished cells are reused as they are.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from speechkeep.config import Checked, ranged
from speechkeep.errors import UsageError

DEFAULT_EVAL_VOICE = "piper-joe-high"


@dataclass(frozen=True)
class Variant:
    """One strategy cell: its label and its ``speechkeep train`` overrides (``{full_lr}``, ``{upscale_lr}``
    and ``{importance}`` are filled from the config)."""

    label: str
    overrides: tuple[str, ...]

    def setting(self, key: str, default: str | None = None) -> str | None:
        """The value this cell's overrides give ``key`` (e.g. 'upscale.block'), else ``default``."""
        return next((o.split("=", 1)[1] for o in self.overrides if o.startswith(key + "=")), default)

    @property
    def strategy(self) -> str:
        return self.setting("strategy")


VARIANTS: dict[str, Variant] = {
    "full": Variant("full fine-tuning", ("strategy=full", "optim.lr={full_lr}")),
    "layer_lr": Variant("layer-wise lr (textual importance, lambda 0.4)",
                        ("strategy=layer_lr", "optim.lr={full_lr}", "layer_lr.importance={importance}")),
    "lora": Variant("lora (r=8)", ("strategy=lora",)),
    "lora_r16": Variant("lora (r=16)", ("strategy=lora", "lora.r=16")),
    "lora_r24": Variant("lora (r=24)", ("strategy=lora", "lora.r=24")),
    "distill_t2t": Variant("distill, LoRA student, CE + KL t2t",
                           ("strategy=distill", "distill.student=lora", "distill.weights={{ce: 1, kl_t2t: 1, kl_s2t: 0}}")),
    "distill": Variant("distill, LoRA student, CE + KL t2t + KL s2t",
                       ("strategy=distill", "distill.student=lora", "distill.weights={{ce: 1, kl_t2t: 1, kl_s2t: 1}}")),
    "upscale_transformer": Variant("upscale, transformer blocks interleaved",
                                   ("strategy=upscale", "upscale.block=transformer", "upscale.placement=interleaved",
                                    "upscale.lr={upscale_lr}")),
    "upscale_ebranchformer": Variant("upscale, E-Branchformer blocks interleaved",
                                     ("strategy=upscale", "upscale.block=ebranchformer", "upscale.placement=interleaved",
                                      "upscale.lr={upscale_lr}")),
    "upscale_ebranchformer_top": Variant("upscale, E-Branchformer blocks on top",
                                         ("strategy=upscale", "upscale.block=ebranchformer", "upscale.placement=top",
                                          "upscale.lr={upscale_lr}")),
    "upscale_ebranchformer_speech_only": Variant("upscale, E-Branchformer blocks interleaved, speech positions only",
                                                 ("strategy=upscale", "upscale.block=ebranchformer",
                                                  "upscale.placement=interleaved", "upscale.speech_only=true",
                                                  "upscale.lr={upscale_lr}")),
    "adaptor": Variant("adaptor only (LLM frozen)", ("strategy=adaptor",)),
    "anchor": Variant("anchor (full, importance-weighted pull to the base weights)",
                      ("strategy=anchor", "optim.lr={full_lr}", "anchor.importance={importance}")),
    "lora_importance": Variant("lora (r=8 budget), importance-guided placement",
                               ("strategy=lora", "lora.placement=importance", "lora.importance={importance}")),
}
"""The built-in strategy cells (names kept from ``benchmarks/strategy_comparison.py``: ``lora`` is r=8)."""

NOT_A_CELL = ("ctc_align",)
"""Registered strategies that get no cell of their own: ``ctc_align`` made the aligned front-end every cell starts from."""

LORA_RANKS = {"lora": 8, "lora_r16": 16, "lora_r24": 24}
"""Table 3's cells and their rank."""


@dataclass(frozen=True)
class Preset:
    title: str
    cells: tuple[str, ...] | None
    """None: every built-in cell plus one per strategy registered later."""
    train_tasks: dict
    eval_tasks: tuple[str, ...]
    reference: str


PRESETS: dict[str, Preset] = {
    "all": Preset("every strategy on the same data, budget and front-end (seed 001 Tables 1-3, Figs. 1-4; seed 003)",
                  None, {"qa": 1, "asr": 1}, ("t2t", "s2t", "asr", "ppl"), "full"),
    "distill": Preset("lora vs distill vs full (issue 14)", ("lora", "distill", "distill_t2t", "full"), {"qa": 1},
                      ("t2t", "s2t", "ppl"), "lora"),
    "upscale": Preset("multimodal depth up-scaling vs full and lora (issue 15, seed 003)",
                      ("upscale_ebranchformer", "full", "upscale_transformer", "lora", "upscale_ebranchformer_top",
                       "upscale_ebranchformer_speech_only"),
                      {"qa": 1, "asr": 1}, ("t2t", "s2t", "asr", "ppl"), "full"),
}


@dataclass
class ReproduceConfig(Checked):
    """Options of ``speechkeep reproduce`` (defaults: the full comparison on the bundled models)."""

    out: str = "runs/reproduce"
    """Output directory: data/, eval/, runs/, importance/, heatmap/, deactivate/, figures/, cells.json, times.json, report.html, report.md, results.json."""
    preset: Literal["all", "distill", "upscale"] = "all"
    """Which comparison: 'all' (every strategy cell, trained on spoken QA + ASR, evaluated on T2T, S2T, ASR, perplexity, reference full), or the earlier 'distill' (issue 14) and 'upscale' (issue 15) comparisons."""
    cells: list[str] | None = None
    """Strategy cells to run (None: the preset's); built-in: full, layer_lr, lora, lora_r16, lora_r24, distill_t2t, distill, upscale_transformer, upscale_ebranchformer, upscale_ebranchformer_top, upscale_ebranchformer_speech_only, adaptor, anchor, lora_importance, and any registered strategy by its name."""
    extra_cells: dict[str, list[str]] = field(default_factory=dict)
    """More strategy cells: name -> its `speechkeep train` overrides, e.g. {lora_r32: [strategy=lora, lora.r=32]}; added to cells."""
    only: list[str] | None = None
    """Run only these cells and what they need (names or shell patterns: 'lora' = every cell of lora, 'eval/*', 'importance/base'); comma-separated on the command line (--only lora,full). The report covers every finished cell."""
    budget_minutes: float | None = ranged(None, gt=0)
    """Stop before a cell that would end past this many minutes of this invocation (estimated from the cells already timed); run the same command again to go on. None: no limit."""
    llm: str = "bundled:smollm2-135m"
    """Text LLM spec (No-FT, the teacher of the training targets, and the base of every strategy)."""
    speech_encoder: str = "bundled:whisper-tiny.en"
    """Speech encoder spec (features, the aligned front-end, and the cascade's Whisper unless cascade_whisper names another)."""
    cascade_whisper: str | None = None
    """The cascade row's Whisper (its decoder transcribes, the text LLM answers); None: speech_encoder."""
    init_from: str = "auto"
    """Where every strategy starts: 'auto' = the shipped aligned front-end for llm + speech_encoder when there is one (else a fresh adaptor), 'none' = a fresh adaptor, or a saved SpeechLLM."""
    train_questions: str = "webquestions:trainmodel"
    """Training questions (any `data build` questions source)."""
    n_train: int = ranged(400, ge=1)
    """Training questions used (the first N)."""
    train_data: str | None = None
    """An existing spoken training set (its directory or manifest.jsonl) instead of building data/train."""
    train_voices: list[str] | None = None
    """Voices of the training set (None: every voice but eval_voice)."""
    eval_questions: str = "webquestions:clean"
    """Evaluation questions (default: WebQuestions heldout + devtest, the 1,205 clean held-out questions)."""
    eval_limit: int | None = ranged(None, ge=1)
    """Evaluate on the first N evaluation questions only (None: all)."""
    eval_voice: str = DEFAULT_EVAL_VOICE
    """The held-out voice that speaks the evaluation questions (and no training question)."""
    teacher: bool = True
    """Training targets (and the held-out answers perplexity is measured on) are the LLM's own greedy answers; false: the responses given in the question files."""
    teacher_max_new_tokens: int = ranged(32, ge=1)
    """Length of the teacher answers used as training targets."""
    eval_max_new_tokens: int = ranged(48, ge=1)
    """Answer length limit at evaluation."""
    eval_batch_size: int = ranged(64, ge=1)
    """Evaluation batch size (64: about 2x faster than 16 on CPU, benchmarks/bench_eval.py)."""
    noft_tasks: list[str] = field(default_factory=lambda: ["t2t", "cascade", "ppl"])
    """Tasks of the No-FT evaluation (the text LLM as is; the cascade is Whisper's transcript -> the text LLM)."""
    eval_tasks: list[str] | None = None
    """Tasks of every strategy's evaluation (None: the preset's)."""
    train_tasks: dict[str, float] | None = None
    """Training task mixture, task -> weight (None: the preset's)."""
    reference: str | None = None
    """The strategy cell every other is tested against besides No-FT (None: the preset's; full for 'all')."""
    steps: int = ranged(300, ge=1)
    """Optimizer steps of every strategy (the training budget: the same model on any machine)."""
    train_minutes: float | None = ranged(None, gt=0)
    """Optional wall-clock cap of each strategy's training (makes the models depend on the machine's speed)."""
    batch_size: int = ranged(8, ge=1)
    """Training micro-batch size."""
    lr: float = ranged(1e-3, gt=0)
    """Peak learning rate of LoRA parameters (lora, distill) and of every other cell's default."""
    full_lr: float = ranged(5e-5, gt=0)
    """Peak learning rate of the LLM's weights under full and layer_lr."""
    upscale_lr: float = ranged(2e-4, gt=0)
    """Peak learning rate of the new blocks under upscale."""
    adaptor_lr: float = ranged(1e-4, gt=0)
    """Peak learning rate of an aligned front-end's adaptor (a fresh adaptor uses lr)."""
    save_every: int = ranged(25, ge=1)
    """Checkpoint interval of the training runs (steps): how much a killed run loses."""
    seed: int = ranged(0, ge=0)
    """Training seed of every strategy."""
    train_extra: list[str] = field(default_factory=list)
    """Extra `speechkeep train` overrides given to every strategy cell (e.g. [model.adaptor.hidden_size=256])."""
    importance: bool = True
    """Run the importance cells: textual importance before and after each strategy, deactivation, heatmaps."""
    importance_fraction: float = ranged(1.0, gt=0, le=1)
    """Seeded share of the training questions the textual importance is computed on. Seed 001 took 1/30 of a large
    corpus; of the default 400 questions that is 13, and the top-3% set of SmolLM2's weights from 13 questions
    shared 53-56% with the ranking from all 400 (two seeds: 40% with each other), from 100 questions 79% (72%):
    hence all of them by default (110 s per pass on 2 cores)."""
    importance_batch_size: int = ranged(8, ge=1)
    """Batch size of the importance passes."""
    deactivate_fraction: float = ranged(0.03, gt=0, lt=1)
    """Share of the base LLM's parameters zeroed in the deactivation test (Table 1)."""
    deactivate_limit: int | None = ranged(200, ge=1)
    """Held-out answers the deactivation perplexities are measured on (None: all)."""
    restore_cells: list[str] = field(default_factory=lambda: ["full"])
    """Strategy cells whose fine-tuned model gets an importance-guided restoration sweep (`speechkeep restore`: the top p% textually important LLM weights put back to the base LLM's, by the importance of importance/base; full and layer_lr runs, LoRA through its merged weights)."""
    restore_sweep: list[float] = ranged(default_factory=lambda: [0.5, 1.0, 3.0, 10.0], gt=0, le=100)
    """The percentages p of the restoration sweep; each restored model is evaluated on T2T and S2T (p = 0 is the cell's own evaluation)."""
    restore_controls: list[Literal["random", "change"]] = field(default_factory=lambda: ["random", "change"])
    """Control rankings of the restoration, each at restore_control_percent (cells restore_<control>/<cell>): random (a
    seeded uniform draw) and change (the weights fine-tuning moved most). They tell whether the importance ranking is
    what helps, or restoring any p% would."""
    restore_control_percent: float = ranged(1.0, gt=0, le=100)
    """The p of the control restorations."""
    heatmap_layer: int | None = ranged(None, ge=0)
    """Second layer of the heatmaps (besides layer 0); None: the LLM's last layer."""
    heatmap_matrices: list[str] | None = None
    """Parameter names drawn in the heatmaps (None: q, o and down projections of layer 0 and of heatmap_layer)."""
    dry_run: bool = False
    """Only list the cells (done, skipped, to run) with their commands and time estimates; write nothing."""
    reuse: str | None = None
    """Another comparison directory whose data/train, data/eval and eval/noft cells to link (same questions and voice) instead of recomputing them."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not an earlier `speechkeep reproduce` output."""

    # ------------------------------------------------------------------ resolved settings
    def resolved_preset(self) -> Preset:
        return PRESETS[self.preset]

    def resolved_train_tasks(self) -> dict:
        return dict(self.train_tasks) if self.train_tasks is not None else dict(self.resolved_preset().train_tasks)

    def resolved_eval_tasks(self) -> list[str]:
        return list(self.eval_tasks) if self.eval_tasks is not None else list(self.resolved_preset().eval_tasks)

    def variants(self) -> dict[str, Variant]:
        """The strategy cells of this comparison, in run order."""
        from speechkeep.strategies import STRATEGIES

        known = dict(VARIANTS)
        covered = {v.strategy for v in known.values()}
        for name in sorted(STRATEGIES):  # a strategy registered later gets a cell with its defaults
            if name not in covered and name not in NOT_A_CELL and name not in known:
                known[name] = Variant(name, (f"strategy={name}",))
        for name, ov in self.extra_cells.items():
            if not any(o.startswith("strategy=") for o in ov):
                raise UsageError(f"extra_cells.{name}: give its strategy, e.g. [strategy=lora, lora.r=32]")
            known[name] = Variant(name, tuple(o.replace("{", "{{").replace("}", "}}") for o in ov))
        preset = self.resolved_preset()
        names = list(self.cells) if self.cells is not None else (list(preset.cells) if preset.cells else list(known))
        names += [n for n in self.extra_cells if n not in names]
        bad = [n for n in names if n not in known]
        if bad:
            raise UsageError(f"cells: unknown cell '{bad[0]}'; known: {', '.join(known)} (or add it in extra_cells)")
        return {n: known[n] for n in names}


# ---------------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    """One unit of work: one ``speechkeep`` command writing one directory."""

    name: str
    """e.g. 'data/train', 'eval/noft', 'train/lora', 'importance/lora'."""
    directory: Path
    command: Callable[[], list[str]]
    """The command line (``['speechkeep', 'train', 'k=v', ...]``), built when the cell runs (it may read earlier cells)."""
    run: Callable[[list[str]], None]
    """Runs the command in this process."""
    done: Callable[[], bool]
    needs: tuple[str, ...] = ()
    kind: str = ""
    skip_reason: Callable[[], str | None] = lambda: None
    """A reason the cell cannot run for this model (e.g. a heatmap of an up-scaled model), checked before it runs."""

    @property
    def time_key(self) -> str:
        """Its key in times.json (the benchmark script's names: data_train, eval_noft, train_lora, ...)."""
        return self.name.replace("/", "_")


def _load_and_run(cls, fn):
    def run(argv: list[str]) -> None:
        from speechkeep.config import load_config

        fn(load_config(cls, None, [a for a in argv[2:] if "=" in a]))
    return run


def _run_data_build(argv: list[str]) -> None:
    from speechkeep.config import load_config
    from speechkeep.data.build import DataBuildConfig, build_dataset

    print(build_dataset(load_config(DataBuildConfig, None, argv[3:])).summary(), flush=True)


def _run_importance_command(argv: list[str]) -> None:
    """Run ``speechkeep importance|deactivate|heatmap ...`` through that command's own parser."""
    import argparse

    from speechkeep.importance.cli import add_importance_parsers

    p = argparse.ArgumentParser(prog="speechkeep")
    add_importance_parsers(p.add_subparsers(dest="command"))
    args = p.parse_args(argv[1:])
    args.func(args)


def _eval_done(d: Path) -> bool:
    return (d / "metrics.json").is_file()


def _data_done(d: Path) -> bool:
    return (d / "manifest.jsonl").is_file() and (d / "build_info.json").is_file()


def run_transforms(run_dir: Path) -> list[str]:
    """The recorded transforms of a training run's final model (empty if none or not saved yet)."""
    p = run_dir / "model" / "speechkeep.json"
    if not p.is_file():
        return []
    try:
        return [t.get("name") for t in json.loads(p.read_text()).get("transforms", [])]
    except (ValueError, OSError, AttributeError):
        return []


def resolve_start(cfg: ReproduceConfig) -> str | None:
    """The front-end every strategy starts from (``init_from`` resolved as ``speechkeep train`` does), or None."""
    from speechkeep.config import load_config
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import resolve_init

    return resolve_init(load_config(TrainConfig, None, [f"model.llm={cfg.llm}", f"model.speech_encoder={cfg.speech_encoder}",
                                                        f"init_from={cfg.init_from}"]))


def plan_cells(cfg: ReproduceConfig, init: str | None) -> list[Cell]:
    """Every cell of the comparison in run order (shared cells first, then per strategy: train, eval,
    importance, heatmap)."""
    from speechkeep.data.tts import VOICES
    from speechkeep.evaluate.run import EvalConfig, evaluate
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import train

    out = Path(cfg.out)
    cells: list[Cell] = []
    common = ([f"teacher={cfg.llm}", f"max_new_tokens={cfg.teacher_max_new_tokens}"] if cfg.teacher else []) + [
        f"speech_encoder={cfg.speech_encoder}", "encode_mode=variable", "features=true"]
    if cfg.train_data:
        td = Path(cfg.train_data)
        train_manifest = td if td.suffix == ".jsonl" else td / "manifest.jsonl"
    else:
        train_manifest = out / "data" / "train" / "manifest.jsonl"
        voices = cfg.train_voices if cfg.train_voices is not None else [v for v in VOICES if v != cfg.eval_voice]
        d = out / "data" / "train"
        cells.append(Cell("data/train", d, lambda d=d, voices=voices: [
            "speechkeep", "data", "build", f"questions={cfg.train_questions}", f"out={d}", f"limit={cfg.n_train}",
            f"voices=[{', '.join(voices)}]", "split=train", *common], _run_data_build, lambda d=d: _data_done(d), kind="data"))
    d = out / "data" / "eval"
    eval_manifest = d / "manifest.jsonl"
    cells.append(Cell("data/eval", d, lambda d=d: [
        "speechkeep", "data", "build", f"questions={cfg.eval_questions}", f"out={d}",
        *([f"limit={cfg.eval_limit}"] if cfg.eval_limit else []), f"voices=[{cfg.eval_voice}]", "split=eval", *common],
        _run_data_build, lambda d=d: _data_done(d), kind="data"))
    data_cells = tuple(c.name for c in cells)
    run_eval = _load_and_run(EvalConfig, evaluate)
    eval_tasks = cfg.resolved_eval_tasks()

    def eval_cell(name: str, model: str, tasks: list[str], needs: tuple[str, ...], baseline: bool = True,
                  kind: str = "eval") -> Cell:
        d = out / "eval" / name
        return Cell(f"eval/{name}", d, lambda: [
            "speechkeep", "eval", f"model={model}", f"data={eval_manifest}", f"out={d}", f"tasks=[{', '.join(tasks)}]",
            f"max_new_tokens={cfg.eval_max_new_tokens}", f"batch_size={cfg.eval_batch_size}",
            *([f"baseline={out / 'eval' / 'noft' / 'metrics.json'}"] if baseline else []),
            *([f"cascade_whisper={cfg.cascade_whisper or cfg.speech_encoder}"] if "cascade" in tasks else []),
            "overwrite=true"], run_eval, lambda: _eval_done(d), needs=needs, kind=kind)

    cells.append(eval_cell("noft", cfg.llm, list(cfg.noft_tasks), data_cells, baseline=False, kind="eval_noft"))
    speech_tasks = [t for t in eval_tasks if t in ("s2t", "asr")]
    if init is not None and speech_tasks:
        cells.append(eval_cell("aligned", init, speech_tasks, data_cells, baseline=False, kind="eval_aligned"))

    imp_base = out / "importance" / "base"
    if cfg.importance:
        cells.append(Cell("importance/base", imp_base, lambda: _importance_argv(cfg, cfg.llm, train_manifest, imp_base),
                          _run_importance_command, lambda: (imp_base / "importance.safetensors").is_file()
                          and (imp_base / "summary.json").is_file(), needs=data_cells, kind="importance"))
        d = out / "deactivate" / "base"
        cells.append(Cell("deactivate/base", d, lambda d=d: [
            "speechkeep", "deactivate", f"model={cfg.llm}", f"importance={imp_base}", f"data={eval_manifest}", "input=text",
            f"fraction={cfg.deactivate_fraction}", *([f"limit={cfg.deactivate_limit}"] if cfg.deactivate_limit else []),
            f"out={d}"], _run_importance_command, lambda d=d: (d / "deactivation.json").is_file(),
            needs=("importance/base", "data/eval"), kind="deactivate"))
        d = out / "heatmap" / "base"
        cells.append(Cell("heatmap/base", d, lambda d=d: [
            "speechkeep", "heatmap", f"importance={imp_base}", f"layer={_heatmap_layer(cfg, imp_base)}", *_matrices(cfg),
            f"out={d}"], _run_importance_command, lambda d=d: (d / "heatmaps.json").is_file(), needs=("importance/base",),
            kind="heatmap"))

    fill = dict(full_lr=cfg.full_lr, upscale_lr=cfg.upscale_lr, importance=imp_base if cfg.importance else "null")
    run_train = _load_and_run(TrainConfig, train)
    for name, variant in cfg.variants().items():
        run_dir = out / "runs" / name
        extra = [o.format(**fill) for o in variant.overrides]
        needs = data_cells + (("importance/base",) if cfg.importance and "{importance}" in " ".join(variant.overrides) else ())

        def train_argv(run_dir=run_dir, extra=extra) -> list[str]:
            ov = [f"init_from={init or 'none'}"] + ([f"optim.adaptor_lr={cfg.adaptor_lr}"] if init else []) + [
                f"model.llm={cfg.llm}", f"model.speech_encoder={cfg.speech_encoder}", "model.encode_mode=variable",
                f"data.train={train_manifest}", f"data.tasks={_flow(cfg.resolved_train_tasks())}",
                f"data.batch_size={cfg.batch_size}", f"optim.lr={cfg.lr}", f"max_steps={cfg.steps}",
                f"max_minutes={'none' if cfg.train_minutes is None else cfg.train_minutes}", f"output_dir={run_dir}",
                f"save_every={cfg.save_every}", "resume=true", f"seed={cfg.seed}"]
            return ["speechkeep", "train", *_last_wins([*ov, *extra, *cfg.train_extra])]

        cells.append(Cell(f"train/{name}", run_dir, train_argv, run_train,
                          lambda run_dir=run_dir: (run_dir / "summary.json").is_file(), needs=needs, kind="train"))
        cells.append(eval_cell(name, str(run_dir), eval_tasks, data_cells + ("eval/noft", f"train/{name}")))
        if cfg.importance:
            d = out / "importance" / name
            cells.append(Cell(f"importance/{name}", d, lambda d=d, run_dir=run_dir: _importance_argv(cfg, str(run_dir), train_manifest, d),
                              _run_importance_command, lambda d=d: (d / "importance.safetensors").is_file()
                              and (d / "summary.json").is_file(), needs=(f"train/{name}",), kind="importance"))
            d = out / "heatmap" / name
            cells.append(Cell(f"heatmap/{name}", d, lambda d=d, run_dir=run_dir: [
                "speechkeep", "heatmap", f"before={cfg.llm}", f"after={run_dir}", f"layer={_heatmap_layer(cfg, imp_base)}",
                *_matrices(cfg), f"out={d}"], _run_importance_command, lambda d=d: (d / "heatmaps.json").is_file(),
                needs=(f"train/{name}", "importance/base"), kind="heatmap",
                skip_reason=lambda run_dir=run_dir, strategy=variant.strategy: _heatmap_skip(run_dir, strategy)))
        if cfg.importance and name in cfg.restore_cells:
            d = out / "restore" / name
            cells.append(Cell(f"restore/{name}", d, lambda d=d, run_dir=run_dir, name=name: [
                "speechkeep", "restore", f"run={run_dir}", f"importance={imp_base}",
                f"sweep=[{', '.join(f'{p:g}' for p in cfg.restore_sweep)}]", f"data={eval_manifest}", "tasks=[t2t, s2t]",
                f"max_new_tokens={cfg.eval_max_new_tokens}", f"finetuned_eval={out / 'eval' / name}", f"out={d}"],
                _run_importance_command, lambda d=d: (d / "curve.json").is_file(),
                needs=(f"train/{name}", f"eval/{name}", "importance/base"), kind="restore",
                skip_reason=lambda strategy=variant.strategy: _restore_skip(strategy)))
            for control in cfg.restore_controls:
                d = out / f"restore_{control}" / name
                cells.append(Cell(f"restore_{control}/{name}", d, lambda d=d, run_dir=run_dir, name=name, control=control: [
                    "speechkeep", "restore", f"run={run_dir}", f"importance={imp_base}", f"ranking={control}",
                    f"sweep=[{cfg.restore_control_percent:g}]", f"data={eval_manifest}", "tasks=[t2t, s2t]",
                    f"max_new_tokens={cfg.eval_max_new_tokens}", f"finetuned_eval={out / 'eval' / name}", f"out={d}"],
                    _run_importance_command, lambda d=d: (d / "curve.json").is_file(),
                    needs=(f"train/{name}", f"eval/{name}", "importance/base"), kind="restore_control",
                    skip_reason=lambda strategy=variant.strategy: _restore_skip(strategy)))
    from speechkeep.strategies import STRATEGIES

    unknown = [n for n in cfg.restore_cells if n not in VARIANTS and n not in STRATEGIES and n not in cfg.extra_cells]
    if unknown:  # a cell that exists but is not in this comparison simply has no sweep
        raise UsageError(f"restore_cells: unknown cell '{unknown[0]}'; known: {', '.join(VARIANTS)} (or a strategy or "
                         "extra cell name)")
    return cells


def _restore_skip(strategy: str) -> str | None:
    if strategy in ("upscale", "adaptor"):
        return (f"no restoration sweep of a {strategy} run: its LLM weights are the base LLM's (the new blocks or the "
                "adaptor are what trained)")
    return None


def _last_wins(overrides: list[str]) -> list[str]:
    """key=value overrides with only the last of each key (a later one wins anyway: the command line stays readable)."""
    last = {o.split("=", 1)[0]: i for i, o in enumerate(overrides)}
    return [o for i, o in enumerate(overrides) if last[o.split("=", 1)[0]] == i]


def _flow(d: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"


def _importance_argv(cfg: ReproduceConfig, model: str, manifest: Path, out: Path) -> list[str]:
    return ["speechkeep", "importance", f"model={model}", f"data={manifest}", "input=text",
            f"fraction={cfg.importance_fraction}", f"batch_size={cfg.importance_batch_size}", "seed=0", f"out={out}"]


def _matrices(cfg: ReproduceConfig) -> list[str]:
    return [f"matrices=[{', '.join(cfg.heatmap_matrices)}]"] if cfg.heatmap_matrices else []


def _heatmap_layer(cfg: ReproduceConfig, imp_base: Path) -> int:
    if cfg.heatmap_layer is not None:
        return cfg.heatmap_layer
    from speechkeep.importance.runs import load_summary

    return max(0, int(load_summary(imp_base)["n_layers"]) - 1)


def _heatmap_skip(run_dir: Path, strategy: str) -> str | None:
    from speechkeep.strategies import STRATEGIES

    if strategy in STRATEGIES and not STRATEGIES[strategy].llm_changed:
        return f"strategy {strategy} leaves the LLM's weights as they are"
    other = [t for t in run_transforms(run_dir) if t != "lora"]
    if other:
        return f"the LLM's structure changed ({', '.join(other)}): no weight-by-weight change to draw"
    return None


# ---------------------------------------------------------------------------------------- selection
def select_cells(cells: list[Cell], only: list[str] | None) -> list[Cell]:
    """The cells ``only`` names (a cell name, a strategy cell's name = all its cells, or a shell pattern),
    with every cell they need; all cells when ``only`` is None."""
    if not only:
        return cells
    by_name = {c.name: c for c in cells}
    pats = [p.strip() for item in only for p in item.split(",") if p.strip()]
    chosen: set[str] = set()
    for p in pats:
        hit = {c.name for c in cells if fnmatch.fnmatchcase(c.name, p) or c.name.split("/", 1)[1] == p}
        if not hit:
            raise UsageError(f"only: '{p}' matches no cell; cells: {', '.join(c.name for c in cells)}")
        chosen |= hit
    todo = list(chosen)
    while todo:
        for n in by_name[todo.pop()].needs:
            if n in by_name and n not in chosen:
                chosen.add(n)
                todo.append(n)
    return [c for c in cells if c.name in chosen]


# ---------------------------------------------------------------------------------------- provenance
def provenance() -> dict:
    """Versions and machine facts recorded with every cell."""
    import importlib.metadata as md

    import torch

    from speechkeep import __version__

    def ver(p: str) -> str | None:
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"versions": {"speechkeep": __version__, "python": platform.python_version(), "torch": torch.__version__,
                         **{p: ver(p) for p in ("transformers", "peft", "accelerate", "numpy", "scipy")}},
            "machine": {"platform": platform.platform(), "processor": cpu or platform.processor() or None,
                        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}


def _git_commit() -> str | None:
    import subprocess

    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class Ledger:
    """``cells.json`` (per cell: command, wall time, finished time, versions, machine) and ``times.json``
    (the benchmark script's per-cell seconds, summed over resumptions); both written atomically."""

    def __init__(self, out: Path):
        from speechkeep.io import read_json_object

        self.cells_path, self.times_path = out / "cells.json", out / "times.json"
        self.cells = read_json_object(self.cells_path, "cells record") if self.cells_path.is_file() else {}
        self.times = read_json_object(self.times_path, "times record") if self.times_path.is_file() else {}
        for rec in self.cells.values():  # records of found cells written before command_now existed
            if rec.get("found") and rec.get("command") and "command_now" not in rec:
                rec["command_now"], rec["command"] = rec["command"], None

    def add_time(self, key: str, seconds: float) -> None:
        from speechkeep.io import write_json

        self.times[key] = self.times.get(key, 0.0) + seconds
        write_json(self.times_path, self.times)

    def record(self, cell: Cell, command: list[str] | None, seconds: float | None, prov: dict | None,
               skipped: str | None = None, found: bool = False) -> None:
        """``found``: a cell finished before this record existed (its finishing time and versions are unknown)."""
        from speechkeep.io import write_json

        entry = {"command": shlex.join(command) if command and not found else None, "seconds": seconds,
                 "finished": None if found else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if found:  # the command that made it is unknown: the cell's own directory records its settings
            entry["found"] = "finished before speechkeep reproduce recorded it (e.g. by benchmarks/strategy_comparison.py)"
            entry["command_now"] = shlex.join(command) if command else None
        if skipped:
            entry["skipped"] = skipped
        if prov:
            entry.update(prov)
        self.cells[cell.name] = entry
        write_json(self.cells_path, self.cells)

    def seconds(self, cell: Cell) -> float | None:
        rec = self.cells.get(cell.name, {})
        return rec.get("seconds") if rec.get("seconds") is not None else self.times.get(cell.time_key)

    def estimate(self, cell: Cell, cells: list[Cell]) -> float | None:
        """Mean wall time of the finished cells of the same kind (None: none timed yet)."""
        xs = [s for c in cells if c.kind == cell.kind and c.done() for s in [self.seconds(c)] if s]
        return sum(xs) / len(xs) if xs else None


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m = seconds / 60
    return f"{seconds:.0f} s" if seconds < 90 else f"{m:.0f} min" if m < 90 else f"{m / 60:.1f} h"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------- the recipe
def check_config(cfg: ReproduceConfig) -> None:
    """Fast checks of everything named in the config, before any work."""
    from speechkeep.config import load_config
    from speechkeep.data.tts import VOICES
    from speechkeep.evaluate.run import ALL_TASKS
    from speechkeep.train.config import TrainConfig

    if cfg.eval_voice not in VOICES:
        raise UsageError(f"eval_voice: unknown voice '{cfg.eval_voice}'; voices: {', '.join(VOICES)}")
    for v in cfg.train_voices or []:
        if v not in VOICES:
            raise UsageError(f"train_voices: unknown voice '{v}'; voices: {', '.join(VOICES)}")
        if v == cfg.eval_voice:
            raise UsageError(f"train_voices: {v} is the held-out eval_voice; it must speak no training question")
    for key, tasks in (("eval_tasks", cfg.resolved_eval_tasks()), ("noft_tasks", cfg.noft_tasks)):
        bad = [t for t in tasks if t not in ALL_TASKS]
        if bad:
            raise UsageError(f"{key}: unknown task '{bad[0]}'; tasks: {', '.join(ALL_TASKS)}")
    if "t2t" not in cfg.noft_tasks:
        raise UsageError("noft_tasks: must include t2t (every retention is measured against No-FT's T2T)")
    variants = cfg.variants()
    ref = cfg.reference or cfg.resolved_preset().reference
    if ref not in variants:
        raise UsageError(f"reference: '{ref}' is not among the cells ({', '.join(variants)})")
    if cfg.train_data and not Path(cfg.train_data).exists():
        raise UsageError(f"train_data {cfg.train_data}: no such file or directory")
    if cfg.reuse and not Path(cfg.reuse).is_dir():
        raise UsageError(f"reuse {cfg.reuse}: no such directory")
    for name, v in variants.items():  # every cell's train overrides are valid train keys
        try:
            load_config(TrainConfig, None, [o.format(full_lr=1, upscale_lr=1, importance="null") for o in v.overrides]
                        + list(cfg.train_extra))
        except UsageError as e:
            raise UsageError(f"cell {name}: {e}") from None


def run_reproduce(cfg: ReproduceConfig) -> dict:
    """The comparison (see the module docstring); returns the results written to results.json."""
    from speechkeep.io import OutputDir, has_files
    from speechkeep.models.llm import resolve_llm_dir
    from speechkeep.models.speech_encoder import check_whisper_asr, resolve_encoder_dir

    check_config(cfg)
    out = Path(cfg.out)
    from speechkeep.data.questions import resolve_question_sources

    questions = [] if cfg.train_data else resolve_question_sources(cfg.train_questions)
    guard = OutputDir(out, "reproduce", overwrite=cfg.overwrite, key="out", keep=has_files,
                      inputs=[cfg.train_data, cfg.reuse, *questions, *resolve_question_sources(cfg.eval_questions)])
    guard.check()
    resolve_llm_dir(cfg.llm)
    resolve_encoder_dir(cfg.speech_encoder)
    init = resolve_start(cfg)
    cells = plan_cells(cfg, init)
    todo = select_cells(cells, cfg.only)
    if "cascade" in cfg.noft_tasks:
        check_whisper_asr(cfg.cascade_whisper or cfg.speech_encoder)
    if cfg.dry_run:
        return _dry_run(out, cells, todo)
    with guard:
        if cfg.reuse:
            _link_reused(out, Path(cfg.reuse))
        stopped = _run_cells(cfg, out, cells, todo)
        from speechkeep.recipes.reproduce_report import write_report

        results = write_report(cfg, out, cells, init)
    if stopped:
        log(stopped)
    log(f"wrote {out / 'report.html'}, {out / 'report.md'} and {out / 'results.json'}")
    return results


def _dry_run(out: Path, cells: list[Cell], todo: list[Cell]) -> dict:
    """List the cells and what a run would do; writes nothing."""
    ledger = Ledger(out) if out.is_dir() else None
    states = {}
    for i, c in enumerate(todo, 1):
        skipped = ledger.cells.get(c.name, {}).get("skipped") if ledger else None
        state = "done" if c.done() else f"skipped ({skipped})" if skipped else "to run"
        est = ledger.estimate(c, cells) if ledger else None
        states[c.name] = state
        try:
            cmd = shlex.join(c.command())
        except Exception as e:  # noqa: BLE001 - a command that reads an unfinished cell
            cmd = f"(built when it runs: {type(e).__name__})"
        print(f"[{i}/{len(todo)}] {c.name}: {state}" + (f", est. {_fmt(est)}" if state == "to run" else ""))
        if state == "to run":
            print(f"  $ {cmd}")
    return {"cells": states}


def _link_reused(out: Path, other: Path) -> None:
    """Link (never copy or move) another comparison's finished shared cells."""
    for rel in ("data/train", "data/eval", "eval/noft"):
        src, dst = other.resolve() / rel, out / rel
        if src.exists() and not dst.exists() and not dst.is_symlink():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, dst, target_is_directory=True)
            log(f"cell {rel}: reused from {src}")


def _run_cells(cfg: ReproduceConfig, out: Path, cells: list[Cell], todo: list[Cell]) -> str | None:
    """Run the cells of ``todo`` that are not done, in order, with progress and time estimates; returns
    why it stopped early (the budget), or None."""
    ledger = Ledger(out)
    prov = provenance()
    prov["speechkeep_commit"] = _git_commit()
    start = time.perf_counter()
    budget = None if cfg.budget_minutes is None else 60 * cfg.budget_minutes
    n = len(todo)
    for i, cell in enumerate(todo, 1):
        pending = [c for c in todo[i - 1:] if not c.done() and not ledger.cells.get(c.name, {}).get("skipped")]
        if cell.done():
            if cell.name not in ledger.cells:  # made earlier (e.g. by benchmarks/strategy_comparison.py)
                ledger.record(cell, _safe_command(cell), ledger.times.get(cell.time_key), None, found=True)
            log(f"[{i}/{n}] {cell.name}: done")
            made, now = ledger.cells[cell.name].get("command"), _safe_command(cell)
            if made and now and made != shlex.join(now):
                log(f"  note: {cell.name} was made by another command than this config gives (kept as it is; delete "
                    f"{cell.directory} to redo it):\n    made: {made}\n    now:  {shlex.join(now)}")
            continue
        if ledger.cells.get(cell.name, {}).get("skipped"):
            log(f"[{i}/{n}] {cell.name}: skipped ({ledger.cells[cell.name]['skipped']})")
            continue
        missing = [m for m in cell.needs if (dep := next((c for c in cells if c.name == m), None)) and not dep.done()]
        if missing:
            return f"stopped before {cell.name}: it needs {', '.join(missing)}, which did not finish"
        est = ledger.estimate(cell, cells)
        ests = [ledger.estimate(c, cells) for c in pending]
        left = sum(e for e in ests if e) if all(ests) else None
        used = time.perf_counter() - start
        if budget is not None and (used >= budget or (est is not None and used + est > budget)):
            return (f"stopped at the budget of {cfg.budget_minutes:g} min ({_fmt(used)} used; {cell.name} is estimated "
                    f"at {_fmt(est)}); {len(pending)} cells left: run the same command again to go on")
        reason = cell.skip_reason()
        if reason:
            ledger.record(cell, None, None, None, skipped=reason)
            log(f"[{i}/{n}] {cell.name}: skipped ({reason})")
            continue
        argv = cell.command()
        log(f"[{i}/{n}] {cell.name}: running (est. {_fmt(est)}; {len(pending)} cells left, est. {_fmt(left)} "
            f"{'in all' if left is not None else '(not every kind timed yet)'}; {_fmt(used)} so far)")
        log(f"  $ {shlex.join(argv)}")
        t = time.perf_counter()
        try:
            cell.run(argv)
        finally:
            ledger.add_time(cell.time_key, time.perf_counter() - t)
        if not cell.done():
            from speechkeep.errors import SpeechkeepError

            raise SpeechkeepError(f"cell {cell.name}: the command finished but {cell.directory} is not complete")
        ledger.record(cell, argv, ledger.times[cell.time_key], prov)
        log(f"[{i}/{n}] {cell.name}: finished in {_fmt(time.perf_counter() - t)}")
    return None


def _safe_command(cell: Cell) -> list[str] | None:
    try:
        return cell.command()
    except Exception:  # noqa: BLE001 - a command that cannot be rebuilt is recorded as unknown
        return None
