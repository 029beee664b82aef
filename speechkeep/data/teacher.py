"""Teacher responses: the base LLM's own greedy answer to each text question (LLaMA-Omni stage 1).

Training the speech LLM to reproduce what the text LLM itself says to the text question keeps
its behaviour (self-distillation) instead of teaching it new answer styles.

Generation is batched with left padding through the LLM's chat template
(:meth:`ChatFormat.text_prompt_ids`), greedy, and stops at the end-of-turn token. Questions are
sorted by prompt length so a batch holds similar lengths (little padding).

Responses are cached in a JSONL file keyed by sha256(llm spec, system prompt, max_new_tokens,
text): a re-run regenerates nothing, and an interrupted run keeps every finished batch (each batch
is appended and flushed as soon as it is done).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from speechkeep.errors import DataError

log = logging.getLogger(__name__)


def response_key(llm_spec: str, text: str, max_new_tokens: int, system_prompt: str | None = None) -> str:
    """Cache key of one teacher response."""
    payload = json.dumps([llm_spec, system_prompt, int(max_new_tokens), text], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def read_cache(cache_path: str | os.PathLike) -> dict[str, str]:
    """key -> response of a cache file (a torn last line from a crash is ignored)."""
    return {k: rec["response"] for k, rec in _read_records(cache_path).items()}


def _read_records(cache_path: str | os.PathLike) -> dict[str, dict]:
    p = Path(cache_path)
    out: dict[str, dict] = {}
    if not p.is_file():
        return out
    with open(p, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                if isinstance(rec["key"], str) and isinstance(rec["response"], str):
                    out[rec["key"]] = rec
                    continue
            except (json.JSONDecodeError, KeyError, TypeError):
                pass
            log.warning("%s:%d: ignoring a malformed teacher-cache line", p, n)
    return out


def generate_responses(
    llm_spec: str,
    texts: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    cache_path: str | os.PathLike | None = None,
    system_prompt: str | None = None,
    progress: bool = True,
    llm=None,
    stats: dict | None = None,
) -> list[str]:
    """The LLM's greedy response to each text (in order).

    ``cache_path``: JSONL cache (None: no cache). Responses already there are not regenerated and
    the LLM is not even loaded when every text is cached. ``llm``: an already loaded
    :class:`~speechkeep.models.llm.LoadedLLM` to use instead of loading ``llm_spec``.
    ``stats``: a dict filled with ``cached``, ``generated``, ``new_tokens``, ``seconds`` and
    ``truncated`` (responses cut by ``max_new_tokens`` before the end-of-turn token)."""
    if max_new_tokens < 1:
        raise DataError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise DataError(f"teacher: text {i} is empty")
    keys = [response_key(llm_spec, t, max_new_tokens, system_prompt) for t in texts]
    cached = _read_records(cache_path) if cache_path is not None else {}
    todo: dict[str, str] = {}  # key -> text (duplicates generated once)
    for k, t in zip(keys, texts):
        if k not in cached:
            todo[k] = t
    st = {"cached": len(texts) - sum(k in todo for k in keys), "generated": len(todo), "new_tokens": 0,
          "seconds": 0.0}
    if todo:
        new = _generate(llm_spec, todo, max_new_tokens, batch_size, cache_path, system_prompt, progress, llm, st)
        cached.update(new)
    st["truncated"] = sum(_truncated(cached[k]) for k in keys)
    if stats is not None:
        stats.update(st)
    return [cached[k]["response"] for k in keys]


def _truncated(rec: dict) -> bool:
    """Whether a cached response was cut by max_new_tokens (older records: inferred from its length)."""
    if "truncated" in rec:
        return bool(rec["truncated"])
    return rec.get("tokens") is not None and rec.get("tokens") == rec.get("max_new_tokens")


def _generate(llm_spec, todo: dict[str, str], max_new_tokens, batch_size, cache_path, system_prompt,
              progress, llm, st) -> dict[str, dict]:
    import torch

    from speechkeep.models.chat import ChatFormat
    from speechkeep.models.llm import load_llm

    if llm is None:
        llm = load_llm(llm_spec)
    model, tok = llm.model, llm.tokenizer
    chat = ChatFormat(tok, system_prompt)
    stop = chat.stop_ids
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stop[0]
    device = model.get_input_embeddings().weight.device
    items = [(k, t, chat.text_prompt_ids(t)) for k, t in todo.items()]
    items.sort(key=lambda x: len(x[2]), reverse=True)  # longest first: the ETA is pessimistic, not optimistic
    out: dict[str, dict] = {}
    cache_file = None
    if cache_path is not None:
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
        cache_file = open(cache_path, "a+b")
        if cache_file.tell() > 0:  # finish a line torn by a crash before appending
            cache_file.seek(-1, os.SEEK_END)
            if cache_file.read(1) != b"\n":
                cache_file.write(b"\n")
    t0 = time.perf_counter()
    bar = tqdm(total=len(items), unit="q", desc="teacher", disable=not progress)
    try:
        for b in range(0, len(items), batch_size):
            batch = items[b: b + batch_size]
            width = max(len(ids) for _, _, ids in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (_, _, ids) in enumerate(batch):
                input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attn[i, width - len(ids):] = 1
            with torch.no_grad():
                gen = model.generate(
                    input_ids=input_ids.to(device), attention_mask=attn.to(device),
                    do_sample=False, temperature=None, top_p=None, top_k=None,
                    max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=pad_id,
                )
            new_tokens = gen[:, width:].tolist()
            lines = []
            for (key, text, _), ids in zip(batch, new_tokens):
                cut = next((j for j, t in enumerate(ids) if t in stop), len(ids))
                response = tok.decode(ids[:cut], skip_special_tokens=True).strip()
                st["new_tokens"] += cut
                rec = {"key": key, "llm": llm_spec, "max_new_tokens": max_new_tokens, "text": text,
                       "response": response, "tokens": cut, "truncated": cut == len(ids) == max_new_tokens}
                out[key] = rec
                lines.append(json.dumps(rec, ensure_ascii=False))
            if cache_file is not None:
                cache_file.write(("\n".join(lines) + "\n").encode("utf-8"))
                cache_file.flush()
                os.fsync(cache_file.fileno())
            st["seconds"] = time.perf_counter() - t0
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{st['new_tokens'] / max(st['seconds'], 1e-9):.1f}")
    finally:
        bar.close()
        if cache_file is not None:
            cache_file.close()
    return out
