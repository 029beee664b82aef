"""The training loop (Hugging Face accelerate: CPU, one GPU, or several through ``accelerate launch``).

    speechkeep train configs/train_demo.yaml strategy=lora lora.r=16 max_steps=200
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from speechkeep.config import config_to_dict
from speechkeep.errors import ConfigError, TrainingError
from speechkeep.io import OutputDir, write_json
from speechkeep.models.speech_llm import SpeechLLM
from speechkeep.strategies import STRATEGIES, get_strategy
from speechkeep.strategies.base import LossTerms, Strategy, count_trainable
from speechkeep.train.checkpoint import (load_checkpoint, load_optimizer_state, load_trainable, save_checkpoint,
                                         trainable_state)
from speechkeep.train.config import TrainConfig
from speechkeep.train.data import BatchStream, examples_from_rows, to_queries

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    final_loss: float
    seconds: float
    trainable_params: int
    tokens_per_second: float
    model: SpeechLLM | None = field(default=None, repr=False, compare=False)
    """The trained model as saved (after the strategy's export; on the main process)."""
    summary: dict = field(default_factory=dict, repr=False, compare=False)
    """What summary.json holds (on the main process)."""


def resolve_init(cfg: TrainConfig) -> str | None:
    """What the run starts from (see ``TrainConfig.init_from``): a model spec/directory, or None (fresh)."""
    from speechkeep.models.bundled import aligned_front_end

    init = (cfg.init_from or "none").strip()
    if init.lower() in ("none", "scratch", ""):
        return None
    if init.lower() == "auto":
        found = aligned_front_end(cfg.model.llm, cfg.model.speech_encoder)
        return str(found) if found else None
    return init


def build_model(cfg: TrainConfig) -> SpeechLLM:
    """The run's starting model (see ``TrainConfig.init_from``), through the one builder."""
    from speechkeep.models.builder import build_speech_llm
    from speechkeep.models.speech_llm import SpeechLLMConfig

    init = resolve_init(cfg)
    if init is not None:
        fresh = SpeechLLMConfig(llm=cfg.model.llm, speech_encoder=cfg.model.speech_encoder)
        if cfg.model != fresh:
            log.warning("starting from %s: its own adaptor, encode_mode and system prompt are used and the model.* "
                        "settings other than llm/speech_encoder are ignored; set init_from=none to build a fresh "
                        "adaptor", init)
    model, trained = build_speech_llm(cfg.model, init_from=init, seed=cfg.seed)
    if init is not None:
        if not trained:
            raise ConfigError(f"init_from={cfg.init_from!r} is not a saved SpeechLLM (no trained adaptor to start from)")
        log.info("starting from %s", init)
    return model


def make_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel over all parameters) where torch supports it for these tensors."""
    kw = dict(betas=(cfg.optim.beta1, cfg.optim.beta2), weight_decay=cfg.optim.weight_decay)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, **kw)


def warmup_steps(cfg: TrainConfig) -> int:
    o = cfg.optim
    return o.warmup_steps if o.warmup_steps is not None else int(round(o.warmup_ratio * cfg.max_steps))


def lr_factor(step: int, warmup: int, total: int, schedule: str, floor: float = 0.0) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based): linear warmup from 0
    (transformers' convention: step/warmup), then cosine or linear decay to ``floor`` at ``total``."""
    import math

    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1.0 + math.cos(math.pi * p)) if schedule == "cosine" else 1.0 - p
    return floor + (1.0 - floor) * max(0.0, decay)


def _scheduler(optimizer, cfg: TrainConfig):
    from transformers import get_scheduler

    warmup = warmup_steps(cfg)
    if cfg.optim.min_lr_ratio > 0 and cfg.optim.schedule != "constant":
        from functools import partial

        fn = partial(lr_factor, warmup=warmup, total=cfg.max_steps, schedule=cfg.optim.schedule,
                     floor=cfg.optim.min_lr_ratio)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.optim.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=cfg.max_steps)


def _manifest_rows(cfg: TrainConfig):
    from speechkeep.data.manifest import read_manifest

    if not cfg.data.train:
        raise ConfigError("data.train: give the training manifest (manifest.jsonl from `speechkeep data build`)")
    if not Path(cfg.data.train).exists():
        raise ConfigError(f"data.train: {cfg.data.train}: no such file or directory")
    rows = read_manifest(cfg.data.train)
    if cfg.data.split is not None:
        rows = [r for r in rows if r.split == cfg.data.split]
    if cfg.data.limit is not None:
        rows = rows[: cfg.data.limit]
    if not rows:
        raise ConfigError(f"data.train: {cfg.data.train} has no rows (split={cfg.data.split!r})")
    return rows


