"""Training examples from a spoken manifest: tasks, mixture weights, length-grouped batches.

Batches are a pure function of (seed, epoch), so a resumed run sees exactly the batches the
interrupted run would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from speechkeep.errors import ConfigError, DataError
from speechkeep.models.speech_llm import Query

TASKS = ("qa", "asr", "t2t")


@dataclass
class Example:
    """One training item before features are attached."""

    id: str
    task: str
    text: str
    """The question / transcript."""
    target: str
    """What the model must produce."""
    audio: str | None
    """Audio path (speech tasks)."""
    length: float
    """Sort key for length grouping (seconds of audio, or characters / 15 for text)."""


def examples_from_rows(rows: Sequence, tasks: dict[str, float]) -> dict[str, list[Example]]:
    """Per task, the examples the manifest rows support."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"data.tasks: unknown task '{unknown[0]}'; valid: {', '.join(TASKS)}")
    out: dict[str, list[Example]] = {t: [] for t in tasks}
    for r in rows:
        dur = float(getattr(r, "duration", 0.0) or 0.0)
        for t in tasks:
            if t == "asr":
                out[t].append(Example(r.id, t, r.text, r.text, r.audio, dur))
            elif r.response:
                if t == "qa":
                    out[t].append(Example(r.id, t, r.text, r.response, r.audio, dur + len(r.response) / 15))
                else:
                    out[t].append(Example(r.id, t, r.text, r.response, None, (len(r.text) + len(r.response)) / 15))
    for t, ex in out.items():
        if not ex and tasks[t] > 0:
            need = "a transcript" if t == "asr" else "teacher responses (build the data with --teacher)"
            raise DataError(f"task '{t}' has no usable examples: it needs {need}")
    return out


def epoch_batches(per_task: dict[str, list[Example]], weights: dict[str, float], batch_size: int,
                  seed: int, epoch: int, group_by_length: bool = True) -> list[list[Example]]:
    """The batches of one epoch: each task contributes round(weight * its size) examples."""
    rng = np.random.default_rng([seed, epoch])
    pool: list[Example] = []
    for task in sorted(per_task):
        ex, w = per_task[task], weights[task]
        n = int(round(w * len(ex)))
        if n <= 0:
            continue
        reps = math.ceil(n / len(ex))
        idx = np.concatenate([rng.permutation(len(ex)) for _ in range(reps)])[:n]
        pool.extend(ex[i] for i in idx)
    order = rng.permutation(len(pool))
    pool = [pool[i] for i in order]
    if group_by_length:
        chunk = batch_size * 32
        grouped = []
        for s in range(0, len(pool), chunk):
            grouped.extend(sorted(pool[s:s + chunk], key=lambda e: e.length, reverse=True))
        pool = grouped
    batches = [pool[s:s + batch_size] for s in range(0, len(pool), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches[:1]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


class BatchStream:
    """Endless, resumable stream of batches over epochs."""

    def __init__(self, per_task, weights, batch_size, seed, group_by_length=True):
        self.per_task, self.weights = per_task, weights
        self.batch_size, self.seed, self.group = batch_size, seed, group_by_length
        self.epoch, self.index = 0, 0
        self._batches = None

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.epoch, self.index, self._batches = state["epoch"], state["index"], None

    def __next__(self) -> list[Example]:
        if self._batches is None:
            self._batches = epoch_batches(self.per_task, self.weights, self.batch_size, self.seed, self.epoch, self.group)
        if self.index >= len(self._batches):
            self.epoch, self.index, self._batches = self.epoch + 1, 0, None
            return next(self)
        b = self._batches[self.index]
        self.index += 1
        return b

    def __iter__(self):
        return self


def to_queries(batch: Sequence[Example], features: Callable[[list[str]], list[torch.Tensor]],
               asr_instruction: str) -> list[Query]:
    """Attach cached encoder features and build model queries (a spoken query keeps its transcript and
    every query its task, for the strategy's loss and the per-task metrics)."""
    speech = [e.audio for e in batch if e.task != "t2t"]
    feats = iter(features(speech)) if speech else iter(())
    out = []
    for e in batch:
        if e.task == "t2t":
            out.append(Query(text=e.text, response=e.target, task=e.task))
        else:
            out.append(Query(speech_features=next(feats), response=e.target,
                             instruction=asr_instruction if e.task == "asr" else None, transcript=e.text, task=e.task))
    return out
