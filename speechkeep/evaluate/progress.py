"""What an evaluation has finished, kept on disk so that a killed ``speechkeep eval`` resumes, and
shared by the processes of ``accelerate launch`` so that they split the work.

Every piece of work is one batch of one task (``t2t``, ``s2t``, ``cascade``, ...), identified by a
hash of what its items' queries are (item ids, question texts, audio content hashes, transcripts).
When a batch is done, its outputs are appended as one JSON line to
``OUT/partial/<fingerprint>/<task>.r<rank>.jsonl`` (one write, flushed and fsynced; a line torn by a
kill is dropped on the next run). ``<fingerprint>`` is a hash of the model's weights and
configuration and of every setting that changes an output (answer lengths, ASR instruction, CTC
emission), so a resumed run reuses only batches that an uninterrupted run with the same settings
would have computed identically: the batches are formed the same way (length order, ``batch_size``)
and skipped when their key is found, so the final predictions and metrics equal an uninterrupted
run's. A change of data or ``limit`` reuses the batches that are unchanged.

With several processes (``accelerate launch -m speechkeep eval ...``), batch ``b`` of each task runs
on process ``b % world``; the processes then meet at a barrier and every one reads the others'
files, so predictions come back in input order (the output directory must be shared by the
processes, e.g. one machine or a shared file system). The directory is removed once
``predictions.jsonl`` and ``metrics.json`` are written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

from speechkeep.distributed import Processes
from speechkeep.io import append_lines, read_appended

__all__ = ["EvalProgress", "Processes", "digest", "has_partial"]

PARTIAL_DIR = "partial"


def digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


class EvalProgress:
    """The finished batches of one evaluation (see the module docstring)."""

    def __init__(self, out: str | os.PathLike, fingerprint: str, procs: Processes | None = None):
        self.root = Path(out) / PARTIAL_DIR
        self.dir = self.root / fingerprint
        self.procs = procs or Processes()
        self.computed = 0
        """Batches this process computed (not found finished)."""
        self.reused = 0
        """Batches found finished by an earlier (killed) run."""

    def _files(self, task: str) -> list[Path]:
        return sorted(self.dir.glob(f"{task}.r*.jsonl")) if self.dir.is_dir() else []

    def finished(self, task: str) -> dict[str, list]:
        """batch key -> outputs, over every process's file (the first record of a key wins)."""
        done: dict[str, list] = {}
        for f in self._files(task):
            for rec in read_appended(f):
                if isinstance(rec.get("key"), str) and isinstance(rec.get("out"), list):
                    done.setdefault(rec["key"], rec["out"])
        return done

    def add(self, task: str, key: str, outputs: list) -> None:
        import json

        self.dir.mkdir(parents=True, exist_ok=True)
        append_lines(self.dir / f"{task}.r{self.procs.rank}.jsonl",
                     [json.dumps({"key": key, "out": outputs}, ensure_ascii=False)])

    def run(self, task: str, batches: Sequence[Sequence[int]], keys: Sequence[str],
            compute: Callable[[list[int]], list], on_batch: Callable[[int], None] | None = None) -> dict[int, object]:
        """Outputs per query index of every batch: found finished, or computed by this process
        (its share: batch b when b % world == rank) and appended; then, with several processes,
        the others' after a barrier. ``keys[i]`` says what query i is; ``compute(idx)`` returns one
        output per index."""
        done = self.finished(task)
        out: dict[int, object] = {}
        for b, idx in enumerate(batches):
            key = digest(task, *(keys[i] for i in idx))
            vals = done.get(key)
            if vals is not None and len(vals) == len(idx):
                self.reused += 1
            elif b % self.procs.world == self.procs.rank:
                vals = list(compute(list(idx)))
                if len(vals) != len(idx):
                    raise RuntimeError(f"{task}: {len(vals)} outputs for a batch of {len(idx)}")
                self.add(task, key, vals)
                self.computed += 1
            else:
                continue
            out.update(zip(idx, vals))
            if on_batch is not None:
                on_batch(len(idx))
        if self.procs.world > 1:
            self.procs.barrier()
            done = self.finished(task)
            for idx in batches:
                vals = done.get(digest(task, *(keys[i] for i in idx)))
                if vals is None or len(vals) != len(idx):
                    raise RuntimeError(f"{task}: a batch computed by another process is missing from {self.dir}")
                out.update(zip(idx, vals))
        return out

    def remove(self) -> None:
        """Delete the partial results (after the final files are written)."""
        shutil.rmtree(self.root, ignore_errors=True)


def has_partial(out: Path) -> bool:
    """Whether ``out`` holds finished batches of an interrupted evaluation (kept on failure)."""
    root = Path(out) / PARTIAL_DIR
    return root.is_dir() and any(f.stat().st_size > 0 for f in root.rglob("*.jsonl"))