def _feature_fn(cfg: TrainConfig, model: SpeechLLM) -> Callable[[list[str]], list[torch.Tensor]]:
    from speechkeep.data.features import FeatureCache

    train = Path(cfg.data.train)
    data_dir = train if train.is_dir() else train.parent
    read_root = cfg.data.features_dir or str(data_dir / "features")
    # The dataset's features are read, never written: misses go to speechkeep's own cache.
    cache = FeatureCache(None, model.encoder, model.config.encode_mode, read_roots=[read_root])
    return cache.get


def _check_before_start(cfg: TrainConfig, out: Path) -> None:
    """Everything that can be checked before the model is loaded (seconds to minutes)."""
    from speechkeep.models.llm import resolve_llm_dir
    from speechkeep.models.speech_encoder import resolve_encoder_dir

    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"strategy: unknown strategy '{cfg.strategy}'; available: {', '.join(sorted(STRATEGIES))}")
    init = resolve_init(cfg)
    if init is None:
        resolve_llm_dir(cfg.model.llm)
        resolve_encoder_dir(cfg.model.speech_encoder)
    else:
        from speechkeep.models.persistence import check_model_spec

        if not Path(init).exists() and not init.startswith("bundled:"):
            raise ConfigError(f"init_from: {init}: no such run, SpeechLLM directory or front-end spec")
        check_model_spec(init, "init_from")
    get_strategy(cfg.strategy, cfg).check()
    ckpt = out / "checkpoint"
    if ckpt.exists() and not cfg.resume and not cfg.overwrite:
        raise ConfigError(f"{ckpt} exists: pass resume=true to continue it, or choose another output_dir")
    prev = out / "train_config.json"
    if cfg.resume and ckpt.exists() and prev.is_file():
        try:
            before = json.loads(prev.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            before = {}
        if isinstance(before, dict) and before.get("strategy") not in (None, cfg.strategy):
            raise ConfigError(f"output_dir {out} holds a run of strategy={before['strategy']}; this config trains "
                              f"strategy={cfg.strategy}: choose another output_dir (or resume with the same strategy)")


def _non_finite_items(finite, batch, world: int) -> list[str]:
    """The ids of the batch (of every process whose loss is not finite, with several processes: all
    of them then stop together instead of waiting for each other) whose loss is NaN or infinite."""
    finite = bool(finite)
    if world == 1:
        return [] if finite else [e.id for e in batch]
    from accelerate.utils import gather_object

    return [i for ok, ids in gather_object([(finite, [e.id for e in batch])]) if not ok for i in ids]


def _reduce_step(acc, loss: float, tokens: int, terms: dict[str, float], names: list[str]):
    vals = torch.tensor([loss, float(tokens)] + [terms.get(n, 0.0) for n in names], dtype=torch.float64)
    vals = acc.reduce(vals.to(acc.device), "sum").cpu()
    world = acc.num_processes
    return (float(vals[0]) / world, int(round(float(vals[1]))),
            {n: float(v) / world for n, v in zip(names, vals[2:].tolist()) if n in terms})


def _reduce_per_task(acc, per_task: dict, tasks: list[str]) -> dict:
    vals = torch.tensor([[float(per_task.get(t, (0.0, 0))[0]), float(per_task.get(t, (0.0, 0))[1])] for t in tasks],
                        dtype=torch.float64)
    vals = acc.reduce(vals.to(acc.device), "sum").cpu()
    return {t: (float(v[0]), int(round(float(v[1])))) for t, v in zip(tasks, vals) if v[1] > 0}


def _diverged(step: int, what: str, ids: list[str], ckpt_dir: Path, last_saved: int | None) -> None:
    ids = ", ".join(dict.fromkeys(ids))
    kept = (f"the last good checkpoint (step {last_saved}) is kept in {ckpt_dir}: lower optim.lr (or drop those items) "
            "and run again with resume=true") if last_saved else "no checkpoint had been written yet"
    raise TrainingError(f"training stopped at step {step}: {what} (not finite) on the batch of items {ids}; {kept}")


def _drop_rows_after(metrics_path: Path, step: int) -> None:
    """Drop the metrics.csv rows of steps after ``step`` (logged by a run killed after its last
    checkpoint: the resumed run logs those steps again, so none is duplicated); atomic."""
    from speechkeep.io import atomic_path

    lines = metrics_path.read_text().splitlines(keepends=True)
    keep = lines[:1]
    for line in lines[1:]:
        head = line.split(",", 1)[0]
        if not line.endswith("\n"):  # torn by a kill
            continue
        if head.isdigit() and int(head) <= step:
            keep.append(line)
    if len(keep) != len(lines):
        with atomic_path(metrics_path) as tmp:
            tmp.write_text("".join(keep))


def _multi_cpu() -> bool:
    """Several processes (``accelerate launch --multi_gpu --num_processes N``, ``torchrun``) on a machine
    without a GPU: accelerate then needs ``cpu=True`` to run them as one DDP group over gloo (else each
    process trains alone)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and not torch.cuda.is_available()


def _forget_other_precision(mixed: str) -> None:
    """Let one process train again with another precision (two runs in one Python session, e.g. fp32 then bf16):
    accelerate keeps its state in a process-wide singleton that refuses a new ``mixed_precision``. In a single
    process its precision-dependent part is dropped and rebuilt; a launched multi-process run keeps its own."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed) != mixed and int(os.environ.get("WORLD_SIZE", "1") or 1) == 1:
        AcceleratorState._reset_state()


def _accelerator(cfg: TrainConfig, precision: str):
    """The run's accelerator: one process, DDP (CPU or GPUs) or FSDP2; DeepSpeed, Megatron-LM and FSDP1
    are refused before the model is loaded."""
    from accelerate import Accelerator

    from speechkeep.distributed import fsdp_on_cpu

    cpu = _multi_cpu()
    mixed = "bf16" if precision == "bf16" else "no"
    _forget_other_precision(mixed)
    acc = Accelerator(gradient_accumulation_steps=cfg.optim.grad_accum, mixed_precision=mixed, cpu=cpu)
    if cpu:
        fsdp_on_cpu(acc)
    kind = acc.distributed_type.name
    if kind in ("DEEPSPEED", "MEGATRON_LM"):
        raise ConfigError(f"accelerate {kind}: speechkeep's checkpoints and model export do not gather its sharded "
                          "state; use configs/accelerate/ddp.yaml or configs/accelerate/fsdp.yaml")
    if kind == "FSDP":
        if acc.state.fsdp_plugin.fsdp_version != 2:
            raise ConfigError("accelerate FSDP: only FSDP2 is supported (fsdp_version: 2, as in "
                              "configs/accelerate/fsdp.yaml)")
        strategy = get_strategy(cfg.strategy, cfg)
        if type(strategy).begin is not Strategy.begin:
            raise ConfigError(f"strategy {cfg.strategy} under FSDP: its begin() runs the model on the main process "
                              "alone, which a sharded model cannot; use configs/accelerate/ddp.yaml")
        if strategy.eval_metrics and cfg.eval_every:
            raise ConfigError(f"strategy {cfg.strategy} under FSDP: its evaluation runs on the main process alone, "
                              "which a sharded model cannot; set eval_every=0")
    return acc


def _shard_plan(acc, model: SpeechLLM) -> None:
    """FSDP: one shard unit per LLM decoder layer (the LLM's ``_no_split_modules``) when the config asks for
    transformer-based wrapping without naming the layer class; the speech encoder is left unsharded (it
    runs outside the model's forward, in the feature cache), as the strategies' frozen modules are."""
    plugin = acc.state.fsdp_plugin
    if plugin.transformer_cls_names_to_wrap is None:
        names = getattr(model.llm, "_no_split_modules", None)
        plugin.transformer_cls_names_to_wrap = list(names) if names else None
    if plugin.ignored_modules is None:
        plugin.ignored_modules = "encoder"


def _unsharded_model(cfg: TrainConfig, weights: dict[str, torch.Tensor], where: Path) -> SpeechLLM:
    """FSDP: the trained model, whole and on the CPU, for the export: built again as at the start (the
    config, the strategy's setup) with the gathered trainable weights, as a resumed run builds it."""
    model = build_model(cfg)
    get_strategy(cfg.strategy, cfg).setup(model)
    load_trainable(model, weights, where)
    return model


def _keep_run(out: Path) -> bool:
    """A failed or interrupted run is kept when it has a checkpoint to resume from."""
    return (out / "checkpoint" / "progress.json").is_file() or (out / "model").is_dir()


def train(cfg: TrainConfig, rows: Sequence | None = None,
          features: Callable[[list[str]], list[torch.Tensor]] | None = None, progress: bool = True) -> TrainResult:
    """Run (or resume) one training run. ``rows``/``features`` override the manifest and feature cache
    (Python API, used by tests and recipes that already hold them).

    The config, the output directory, the model specs and the training data are checked before the
    model is loaded; a run that fails leaves nothing behind unless it has a checkpoint to resume from."""
    out = Path(cfg.output_dir)
    inputs = [cfg.data.train if rows is None else None, cfg.init_from, cfg.data.features_dir]
    if cfg.strategy in STRATEGIES:
        inputs += get_strategy(cfg.strategy, cfg).inputs()
    guard = OutputDir(out, "train", overwrite=cfg.overwrite, key="output_dir", keep=_keep_run, inputs=inputs)
    guard.check()
    _check_before_start(cfg, out)
    if rows is None:
        rows = _manifest_rows(cfg)
    per_task = examples_from_rows(rows, cfg.data.tasks)
    with guard:
        return _train(cfg, out, per_task, features, progress)


def _train(cfg: TrainConfig, out: Path, per_task: dict,
           features: Callable[[list[str]], list[torch.Tensor]] | None, progress: bool) -> TrainResult:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    ckpt_dir = out / "checkpoint"
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    acc = _accelerator(cfg, precision)
    # FSDP2 shards the parameters and optimizer state: checkpoints and the export gather them (every
    # process takes part), and the optimizer state is loaded after sharding.
    sharded = acc.distributed_type.name == "FSDP"
    set_seed(cfg.seed)

    if acc.device.type == "cpu":
        # Tiny gradients go denormal in fp32 and CPUs handle those ~100x slower: flush them to zero
        # (measured ~10% faster full fine-tuning steps on SmolLM2).
        torch.set_flush_denormal(True)
    model = build_model(cfg)
    strategy = get_strategy(cfg.strategy, cfg)
    groups = strategy.setup(model)
    n_trainable = count_trainable(model)
    summary = ", ".join(f"{g['name']} {sum(p.numel() for p in g['params']) / 1e6:.3f} M @ lr {g['lr']:g}" for g in groups)
    acc.print(f"strategy {strategy.name}: {n_trainable:,} trainable parameters ({summary})")
    opt_groups = [{"params": g["params"], "lr": g["lr"]} for g in groups]
    optimizer = make_optimizer(opt_groups, cfg)
    scheduler = _scheduler(optimizer, cfg)

    features = features or _feature_fn(cfg, model)
    per_task = strategy.prepare_examples(model, per_task, features)
    if not any(per_task.get(t) for t, w in cfg.data.tasks.items() if w > 0):
        raise TrainingError(f"strategy {strategy.name}: no training example is left to train on")
    stream = BatchStream(per_task, cfg.data.tasks, cfg.data.batch_size, cfg.seed, cfg.data.group_by_length)
    # Each process takes every world_size-th micro-batch.
    rank, world = acc.process_index, acc.num_processes

    step, elapsed_before, saved_optimizer, resumed_loss = 0, 0.0, None, None
    if cfg.resume and ckpt_dir.exists():
        progress_rec = load_checkpoint(ckpt_dir, model, None if sharded else optimizer, scheduler)
        saved_optimizer = progress_rec.pop("optimizer", None)
        step = progress_rec["step"]
        elapsed_before = float(progress_rec.get("train_seconds", 0.0))
        resumed_loss = progress_rec.get("last_loss")  # the final loss of a run resumed at its last step
        stream.load_state(progress_rec["data"])
        acc.print(f"resumed from {ckpt_dir} at step {step}")
    if acc.is_main_process:
        write_json(out / "train_config.json", config_to_dict(cfg))

    if sharded:
        _shard_plan(acc, model)
    model, optimizer = acc.prepare(model, optimizer)
    if sharded:
        from torch.distributed.fsdp import FSDPModule

        units = sum(isinstance(m, FSDPModule) for m in model.modules())
        if acc.is_main_process:
            print(f"FSDP2: {units} shard units over {acc.num_processes} processes ({acc.device.type})", file=sys.stderr)
    if saved_optimizer is not None:
        load_optimizer_state(optimizer, saved_optimizer, ckpt_dir)
    raw = acc.unwrap_model(model)
    # the optimizer's parameters (FSDP replaces the model's with sharded ones)
    clipped = [p for g in optimizer.param_groups for p in g["params"]]
    raw.adaptor.train()
    raw.llm.train() if strategy.llm_changed else raw.llm.eval()
    # Modules the loss uses but never trains (a teacher) go where the model went, in eval mode.
    for m in strategy.frozen_modules().values():
        m.to(acc.device)
        m.eval()
        m.requires_grad_(False)
    for turn in (True, False):  # the main process first (it may write a cache the others then read)
        if acc.is_main_process == turn:
            strategy.begin(raw, per_task)
        acc.wait_for_everyone()

    tasks = sorted(cfg.data.tasks)
    terms = list(strategy.terms)
    evals = list(strategy.eval_metrics)
    last_eval: dict[str, float] = {}
    main = acc.is_main_process
    metrics_path = out / "metrics.csv"
    new_file = not metrics_path.exists() or step == 0
    if main and not new_file:
        _drop_rows_after(metrics_path, step)
    last_saved = step if step > 0 else None
    mf = open(metrics_path, "w" if new_file else "a", newline="") if main else None
    tb = None
    bar = None
    try:
        writer = csv.writer(mf) if mf is not None else None
        if writer is not None and new_file:
            writer.writerow(["step", "loss", "lr", "tokens_per_s", "elapsed_s"] + [f"loss_{t}" for t in tasks]
                            + [f"term_{n}" for n in terms] + [f"eval_{n}" for n in evals])
        if main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # tensorboard is optional at run time
                tb = None

        loss_fn = strategy.loss
        t0 = time.perf_counter()
        tokens, last_loss, window = 0, float("nan") if resumed_loss is None else float(resumed_loss), []
        win_tasks: dict[str, list[float]] = {}  # task -> [summed CE, tokens] over the log window
        win_terms: dict[str, list[float]] = {}  # term -> [sum of per-step values, steps]
        bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train[{strategy.name}]",
                   disable=not progress or not main, dynamic_ncols=True)
        stopped_early = False
        while step < cfg.max_steps:
            step_loss, step_tokens = 0.0, 0
            step_terms: dict[str, float] = {}
            for _ in range(cfg.optim.grad_accum):
                batch = None
                for i in range(world):
                    b = next(stream)
                    if i == rank:
                        batch = b
                queries = to_queries(batch, features, cfg.data.asr_instruction)
                with acc.accumulate(model):
                    out_terms = model(queries, loss_fn=loss_fn)
                    if not isinstance(out_terms, LossTerms):
                        raise TypeError(f"strategy {strategy.name}: loss() must return LossTerms, got {type(out_terms).__name__}")
                    loss = out_terms.total()
                    bad = _non_finite_items(torch.isfinite(loss.detach()).all(), batch, world)
                    if bad:
                        _diverged(step + 1, f"the loss is {float(loss.detach()) if world == 1 else 'NaN or infinite'}",
                                  bad, ckpt_dir, last_saved)
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.optim.max_grad_norm > 0:
                        norm = acc.clip_grad_norm_(clipped, cfg.optim.max_grad_norm)
                        if norm is not None and not torch.isfinite(torch.as_tensor(norm)).all():
                            _diverged(step + 1, f"the gradient norm is {float(norm):g}", [e.id for e in batch], ckpt_dir,
                                      last_saved)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step_loss += loss.item() / cfg.optim.grad_accum
                step_tokens += int(out_terms.input_tokens or out_terms.n_tokens)
                for name, t in out_terms.terms.items():
                    step_terms[name] = step_terms.get(name, 0.0) + float(t.detach()) / cfg.optim.grad_accum
                per_task = out_terms.per_task
                if world > 1:  # summed over processes
                    per_task = _reduce_per_task(acc, per_task, tasks)
                for task, (total, n) in per_task.items():
                    acc_t = win_tasks.setdefault(task, [0.0, 0])
                    acc_t[0] += total
                    acc_t[1] += n
            if world > 1:  # the step's loss is the mean over processes, as one process with grad_accum=world
                step_loss, step_tokens, step_terms = _reduce_step(acc, step_loss, step_tokens, step_terms, terms)
            for name, v in step_terms.items():
                acc_n = win_terms.setdefault(name, [0.0, 0])
                acc_n[0] += v
                acc_n[1] += 1
            scheduler.step()
            step += 1
            tokens += step_tokens
            last_loss = step_loss
            window.append(step_loss)
            elapsed = time.perf_counter() - t0
            tps = tokens / max(elapsed, 1e-9)
            bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tps:.0f}", **last_eval)
            bar.update(1)
            evaluated: dict[str, float] = {}
            if evals and main and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                raw.adaptor.eval()
                raw.llm.eval()
                evaluated = last_eval = strategy.evaluate(raw)
                raw.adaptor.train()
                raw.llm.train() if strategy.llm_changed else raw.llm.eval()
            if step % cfg.log_every == 0 or step == cfg.max_steps or evaluated:
                mean = sum(window) / len(window)
                task_means = {t: v[0] / v[1] for t, v in win_tasks.items() if v[1]}
                term_means = {n: v[0] / v[1] for n, v in win_terms.items() if v[1]}
                window, win_tasks, win_terms = [], {}, {}
                if writer is not None:
                    writer.writerow([step, f"{mean:.5f}", f"{scheduler.get_last_lr()[0]:.3e}", f"{tps:.1f}",
                                     f"{elapsed_before + elapsed:.1f}"]
                                    + [f"{task_means[t]:.5f}" if t in task_means else "" for t in tasks]
                                    + [f"{term_means[n]:.5f}" if n in term_means else "" for n in terms]
                                    + [f"{evaluated[n]:.5f}" if n in evaluated else "" for n in evals])
                    mf.flush()
                if tb is not None:
                    tb.add_scalar("train/loss", mean, step)
                    tb.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    tb.add_scalar("train/tokens_per_s", tps, step)
                    for t, v in task_means.items():
                        tb.add_scalar(f"train/loss_{t}", v, step)
                    for n, v in term_means.items():
                        tb.add_scalar(f"train/term_{n}", v, step)
                    for n, v in evaluated.items():
                        tb.add_scalar(f"eval/{n}", v, step)
            if cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60:
                stopped_early = True
            if step % cfg.save_every == 0 or stopped_early or step == cfg.max_steps:
                acc.wait_for_everyone()
                if main or sharded:  # sharded: every process takes part in gathering, the main one writes
                    save_checkpoint(ckpt_dir, raw, optimizer, scheduler, step, stream.state(),
                                    {"train_seconds": round(elapsed_before + time.perf_counter() - t0, 3),
                                     "last_loss": last_loss if math.isfinite(last_loss) else None}, write=main)
                last_saved = step
            if stopped_early:
                acc.print(f"stopping after {cfg.max_minutes} minutes at step {step}")
                break
    finally:
        if bar is not None:
            bar.close()
        if mf is not None:
            mf.close()
        if tb is not None:
            tb.close()
    seconds = time.perf_counter() - t0
    result: dict = {}
    if sharded:  # the export works on a whole model: the main process builds one with the gathered weights
        weights = trainable_state(raw, keep=acc.is_main_process)
        if acc.is_main_process:
            raw = _unsharded_model(cfg, weights, ckpt_dir)
        del weights
    if acc.is_main_process:
        if evals and cfg.eval_every and not last_eval:  # e.g. a run resumed at its last step
            raw.eval()
            last_eval = strategy.evaluate(raw)
        strategy.export(raw)
        raw.save_pretrained(out / "model")
        result = {"steps": step, "final_loss": last_loss if math.isfinite(last_loss) else None, "seconds": round(seconds, 1),
                  "train_seconds": round(elapsed_before + seconds, 1), "trainable_params": n_trainable,
                  "tokens_per_second": round(tokens / max(seconds, 1e-9), 1), "strategy": strategy.name,
                  "stopped_early": stopped_early, **{f"eval_{k}": v for k, v in last_eval.items()},
                  **strategy.summary()}
        write_json(out / "summary.json", result)
    acc.wait_for_everyone()
    return TrainResult(out, step, last_loss, seconds, n_trainable, tokens / max(seconds, 1e-9),
                       model=raw if acc.is_main_process else None, summary=result)
