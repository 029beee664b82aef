"""The encoder-adaptor speech LLM: frozen Whisper encoder -> adaptor -> any Hugging Face causal LM.

Queries may be text or speech, mixed in one batch. A spoken query's adaptor outputs are spliced
into the user turn of the LLM's own chat template (see :mod:`speechkeep.models.chat`). Labels are
-100 everywhere except the response tokens and the end-of-turn token. The LM head is applied only
at positions whose next token is a label (the loss never builds full-vocabulary logits for prompt
or speech positions).

Invariant (tested): a text-only query gives exactly the base LLM's logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from speechkeep.config import Checked, config_from_dict, config_to_dict
from speechkeep.errors import SpeechkeepError
from speechkeep.io import atomic_path
from speechkeep.models.adaptor import AdaptorConfig, FrameStackAdaptor
from speechkeep.models.chat import ChatFormat

IGNORE_INDEX = -100
CONFIG_NAME = "speechkeep.json"
ADAPTOR_NAME = "adaptor.safetensors"
FORMAT_VERSION = 1
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

    @property
    def is_speech(self) -> bool:
        return self.audio is not None or self.speech_features is not None


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
        for b, (s, ids, lm) in enumerate(zip(seqs, ids_seqs, label_masks)):
            n = s.shape[0]
            sl = slice(max_len - n, max_len) if padding_side == "left" else slice(0, n)
            embeds[b, sl] = s
            attn[b, sl] = 1
            pos[b, sl] = torch.arange(n, device=self.device)
            if labels is not None:
                lab = ids.to(self.device).clone()
                lab[~torch.tensor(lm, dtype=torch.bool, device=self.device)] = IGNORE_INDEX
                labels[b, sl] = lab
        n_speech = [speech_embeds[i].shape[0] if i in speech_embeds else 0 for i in range(bsz)]
        shared = common_token_prefix(ids_seqs) if padding_side == "right" and bsz > 1 else 0
        return Batch(embeds, attn, pos, labels, n_speech, shared)

    # ------------------------------------------------------------------ forward
    def hidden_states(self, batch: Batch) -> torch.Tensor:
        """Last hidden states. A prompt prefix shared by every row (the system prompt and the start of
        the user turn: ~25% of a SmolLM2 training sequence) is run once, not once per row; its keys and
        values are repeated over the batch (gradients flow back through the repeat)."""
        dec = self._decoder()
        p, bsz = batch.shared_prefix, batch.inputs_embeds.shape[0]
        if self.share_prefix and p >= MIN_SHARED_PREFIX and bsz > 1:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.llm.config)
            pre = dec(inputs_embeds=batch.inputs_embeds[:1, :p], attention_mask=batch.attention_mask[:1, :p],
                      position_ids=batch.position_ids[:1, :p], past_key_values=cache, use_cache=True)
            cache.batch_repeat_interleave(bsz)
            rest = dec(inputs_embeds=batch.inputs_embeds[:, p:], attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids[:, p:], past_key_values=cache, use_cache=True)
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

    def loss(self, batch: Batch, reduction: Literal["mean", "sum"] = "mean") -> tuple[torch.Tensor, int]:
        """Token-weighted cross-entropy over response tokens; returns (loss, number of target tokens).

        The LM head runs only on the positions that predict a label."""
        if batch.labels is None:
            raise SpeechkeepError("loss() needs queries with a response")
        hidden = self.hidden_states(batch)
        targets = batch.labels[:, 1:]
        keep = targets != IGNORE_INDEX
        n = int(keep.sum())
        if n == 0:
            raise SpeechkeepError("every label is masked: no response tokens to train on")
        logits = self._lm_head(hidden[:, :-1][keep]).float()
        total = nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
        return (total / n if reduction == "mean" else total), n

    def forward(self, queries: Sequence[Query], loss_fn=None):
        """Training entry point (what DDP/accelerate wrap): ``loss_fn(self, queries)`` if given, else
        ``(mean response-token loss, number of target tokens, {})``."""
        if loss_fn is not None:
            return loss_fn(self, queries)
        loss, n = self.loss(self.prepare(queries))
        return loss, n, {}

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
        out = self.llm.generate(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, **kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    # ------------------------------------------------------------------ save / load
    def is_peft(self) -> bool:
        return hasattr(self.llm, "peft_config")

    def llm_trainable(self) -> bool:
        return any(p.requires_grad for p in self.llm.parameters())

    def save_pretrained(self, path: str | Path, save_llm: bool | None = None) -> Path:
        """Write config, adaptor weights and the LLM (full weights, or peft adapter files) atomically.

        ``save_llm=None`` saves the LLM only if it has trainable parameters; otherwise the config
        refers to the LLM by its spec (the frozen base is not copied). Saving over an existing
        directory replaces only speechkeep's own names in it (``speechkeep.json``,
        ``adaptor.safetensors``, ``llm/``, ``llm_adapter/``); anything else there is kept."""
        from safetensors.torch import save_file

        path = Path(path)
        if save_llm is None:
            save_llm = self.llm_trainable()
        llm_format = "peft" if self.is_peft() else ("full" if save_llm else "reference")
        meta = {"format_version": FORMAT_VERSION, "llm_format": llm_format, "config": config_to_dict(self.config)}
        with atomic_path(path, own_names=(CONFIG_NAME, ADAPTOR_NAME, "llm", "llm_adapter")) as tmp:
            tmp.mkdir(parents=True)
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
            save_file({k: v.detach().contiguous().cpu() for k, v in self.adaptor.state_dict().items()},
                      str(tmp / ADAPTOR_NAME))
            if llm_format == "peft":
                self.llm.save_pretrained(tmp / "llm_adapter")
            elif llm_format == "full":
                self.llm.save_pretrained(tmp / "llm")
                self.tokenizer.save_pretrained(tmp / "llm")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "SpeechLLM":
        """Load what :meth:`save_pretrained` wrote. A damaged directory (malformed config, truncated
        or foreign weights) is a :class:`~speechkeep.errors.DataError` naming the file."""
        from speechkeep.errors import ConfigError, DataError
        from speechkeep.models.llm import load_llm
        from speechkeep.models.speech_encoder import load_speech_encoder

        path = Path(path)
        if not (path / CONFIG_NAME).exists():
            raise SpeechkeepError(f"{path} is not a speechkeep model directory (no {CONFIG_NAME})")
        try:
            meta = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("llm_format") not in ("peft", "full", "reference"):
                raise ValueError("no valid llm_format")
            config = config_from_dict(SpeechLLMConfig, meta["config"])
        except (ValueError, KeyError, ConfigError, OSError) as e:
            raise DataError(f"{path / CONFIG_NAME}: not a valid speechkeep model config ({e})") from None
        llm_spec = str(path / "llm") if meta["llm_format"] == "full" else config.llm
        adaptor_state = read_safetensors(path / ADAPTOR_NAME, "adaptor weights")
        loaded = load_llm(llm_spec, dtype=dtype, device=device)
        llm = loaded.model
        if meta["llm_format"] == "peft":
            from peft import PeftModel

            try:
                llm = PeftModel.from_pretrained(llm, str(path / "llm_adapter"))
            except Exception as e:  # peft raises ValueError, OSError, SafetensorError, KeyError...
                raise DataError(f"{path / 'llm_adapter'}: cannot load the LoRA adapter: {type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}") from None
            llm.eval()
        encoder = load_speech_encoder(config.speech_encoder, device=device)
        model = cls.from_parts(llm, loaded.tokenizer, encoder, config, seed=None)
        try:
            model.adaptor.load_state_dict(adaptor_state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise DataError(f"{path / ADAPTOR_NAME}: the adaptor weights do not fit the model's config "
                            f"({first[-1].strip() if first else e})") from None
        model.adaptor.to(device=model.device, dtype=dtype)
        return model


def read_safetensors(path: Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a missing, truncated or corrupt file is a DataError naming it."""
    from safetensors.torch import load_file

    from speechkeep.errors import DataError

    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError, OSError, ValueError on a truncated or foreign file
        raise DataError(f"{path}: cannot read {what} (truncated or not a safetensors file: {e})") from None


