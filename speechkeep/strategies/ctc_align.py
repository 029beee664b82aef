"""``strategy=ctc_align``: the speech-alignment objective on the one training engine.

The adaptor's CTC head (``model.adaptor.output='ctc'``, :mod:`speechkeep.models.ctc_head`) scores its
outputs against the frozen LLM's token embeddings plus a learned blank, and trains with CTC on the
transcripts tokenized by the LLM's own tokenizer. The LLM never runs: a step costs the adaptor MLP and
one (frames x V) matmul, V = the LLM tokens that occur in the training transcripts.

- Data: the ``asr`` task (speech -> its transcript); every other task is an error.
- A new CTC head (its ``ctc_vocab`` all zeros, e.g. ``init_from=none``) gets its vocabulary from the
  training transcripts; a saved CTC front-end keeps its own (utterances with a token outside it are
  left out). Utterances with more tokens than CTC frames (a repeat needs a blank between) are left out.
- Every ``eval_every`` steps, with ``ctc_align.eval_manifest``: the greedy-CTC WER on it (``eval_wer``;
  monitoring only, no checkpoint is picked by it).

``speechkeep align`` runs this strategy (see :mod:`speechkeep.align.ctc`); ``speechkeep train
strategy=ctc_align model.adaptor.output=ctc "data.tasks={asr: 1}" init_from=none`` does the same by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from speechkeep.config import Checked
from speechkeep.errors import ConfigError
from speechkeep.models.ctc_head import ctc_feasible, ctc_loss, ctc_vocabulary
from speechkeep.strategies.base import LossTerms, Strategy, register


@dataclass
class CTCAlignSettings(Checked):
    """Settings of ``strategy=ctc_align``."""

    eval_manifest: str | None = None
    """Held-out manifest whose greedy-CTC WER is logged every eval_every steps (None: no evaluation)."""
    eval_features_dir: str | None = None
    """Encoder-feature cache of eval_manifest to read (None: <eval manifest dir>/features)."""


@register
class CTCAlign(Strategy):
    name = "ctc_align"
    description = ("speech alignment: CTC of the adaptor's CTC head onto the frozen LLM's token embeddings (LLM frozen "
                   "and never run; needs model.adaptor.output=ctc and data.tasks={asr: 1})")
    Settings = CTCAlignSettings
    terms = ("ctc",)
    eval_metrics = ("wer",)

    def __init__(self, config: Any):
        super().__init__(config)
        self._labels: dict[str, list[int]] = {}
        self._stats: dict[str, Any] = {}
        self._eval: tuple[list[str], list[torch.Tensor]] | None = None

    def check(self) -> None:
        tasks = getattr(getattr(self.config, "data", None), "tasks", None) or {}
        other = [t for t, w in tasks.items() if t != "asr" and w > 0]
        if other or not tasks.get("asr"):
            raise ConfigError(f"strategy=ctc_align trains on transcripts only: set data.tasks={{asr: 1}} "
                              f"(got {dict(tasks)})")
        s = self.settings
        if s.eval_manifest and not Path(s.eval_manifest).exists():
            raise ConfigError(f"ctc_align.eval_manifest: {s.eval_manifest}: no such file")

    def inputs(self) -> list[str]:
        return [p for p in (self.settings.eval_manifest, self.settings.eval_features_dir) if p]

    def setup(self, model):
        if not model.adaptor.is_ctc:
            raise ConfigError("strategy=ctc_align trains a CTC adaptor: set model.adaptor.output=ctc with init_from=none "
                              "(a new one), or start from a CTC front-end (init_from=DIR)")
        for p in model.llm.parameters():
            p.requires_grad_(False)
        return [self.adaptor_group(model)]

    def prepare_examples(self, model, per_task, features):
        ex = per_task.get("asr", [])
        tok, adaptor = model.tokenizer, model.adaptor
        ids = [tok(e.target, add_special_tokens=False)["input_ids"] for e in ex]
        if not adaptor.has_ctc_vocabulary():
            adaptor.set_ctc_vocabulary(ctc_vocabulary(ids))
        index = {int(t): i + 1 for i, t in enumerate(adaptor.ctc_vocab.tolist())}
        frames: list[int] = []
        for s in range(0, len(ex), 2048):
            frames += [int(f.shape[0]) for f in features([e.audio for e in ex[s: s + 2048]])]
        keep = [i for i in range(len(ex))
                if all(t in index for t in ids[i]) and ctc_feasible(adaptor.num_tokens(frames[i]), ids[i])]
        self._labels = {ex[i].target: [index[t] for t in ids[i]] for i in keep}
        self._stats = {"utterances": len(keep), "dropped_infeasible": len(ex) - len(keep),
                       "hours": round(sum(ex[i].length for i in keep) / 3600, 2), "ctc_vocab_size": len(index)}
        return {**per_task, "asr": [ex[i] for i in keep]}

    def _targets(self, model, queries: Sequence) -> list[list[int]]:
        out = []
        for q in queries:
            labels = self._labels.get(q.transcript or "")
            if labels is None:  # an example prepare_examples did not see (Python API): tokenize it now
                index = {int(t): i + 1 for i, t in enumerate(model.adaptor.ctc_vocab.tolist())}
                ids = model.tokenizer(q.transcript or "", add_special_tokens=False)["input_ids"]
                missing = [t for t in ids if t not in index]
                if not ids or missing:
                    raise ConfigError(f"ctc_align: the transcript {q.transcript!r} has "
                                      f"{'no token' if not ids else f'token {missing[0]} outside the CTC vocabulary'}")
                labels = [index[t] for t in ids]
            out.append(labels)
        return out

    def loss(self, model, queries) -> LossTerms:
        if any(q.speech_features is None or q.transcript is None for q in queries):
            raise ConfigError("ctc_align: every training item needs cached speech features and a transcript (task asr)")
        adaptor = model.adaptor
        with torch.no_grad():
            vocab_emb = adaptor.vocab_embeddings(model.llm.get_input_embeddings()).detach().float()
        frames = [q.speech_features.to(model.device).float() for q in queries]
        targets = self._targets(model, queries)
        loss = ctc_loss(adaptor, frames, targets, vocab_emb)
        task = queries[0].task or "asr"
        return LossTerms({"ctc": loss}, n_tokens=sum(map(len, targets)),
                         input_tokens=sum(adaptor.num_tokens(int(f.shape[0])) for f in frames),
                         per_task={task: (float(loss.detach()) * len(queries), len(queries))})

    def evaluate(self, model) -> dict[str, float]:
        s = self.settings
        if not s.eval_manifest:
            return {}
        from speechkeep.metrics import corpus_wer

        if self._eval is None:
            from speechkeep.data.features import FeatureCache
            from speechkeep.data.manifest import read_manifest

            rows = read_manifest(s.eval_manifest)
            root = s.eval_features_dir or str(Path(s.eval_manifest).parent / "features")
            cache = FeatureCache(None, model.encoder, model.config.encode_mode, read_roots=[root], progress=False)
            self._eval = ([r.text for r in rows], cache.get([r.audio for r in rows], dtype=torch.float16))
        refs, feats = self._eval
        hyps = model.ctc_transcribe([f.to(model.device) for f in feats])
        return {"wer": round(corpus_wer(refs, hyps), 4)}

    def summary(self) -> dict[str, Any]:
        return dict(self._stats)
