"""``strategy=ctc_align``: the speech-alignment objective on the one training engine.

The adaptor's CTC head (``model.adaptor.output='ctc'``, :mod:`speechkeep.models.ctc_head`) scores its
outputs against the frozen LLM's token embeddings plus a learned blank, and trains with CTC on the
transcripts tokenized by the LLM's own tokenizer. The LLM never runs: a step costs the adaptor and
one (frames x V) matmul, V = the CTC vocabulary (the LLM tokens of the training transcripts, or a general
vocabulary file with a spelling fallback: ``ctc_align.vocabulary``); the CTC itself runs on the batch's labels only
(:func:`~speechkeep.models.ctc_head.ctc_loss`, exact).

- Data: the ``asr`` task (speech -> its transcript); every other task is an error.
- A new CTC head (its ``ctc_vocab`` all zeros, e.g. ``init_from=none``) gets its vocabulary from
  ``ctc_align.vocabulary`` (a file of :mod:`speechkeep.models.ctc_vocab`, e.g. the general vocabulary of
  ``speechkeep data text``), else from the training transcripts; a saved CTC front-end keeps its own.
  A transcript token outside the vocabulary is spelled with in-vocabulary pieces
  (:class:`~speechkeep.models.ctc_vocab.Speller`); an utterance that cannot be spelled is left out.
- SpecAugment-style masking of the encoder features during training (``time_masks``, ``feature_masks``;
  off by default), drawn from torch's global generator (saved in checkpoints: exact resume). Utterances with more tokens than CTC frames (a repeat needs a blank between) are left out.
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

from speechkeep.config import Checked, ranged
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
    vocabulary: str | None = None
    """CTC vocabulary file of a new head (vocabulary.json of `speechkeep data text`); None: the LLM tokens of the training transcripts."""
    time_masks: int = ranged(0, ge=0)
    """SpecAugment-style masking of the encoder features during training: time masks per utterance (0: off)."""
    time_mask_frames: int = ranged(10, ge=1)
    """Widest time mask, in encoder frames (Whisper: 50 per second)."""
    feature_masks: int = ranged(0, ge=0)
    """Feature-channel masks per utterance (0: off)."""
    feature_mask_channels: int = ranged(27, ge=1)
    """Widest feature-channel mask, in channels (Whisper tiny.en: 384)."""


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
        if s.vocabulary and not Path(s.vocabulary).is_file():
            raise ConfigError(f"ctc_align.vocabulary: {s.vocabulary}: no such file")

    def inputs(self) -> list[str]:
        return [p for p in (self.settings.eval_manifest, self.settings.eval_features_dir, self.settings.vocabulary) if p]

    def setup(self, model):
        if not model.adaptor.is_ctc:
            raise ConfigError("strategy=ctc_align trains a CTC adaptor: set model.adaptor.output=ctc with init_from=none "
                              "(a new one), or start from a CTC front-end (init_from=DIR)")
        for p in model.llm.parameters():
            p.requires_grad_(False)
        return [self.adaptor_group(model)]

    def prepare_examples(self, model, per_task, features):
        from speechkeep.models.ctc_vocab import Speller

        ex = per_task.get("asr", [])
        tok, adaptor = model.tokenizer, model.adaptor
        ids = [tok(e.target, add_special_tokens=False)["input_ids"] for e in ex]
        if not adaptor.has_ctc_vocabulary():
            adaptor.set_ctc_vocabulary(self._vocabulary(model) if self.settings.vocabulary else ctc_vocabulary(ids))
        index = {int(t): i + 1 for i, t in enumerate(adaptor.ctc_vocab.tolist())}
        speller = Speller(tok, list(index))
        spelled = [speller.spell_ids(i) for i in ids]
        frames: list[int] = []
        for s in range(0, len(ex), 2048):
            frames += [int(f.shape[0]) for f in features([e.audio for e in ex[s: s + 2048]])]
        keep = [i for i in range(len(ex))
                if spelled[i] is not None and ctc_feasible(adaptor.num_tokens(frames[i]), spelled[i])]
        self._labels = {ex[i].target: [index[t] for t in spelled[i]] for i in keep}
        self._stats = {"utterances": len(keep), "dropped_infeasible": len(ex) - len(keep),
                       "spelled_by_fallback": sum(spelled[i] != ids[i] for i in keep),
                       "hours": round(sum(ex[i].length for i in keep) / 3600, 2), "ctc_vocab_size": len(index)}
        return {**per_task, "asr": [ex[i] for i in keep]}

    def _vocabulary(self, model) -> torch.Tensor:
        """The token ids of ``ctc_align.vocabulary``, checked against the LLM's embedding table."""
        from speechkeep.models.ctc_vocab import load_vocabulary

        path = self.settings.vocabulary
        ids = torch.tensor(load_vocabulary(path).token_ids, dtype=torch.long)
        n = model.llm.get_input_embeddings().weight.shape[0]
        if int(ids.max()) >= n:
            raise ConfigError(f"ctc_align.vocabulary: {path}: token id {int(ids.max())} is outside the LLM's "
                              f"{n}-token embedding table (a vocabulary of another tokenizer?)")
        return ids

    def _targets(self, model, queries: Sequence) -> list[list[int]]:
        out = []
        speller = index = None
        for q in queries:
            labels = self._labels.get(q.transcript or "")
            if labels is None:  # an example prepare_examples did not see (Python API): tokenize it now
                from speechkeep.models.ctc_vocab import Speller

                if speller is None:
                    index = {int(t): i + 1 for i, t in enumerate(model.adaptor.ctc_vocab.tolist())}
                    speller = Speller(model.tokenizer, list(index))
                ids = model.tokenizer(q.transcript or "", add_special_tokens=False)["input_ids"]
                spelled = speller.spell_ids(ids) if ids else None
                if not spelled:
                    missing = [t for t in ids if t not in index]
                    raise ConfigError(f"ctc_align: the transcript {q.transcript!r} has "
                                      f"{'no token' if not ids else f'token {missing[0]} outside the CTC vocabulary (and no fallback pieces to spell it)'}")
                labels = [index[t] for t in spelled]
            out.append(labels)
        return out

    def loss(self, model, queries) -> LossTerms:
        if any(q.speech_features is None or q.transcript is None for q in queries):
            raise ConfigError("ctc_align: every training item needs cached speech features and a transcript (task asr)")
        adaptor = model.adaptor
        with torch.no_grad():
            vocab_emb = adaptor.vocab_embeddings(model.llm.get_input_embeddings()).detach().float()
        frames = [q.speech_features.to(model.device).float() for q in queries]
        s = self.settings
        if adaptor.training and (s.time_masks or s.feature_masks):
            from speechkeep.data.augment import spec_augment

            frames = [spec_augment(f, s.time_masks, s.time_mask_frames, s.feature_masks, s.feature_mask_channels)
                      for f in frames]
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