def check_model_spec(spec: str, flag: str = "--model") -> None:
    """Fail fast (before any output is created or model loaded) if ``spec`` cannot name a model for
    :func:`load_speech_llm`; raises ModelSpecError / UsageError naming ``flag``."""
    from speechkeep.errors import ModelSpecError
    from speechkeep.models.bundled import front_end_dir, is_front_end_spec
    from speechkeep.models.llm import resolve_llm_dir

    if not spec or not str(spec).strip():
        raise ModelSpecError(f"{flag}: no model given")
    if is_front_end_spec(spec):
        front_end_dir(spec)
        return
    p = Path(spec)
    if p.is_dir() and ((p / CONFIG_NAME).exists() or (p / "model" / CONFIG_NAME).exists()):
        return
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return
    if p.is_dir() and (p / "train_config.json").exists():
        raise ModelSpecError(f"{flag} {spec}: this training run has no saved model yet (no model/{CONFIG_NAME}); "
                             "finish or resume it first")
    try:
        resolve_llm_dir(spec)
    except ModelSpecError as e:
        raise ModelSpecError(f"{flag}: {e}") from None


def load_speech_llm(spec: str, device: str | torch.device = "cpu") -> tuple[SpeechLLM, bool]:
    """Load from any of: a shipped aligned front-end (``bundled:smollm2-135m+whisper-tiny.en``), a
    training run directory (its ``model/``), a saved SpeechLLM directory, a SpeechLLM config YAML, or
    a plain LLM spec. Returns (model, whether its speech adaptor is trained);
    the last two give a fresh, untrained adaptor."""
    from speechkeep.config import load_config
    from speechkeep.models.bundled import front_end_dir, is_front_end_spec

    if is_front_end_spec(spec):
        return SpeechLLM.from_pretrained(front_end_dir(spec), device=device), True
    p = Path(spec)
    for cand in (p, p / "model"):
        if cand.is_dir() and (cand / CONFIG_NAME).exists():
            return SpeechLLM.from_pretrained(cand, device=device), True
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return SpeechLLM.build(load_config(SpeechLLMConfig, p), device=device), False
    return SpeechLLM.build(SpeechLLMConfig(llm=spec), device=device), False
