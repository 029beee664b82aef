"""The encoder-adaptor speech LLM: frozen Whisper encoder -> adaptor -> any Hugging Face causal LM.

Queries may be text or speech, mixed in one batch. A spoken query's adaptor outputs are spliced
into the user turn of the LLM's own chat template (see :mod:`speechkeep.models.chat`). Labels are
-100 everywhere except the response tokens and the end-of-turn token. The LM head is applied only
at positions whose next token is a label (the loss never builds full-vocabulary logits for prompt
or speech positions).

Invariant (tested): a text-only query gives exactly the base LLM's logits.

Saving and loading live in :mod:`speechkeep.models.persistence`; recorded structural changes of the
LLM in :mod:`speechkeep.models.transforms`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import nn

from speechkeep.config import Checked
from speechkeep.errors import SpeechkeepError
from speechkeep.models.adaptor import AdaptorConfig, FrameStackAdaptor
from speechkeep.models.chat import ChatFormat

IGNORE_INDEX = -100
MIN_SHARED_PREFIX = 4


def common_token_prefix(ids_seqs: Sequence[torch.Tensor]) -> int:
    """Length of the token-id prefix shared by every sequence (speech positions, marked -100, never
    count), leaving at least one position of each sequence outside it."""
    n = min(int(s.shape[0]) for s in ids_seqs) - 1
    if n <= 0:
        return 0
    block = torch.stack([s[:n] for s in ids_seqs])
    same = (block == block[0]).all(0) & (block[0] != IGNORE_INDEX)
    bad = (~same).nonzero()
    return int(bad[0]) if bad.numel() else n


@dataclass
class SpeechLLMConfig(Checked):
    """What a SpeechLLM is made of."""

    llm: str = "bundled:smollm2-135m"
    """Text LLM spec: 'bundled:smollm2-135m', 'bundled:gemma3-270m', a .gguf path, a HF directory or id."""
    speech_encoder: str = "bundled:whisper-tiny.en"
    """Speech encoder spec: 'bundled:whisper-tiny.en', a CTranslate2 or HF Whisper directory, or a HF id."""
    adaptor: AdaptorConfig = field(default_factory=AdaptorConfig)
    """Frame-stacking MLP adaptor shape."""
    encode_mode: Literal["padded", "variable"] = "padded"
    """Whisper encoding: 'padded' to the 30-s window (Whisper's own) or 'variable' (real frames only, faster)."""
    system_prompt: str | None = None
    """System prompt for every query; None keeps the chat template's default."""


@dataclass
class Query:
    """One item: a text or spoken question, with an optional target response."""

    text: str | None = None
    """The question as text (used when no speech is given)."""
    audio: np.ndarray | None = None
    """16-kHz mono waveform of the spoken question (encoded on the fly)."""
    speech_features: torch.Tensor | None = None
    """Pre-computed encoder frames (T, d_encoder), e.g. from the feature cache."""
    response: str | None = None
    """Target response (training, perplexity); None for generation."""
    instruction: str | None = None
    """Text placed after the speech in the user turn (e.g. "Transcribe the audio."); spoken queries only."""
    transcript: str | None = None
    """What the spoken question says, when known (training data): never fed to the model, kept for the
    loss (e.g. a distillation term that runs the teacher on the text question)."""
    task: str | None = None
    """The training task the query comes from ('qa', 'asr', 't2t'): the engine logs each task's loss."""


@dataclass
class Batch:
    """Model-ready tensors for a list of queries."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None
    num_speech_tokens: list[int]
    shared_prefix: int = 0
    """Leading positions whose tokens are identical in every row (e.g. the system prompt): computed
    once and shared across the batch (right padding only)."""
    transcripts: list[str | None] = field(default_factory=list)
    """Per row, the spoken query's transcript (:attr:`Query.transcript`; None for text rows or unknown)."""
    tasks: list[str | None] = field(default_factory=list)
    """Per row, the query's training task (:attr:`Query.task`)."""
    speech_mask: torch.Tensor | None = None
    """(batch, length) bool, True at speech (adaptor output) positions; None when the batch has no speech.
    Blocks that act on speech positions only read it (:func:`speechkeep.models.blocks.streaming.speech_positions`)."""


@dataclass
class ResponseLogits:
    """Full-vocabulary logits at the positions that predict a response token (what every
    response-token loss needs: cross-entropy, distillation)."""

    logits: torch.Tensor
    """(N, vocab) float32 logits, N = response tokens of the batch (the end-of-turn token included)."""
    targets: torch.Tensor
    """(N,) the token each position must predict."""
    rows: torch.Tensor
    """(N,) the batch row of each position."""

    @property
    def n(self) -> int:
        return int(self.targets.shape[0])

    def cross_entropy(self, reduction: Literal["mean", "sum"] = "mean") -> torch.Tensor:
        """Token-weighted cross-entropy over the response tokens."""
        total = nn.functional.cross_entropy(self.logits, self.targets, reduction="sum")
        return total / self.n if reduction == "mean" else total


class SpeechLLM(nn.Module):
    """Frozen speech encoder -> trainable adaptor -> causal LM."""

    def __init__(self, llm: nn.Module, tokenizer, encoder: nn.Module, adaptor: FrameStackAdaptor, config: SpeechLLMConfig):
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.adaptor = adaptor
        self.config = config
        self.chat = ChatFormat(tokenizer, config.system_prompt)
        self.share_prefix = True
        """Run a prompt prefix common to every row of a batch once (see :meth:`hidden_states`)."""
        self.transforms: list[dict[str, Any]] = []
        """Structural changes applied to the LLM, in order (see :meth:`apply_transform`)."""
        self.llm_weights_changed = False
        """Whether the LLM's own weights differ from its spec's though none is trainable (e.g. LoRA merged)."""

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, config: SpeechLLMConfig | None = None, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32, seed: int | None = 0) -> "SpeechLLM":
        """Load the LLM and encoder from their specs and create a fresh adaptor."""
        from speechkeep.models.llm import load_llm
        from speechkeep.models.speech_encoder import load_speech_encoder

        config = config or SpeechLLMConfig()
        loaded = load_llm(config.llm, dtype=dtype, device=device)
        encoder = load_speech_encoder(config.speech_encoder, device=device)
        return cls.from_parts(loaded.model, loaded.tokenizer, encoder, config, seed=seed)

    @classmethod
    def from_parts(cls, llm: nn.Module, tokenizer, encoder: nn.Module, config: SpeechLLMConfig,
                   seed: int | None = 0) -> "SpeechLLM":
        """Assemble from already-loaded parts (a new adaptor, seeded for reproducibility).

        The LLM starts frozen; a training strategy decides what to unfreeze."""
        for p in llm.parameters():
            p.requires_grad_(False)
        d_llm = llm.get_input_embeddings().weight.shape[1]
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                adaptor = FrameStackAdaptor(encoder.d_model, d_llm, config.adaptor)
        else:
            adaptor = FrameStackAdaptor(encoder.d_model, d_llm, config.adaptor)
        emb = llm.get_input_embeddings().weight
        adaptor.to(device=emb.device, dtype=emb.dtype)
        return cls(llm, tokenizer, encoder, adaptor, config)

    # ------------------------------------------------------------------ pieces
    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    def _decoder(self) -> nn.Module:
        """The LLM body without its head (works through peft wrappers)."""
        return self.llm.get_decoder()

    def _lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.llm.get_output_embeddings()(hidden)
        cap = getattr(self.llm.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def encode_speech(self, queries: Sequence[Query]) -> list[torch.Tensor | None]:
        """Encoder frames for every spoken query (cached features used as is)."""
        frames: list[torch.Tensor | None] = [q.speech_features for q in queries]
        todo = [i for i, q in enumerate(queries) if q.speech_features is None and q.audio is not None]
        if todo:
            enc = self.encoder.encode([queries[i].audio for i in todo], mode=self.config.encode_mode)
            for i, f in zip(todo, enc):
                frames[i] = f
        return frames

    # ------------------------------------------------------------------ batching
    def prepare(self, queries: Sequence[Query], padding_side: Literal["left", "right"] = "right") -> Batch:
        """Token ids + speech embeddings -> padded ``inputs_embeds``, masks, positions and labels."""
        if not queries:
            raise SpeechkeepError("empty batch")
        frames = self.encode_speech(queries)
        speech_idx = [i for i, f in enumerate(frames) if f is not None]
        speech_embeds = dict(zip(speech_idx, self.adaptor([frames[i].to(self.device) for i in speech_idx],
                                                          token_embedding=self.llm.get_input_embeddings()))) \
            if speech_idx else {}

        segments: list[list] = []  # per query: [ids | tensor] pieces
        label_masks: list[list[bool]] = []
        for i, q in enumerate(queries):
            if i in speech_embeds:
                before, after = self.chat.speech_prompt_ids(q.instruction)
                pieces = [before, speech_embeds[i], after]
            else:
                if q.text is None:
                    raise SpeechkeepError(f"query {i} has neither text nor speech")
                pieces = [self.chat.text_prompt_ids(q.text)]
            n_prompt = sum(len(p) for p in pieces)
            labels = [False] * n_prompt
            if q.response is not None:
                resp = self.chat.response_ids(q.response)
                pieces.append(resp)
                labels += [True] * len(resp)
            segments.append(pieces)
            label_masks.append(labels)

        # One embedding lookup for every text token in the batch.
        all_ids = [t for pieces in segments for p in pieces if isinstance(p, list) for t in p]
        emb_layer = self.llm.get_input_embeddings()
        token_embeds = emb_layer(torch.tensor(all_ids, dtype=torch.long, device=self.device)) if all_ids else None
        seqs, ids_seqs, off = [], [], 0
        for pieces in segments:
            parts, ids_parts = [], []
            for p in pieces:
                if isinstance(p, list):
                    parts.append(token_embeds[off: off + len(p)])
                    ids_parts.append(torch.tensor(p, dtype=torch.long))
                    off += len(p)
                else:
                    parts.append(p.to(token_embeds.dtype if token_embeds is not None else p.dtype))
                    ids_parts.append(torch.full((p.shape[0],), IGNORE_INDEX, dtype=torch.long))
            seqs.append(torch.cat(parts, 0))
            ids_seqs.append(torch.cat(ids_parts, 0))

        bsz, max_len = len(seqs), max(s.shape[0] for s in seqs)
        d = seqs[0].shape[1]
        embeds = seqs[0].new_zeros(bsz, max_len, d)
        attn = torch.zeros(bsz, max_len, dtype=torch.long, device=self.device)
        pos = torch.zeros(bsz, max_len, dtype=torch.long, device=self.device)
        has_labels = any(q.response is not None for q in queries)
        labels = torch.full((bsz, max_len), IGNORE_INDEX, dtype=torch.long, device=self.device) if has_labels else None
        speech_mask = torch.zeros(bsz, max_len, dtype=torch.bool, device=self.device) if speech_embeds else None
        for b, (s, ids, lm) in enumerate(zip(seqs, ids_seqs, label_masks)):
            n = s.shape[0]
            sl = slice(max_len - n, max_len) if padding_side == "left" else slice(0, n)
            embeds[b, sl] = s
            attn[b, sl] = 1
            pos[b, sl] = torch.arange(n, device=self.device)
            if speech_mask is not None:
                speech_mask[b, sl] = ids.to(self.device) == IGNORE_INDEX
            if labels is not None:
                lab = ids.to(self.device).clone()
                lab[~torch.tensor(lm, dtype=torch.bool, device=self.device)] = IGNORE_INDEX
                labels[b, sl] = lab
        n_speech = [speech_embeds[i].shape[0] if i in speech_embeds else 0 for i in range(bsz)]
        shared = common_token_prefix(ids_seqs) if padding_side == "right" and bsz > 1 else 0
        return Batch(embeds, attn, pos, labels, n_speech, shared,
                     transcripts=[q.transcript if i in speech_embeds else None for i, q in enumerate(queries)],
                     tasks=[q.task for q in queries], speech_mask=speech_mask)

    # ------------------------------------------------------------------ forward
    def hidden_states(self, batch: Batch) -> torch.Tensor:
        """Last hidden states. A prompt prefix shared by every row (the system prompt and the start of
        the user turn: ~25% of a SmolLM2 training sequence) is run once, not once per row; its keys and
        values are repeated over the batch (gradients flow back through the repeat)."""
        from speechkeep.models.blocks.streaming import speech_positions

        with speech_positions(batch.speech_mask):
            return self._hidden_states(batch)

    def _hidden_states(self, batch: Batch) -> torch.Tensor:
        dec = self._decoder()
        p, bsz = batch.shared_prefix, batch.inputs_embeds.shape[0]
        if self.share_prefix and p >= MIN_SHARED_PREFIX and bsz > 1:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.llm.config)
            kw = {_cache_kwarg(dec): cache}
            pre = dec(inputs_embeds=batch.inputs_embeds[:1, :p], attention_mask=batch.attention_mask[:1, :p],
                      position_ids=batch.position_ids[:1, :p], use_cache=True, **kw)
            cache.batch_repeat_interleave(bsz)
            rest = dec(inputs_embeds=batch.inputs_embeds[:, p:], attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids[:, p:], use_cache=True, **kw)
            return torch.cat([pre.last_hidden_state.expand(bsz, -1, -1), rest.last_hidden_state], dim=1)
        out = dec(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        )
        return out.last_hidden_state

    def logits(self, batch: Batch) -> torch.Tensor:
        """Full-vocabulary logits at every position (for tests and analysis; training uses :meth:`loss`)."""
        return self._lm_head(self.hidden_states(batch))

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LLM's output head (with its final logit soft-capping, if any) on hidden states."""
        return self._lm_head(hidden)

    def response_logits(self, batch: Batch) -> ResponseLogits:
        """Logits at the positions that predict a response token of a prepared batch, with their
        targets and rows. The LM head runs only on those positions."""
        if batch.labels is None:
            raise SpeechkeepError("loss() needs queries with a response")
        hidden = self.hidden_states(batch)
        targets = batch.labels[:, 1:]
        keep = targets != IGNORE_INDEX
        if not bool(keep.any()):
            raise SpeechkeepError("every label is masked: no response tokens to train on")
        logits = self._lm_head(hidden[:, :-1][keep]).float()
        return ResponseLogits(logits, targets[keep], keep.nonzero(as_tuple=True)[0])

    def loss(self, batch: Batch, reduction: Literal["mean", "sum"] = "mean") -> tuple[torch.Tensor, int]:
        """Token-weighted cross-entropy over response tokens; returns (loss, number of target tokens)."""
        r = self.response_logits(batch)
        return r.cross_entropy(reduction), r.n

    def forward(self, queries: Sequence[Query], loss_fn=None):
        """Training entry point (what DDP/accelerate wrap): ``loss_fn(self, queries)`` if given (a
        strategy's :meth:`~speechkeep.strategies.base.Strategy.loss`), else ``(mean response-token loss,
        number of target tokens)``."""
        if loss_fn is not None:
            return loss_fn(self, queries)
        return self.loss(self.prepare(queries))

    @torch.no_grad()
    def ctc_transcribe(self, frames: list[torch.Tensor], batch_size: int = 64) -> list[str]:
        """Greedy CTC transcripts of encoder frames by a CTC adaptor (``adaptor.output='ctc'``), decoded by
        the LLM's tokenizer: the aligned front-end's own transcription."""
        emb = self.llm.get_input_embeddings()
        out = []
        for s in range(0, len(frames), batch_size):
            ids = self.adaptor.ctc_decode([f.float() for f in frames[s: s + batch_size]], emb)
            out += [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in ids]
        return out

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, queries: Sequence[Query], max_new_tokens: int = 48, **gen_kwargs) -> list[str]:
        """Greedy answers (by default) to text or spoken questions, batched with left padding."""
        queries = [Query(text=q.text, audio=q.audio, speech_features=q.speech_features, instruction=q.instruction)
                   for q in queries]
        batch = self.prepare(queries, padding_side="left")
        kwargs = dict(do_sample=False, max_new_tokens=max_new_tokens,
                      eos_token_id=self.chat.stop_ids,
                      pad_token_id=self.tokenizer.pad_token_id or self.chat.stop_ids[0])
        kwargs.update(gen_kwargs)
        if not kwargs.get("do_sample"):
            kwargs.setdefault("temperature", None)
            kwargs.setdefault("top_p", None)
            kwargs.setdefault("top_k", None)
        from speechkeep.models.blocks.streaming import speech_positions

        with speech_positions(batch.speech_mask):
            out = self.llm.generate(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, **kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    # ------------------------------------------------------------------ transforms, save / load
    def apply_transform(self, name: str, settings: dict[str, Any]) -> None:
        """Change the LLM's structure with the registered transform ``name`` (e.g. ``lora``) and record it:
        a saved model lists its transforms and re-applies them before loading the weights
        (see :mod:`speechkeep.models.transforms`). ``settings`` must be JSON-serializable."""
        from speechkeep.models.transforms import get_transform

        self.llm = get_transform(name).apply(self.llm, settings)
        self.transforms.append({"name": name, "settings": settings})

    def is_peft(self) -> bool:
        return hasattr(self.llm, "peft_config")

    def llm_trainable(self) -> bool:
        return any(p.requires_grad for p in self.llm.parameters())

    def save_pretrained(self, path: str | Path, save_llm: bool | None = None) -> Path:
        """Write config, adaptor weights and the LLM atomically (see :func:`speechkeep.models.persistence.save`)."""
        from speechkeep.models.persistence import save

        return save(self, path, save_llm)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "SpeechLLM":
        """Load what :meth:`save_pretrained` wrote (see :func:`speechkeep.models.persistence.load`)."""
        from speechkeep.models.persistence import load

        return load(path, device=device, dtype=dtype)


def _cache_kwarg(decoder) -> str:
    """The decoder's name for its KV cache argument: ``cache`` (transformers >= 5.x, where
    ``past_key_values`` is deprecated) or ``past_key_values`` (older versions and some architectures)."""
    import inspect

    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
