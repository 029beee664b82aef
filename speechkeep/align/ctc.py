"""CTC alignment onto the LLM's own vocabulary: the fastest-learning alignment stage on a CPU.

The adaptor's outputs are scored against the frozen LLM's token embeddings (plus a learned blank,
:class:`~speechkeep.models.adaptor.FrameStackAdaptor` with ``output='ctc'``) and trained with CTC
on transcripts tokenized by the LLM's tokenizer. The LLM itself never runs: a step costs the adaptor
MLP and one (frames x V) matmul, where V is the CTC vocabulary, the LLM tokens that occur in the
corpus transcripts (about a fifth of SmolLM2's 49k). Encoder features come from the cache
(variable-length), batches are grouped by length.

Checkpoints are atomic (``<out>/checkpoint``, every ``save_every`` steps) and ``resume`` continues
a stopped run exactly (optimizer, scheduler, data order, RNG). ``<out>/metrics.csv`` logs loss,
learning rate and, every ``eval_every`` steps, the greedy-CTC WER on the evaluation manifest
(monitoring only: the final model is the last step's, no checkpoint is picked by its score).
The result, ``<out>/model``, is a SpeechLLM directory (the LLM referenced by its spec).
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from speechkeep.errors import ConfigError, DataError
from speechkeep.config import Checked, ranged
from speechkeep.models.adaptor import AdaptorConfig
from speechkeep.models.speech_llm import SpeechLLMConfig

log = logging.getLogger(__name__)


def _default_model() -> SpeechLLMConfig:
    return SpeechLLMConfig(adaptor=AdaptorConfig(hidden_size=1024, output="ctc", ctc_vocab_size=1),
                           encode_mode="variable")


@dataclass
class CTCAlignConfig(Checked):
    """Options of the CTC alignment stage."""

    manifest: str = "runs/align/corpus/manifest.jsonl"
    """Training manifest (the alignment corpus: every row's text is its transcript)."""
    eval_manifest: str | None = None
    """Held-out manifest for the WER curve (None: no evaluation during training)."""
    features_dir: str | None = None
    """Encoder-feature cache of the training manifest (None: <manifest dir>/features)."""
    eval_features_dir: str | None = None
    """Feature cache of the evaluation manifest (None: <eval manifest dir>/features)."""
    out: str = "runs/align/ctc"
    """Output directory: metrics.csv, checkpoint/, model/, summary.json."""
    model: SpeechLLMConfig = field(default_factory=_default_model)
    """The SpeechLLM whose adaptor is trained (adaptor.output must be 'ctc'; ctc_vocab_size is set from the corpus)."""
    batch_size: int = ranged(32, ge=1)
    """Utterances per step."""
    lr: float = ranged(1e-3, gt=0)
    """Peak learning rate (AdamW)."""
    weight_decay: float = ranged(0.01, ge=0)
    """AdamW weight decay."""
    warmup_steps: int = ranged(100, ge=0)
    """Linear warmup steps, then cosine decay to 10% of the peak at max_steps."""
    max_steps: int = ranged(3000, ge=1)
    """Optimizer steps."""
    max_minutes: float | None = ranged(None, ge=0)
    """Stop (with a checkpoint and the model saved) after this much training time; resume later."""
    eval_every: int = ranged(250, ge=1)
    """Steps between WER evaluations."""
    save_every: int = ranged(100, ge=1)
    """Steps between checkpoints."""
    resume: bool = True
    """Continue from <out>/checkpoint when it exists."""
    seed: int = ranged(0, ge=0)
    """Seed of the adaptor initialization and the data order."""


# ----------------------------------------------------------------------------- data
def ctc_vocabulary(token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """The CTC vocabulary: every LLM token id occurring in the transcripts, sorted."""
    return torch.tensor(sorted({t for ids in token_ids for t in ids}), dtype=torch.long)


def ctc_feasible(n_frames: int, labels: Sequence[int]) -> bool:
    """Whether CTC can align ``labels`` to ``n_frames`` outputs (repeats need a blank between)."""
    repeats = sum(a == b for a, b in zip(labels, labels[1:]))
    return 0 < len(labels) and len(labels) + repeats <= n_frames


class _Batches:
    """Length-grouped, shuffled batches over epochs; the position is checkpointable."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.epoch, self.pos = 0, 0
        self._plan = self._make(0)

    def _make(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + epoch)
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        chunk = self.batch_size * 64
        batches = []
        for s in range(0, len(idx), chunk):
            part = sorted(idx[s: s + chunk], key=lambda i: self.lengths[i])
            batches += [part[j: j + self.batch_size] for j in range(0, len(part), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state(self, st: dict) -> None:
        self.epoch, self.pos = int(st["epoch"]), int(st["pos"])
        self._plan = self._make(self.epoch)

    def __next__(self) -> list[int]:
        if self.pos >= len(self._plan):
            self.epoch, self.pos = self.epoch + 1, 0
            self._plan = self._make(self.epoch)
        b = self._plan[self.pos]
        self.pos += 1
        return b


def load_features(rows, features_dir: Path, encoder_spec: str, progress: bool = True) -> list[torch.Tensor]:
    """fp16 variable-length features of every row (computed and cached where missing)."""
    from speechkeep.data.features import FeatureCache

    cache = FeatureCache(features_dir, encoder_spec, "variable", progress=progress)
    out = []
    step = 2048
    for s in range(0, len(rows), step):
        out += cache.get([r.audio for r in rows[s: s + step]], dtype=torch.float16)
    return out


# ----------------------------------------------------------------------------- loss and decoding
def ctc_loss(adaptor, frames: list[torch.Tensor], targets: list[list[int]], vocab_emb: torch.Tensor) -> torch.Tensor:
    """Mean CTC loss (per target token, then over the batch) of a batch; targets are CTC labels (1..V)."""
    hs = adaptor.frame_outputs(frames)
    lens = torch.tensor([h.shape[0] for h in hs])
    logp = torch.log_softmax(adaptor.ctc_logits(torch.cat(hs), vocab_emb).float(), dim=-1)
    padded = nn.utils.rnn.pad_sequence(list(torch.split(logp, lens.tolist())), batch_first=False)
    tgt = torch.tensor([t for ts in targets for t in ts], dtype=torch.long)
    tlen = torch.tensor([len(ts) for ts in targets], dtype=torch.long)
    return nn.functional.ctc_loss(padded, tgt, lens, tlen, blank=0, reduction="mean", zero_infinity=True)


def ctc_transcribe(model, frames: list[torch.Tensor], batch_size: int = 64) -> list[str]:
    """Greedy CTC transcripts of a CTC-adaptor SpeechLLM (see :meth:`SpeechLLM.ctc_transcribe`)."""
    return model.ctc_transcribe(frames, batch_size)


# ----------------------------------------------------------------------------- training
def train_ctc(cfg: CTCAlignConfig, progress: bool = True) -> dict:
    """Run (or resume) the CTC stage; returns the summary written to ``<out>/summary.json``."""
    from speechkeep.data.manifest import read_manifest
    from speechkeep.io import write_json
    from speechkeep.metrics import corpus_wer
    from speechkeep.models.speech_llm import SpeechLLM
    from speechkeep.train.checkpoint import load_checkpoint, save_checkpoint

    if cfg.model.adaptor.output != "ctc":
        raise ConfigError("model.adaptor.output must be 'ctc' for the CTC alignment stage")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(cfg.manifest)
    if not rows:
        raise DataError(f"{cfg.manifest}: no utterances")
    feats_dir = Path(cfg.features_dir) if cfg.features_dir else Path(cfg.manifest).parent / "features"

    from speechkeep.config import config_to_dict
    from speechkeep.models.llm import load_llm
    from speechkeep.models.speech_encoder import load_speech_encoder

    loaded = load_llm(cfg.model.llm)  # loaded once: its tokenizer sizes the CTC vocabulary, then it is the model's LLM
    tok = loaded.tokenizer
    all_ids = [tok(r.text, add_special_tokens=False)["input_ids"] for r in rows]
    vocab = ctc_vocabulary(all_ids)
    index = {int(t): i + 1 for i, t in enumerate(vocab.tolist())}
    cfg.model.adaptor.ctc_vocab_size = len(vocab)
    model = SpeechLLM.from_parts(loaded.model, tok, load_speech_encoder(cfg.model.speech_encoder), cfg.model, seed=cfg.seed)
    model.adaptor.ctc_vocab.copy_(vocab)
    model.llm.eval()
    adaptor = model.adaptor
    with torch.no_grad():
        vocab_emb = adaptor.vocab_embeddings(model.llm.get_input_embeddings()).detach().float()

    t0 = time.perf_counter()
    feats = load_features(rows, feats_dir, cfg.model.speech_encoder, progress)
    keep = [i for i in range(len(rows)) if ctc_feasible(adaptor.num_tokens(feats[i].shape[0]), all_ids[i])]
    dropped = len(rows) - len(keep)
    feats = [feats[i] for i in keep]
    targets = [[index[t] for t in all_ids[i]] for i in keep]
    log.info("%d utterances (%d dropped: too many tokens for their frames), CTC vocabulary %d, features loaded in %.0f s",
             len(keep), dropped, len(vocab), time.perf_counter() - t0)

    eval_rows, eval_feats = [], []
    if cfg.eval_manifest:
        eval_rows = read_manifest(cfg.eval_manifest)
        ed = Path(cfg.eval_features_dir) if cfg.eval_features_dir else Path(cfg.eval_manifest).parent / "features"
        eval_feats = load_features(eval_rows, ed, cfg.model.speech_encoder, progress)

    params = [p for p in adaptor.parameters() if p.requires_grad]
    try:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        p = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    batches = _Batches([f.shape[0] for f in feats], cfg.batch_size, cfg.seed)
    step, elapsed_before = 0, 0.0
    ckpt = out / "checkpoint"
    if cfg.resume and ckpt.is_dir():
        prog = load_checkpoint(ckpt, adaptor, opt, sched)
        step, elapsed_before = prog["step"], prog.get("train_seconds", 0.0)
        batches.load_state(prog["data"])
        log.info("resumed at step %d", step)

    def evaluate() -> dict:
        if not eval_rows:
            return {}
        adaptor.eval()
        hyps = ctc_transcribe(model, eval_feats)
        adaptor.train()
        return {"eval_wer": round(corpus_wer([r.text for r in eval_rows], hyps), 4)}

    metrics_path = out / "metrics.csv"
    new_file = not metrics_path.exists() or step == 0
    mf = open(metrics_path, "w" if new_file else "a", newline="")
    writer = csv.writer(mf)
    if new_file:
        writer.writerow(["step", "loss", "lr", "train_seconds", "eval_wer"])
    adaptor.train()
    t_start = time.perf_counter()
    losses: list[float] = []
    last: dict = {}
    from tqdm import tqdm

    bar = tqdm(total=cfg.max_steps, initial=step, desc="ctc", unit="step", disable=not progress)
    stop_reason = "max_steps"
    while step < cfg.max_steps:
        b = next(batches)
        loss = ctc_loss(adaptor, [feats[i].float() for i in b], [targets[i] for i in b], vocab_emb)
        if not torch.isfinite(loss.detach()):
            from speechkeep.errors import TrainingError

            mf.close()
            saved = f"the last good checkpoint is kept in {ckpt} (resume=true)" if ckpt.is_dir() else "no checkpoint yet"
            raise TrainingError(f"CTC training stopped at step {step + 1}: the loss is {float(loss):g} (not finite) on "
                                f"utterances {', '.join(rows[keep[i]].id for i in b)}; {saved}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        step += 1
        losses.append(loss.item())
        bar.update()
        train_s = elapsed_before + time.perf_counter() - t_start
        row = {}
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            row = evaluate()
            last = row
        if step % 10 == 0 or row:
            writer.writerow([step, round(float(np.mean(losses[-10:])), 4), f"{sched.get_last_lr()[0]:.3e}",
                             round(train_s, 1), row.get("eval_wer", "")])
            mf.flush()
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", **row)
        out_of_time = cfg.max_minutes is not None and train_s >= cfg.max_minutes * 60
        if step % cfg.save_every == 0 or step == cfg.max_steps or out_of_time:
            save_checkpoint(ckpt, adaptor, opt, sched, step, batches.state(), {"train_seconds": train_s})
        if out_of_time:
            stop_reason = "max_minutes"
            break
    bar.close()
    mf.close()
    model.save_pretrained(out / "model")
    summary = {
        "steps": step, "stop_reason": stop_reason,
        "train_minutes": round((elapsed_before + time.perf_counter() - t_start) / 60, 2),
        "utterances": len(keep), "dropped_infeasible": dropped,
        "hours": round(sum(rows[i].duration for i in keep) / 3600, 2),
        "ctc_vocab_size": len(vocab), "final_loss": round(float(np.mean(losses[-50:])), 4) if losses else None,
        **(evaluate() if eval_rows and not last else last),
        "config": config_to_dict(cfg),
    }
    write_json(out / "summary.json", summary)
    return summary
