"""An open CTC vocabulary: the LLM tokens of a general text sample plus a spelling fallback.

The CTC head (:mod:`speechkeep.models.ctc_head`) can only emit the LLM tokens of its ``ctc_vocab``.
A vocabulary made of the tokens of one benchmark's transcripts cannot emit everyday words at all
(issue 16: "explain", "photosynthesis", "works", "simple", "terms" were outside the 6,652-token head).
This module builds the vocabulary from a large general text sample and adds a **fallback**: every LLM
token whose byte-level string is at most ``fallback_chars`` characters long (with a byte-level BPE
tokenizer such as SmolLM2's or GPT-2's these include one token per byte value that occurs in UTF-8
text, with and without the leading-space marker). Any text can then be written with the vocabulary:
:func:`spell` keeps the tokenizer's own tokens where they are in the vocabulary and writes an
out-of-vocabulary token as the longest in-vocabulary pieces of its byte-level string (greedy longest
match, which always succeeds down to single bytes). The LLM reads such a word as the pieces (a
non-canonical tokenization: the same bytes, as when a BPE tokenizer meets an unusual word).

Coverage (:func:`coverage`): the share of a text set's canonical tokens that are in the vocabulary
(no fallback needed), and the words that cannot be written even with the fallback (should be none).

A vocabulary file (:func:`save_vocabulary`) is JSON: ``{"token_ids": [...], "tokenizer": ..., "min_count",
"fallback_chars", "sources", ...}``; ``strategy=ctc_align`` reads it with ``ctc_align.vocabulary=FILE``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from speechkeep.errors import DataError


def token_strings(tokenizer) -> dict[int, str]:
    """Every token id -> its raw string in the tokenizer's vocabulary (byte-level form for BPE: 'Ġthe')."""
    return {int(i): s for s, i in tokenizer.get_vocab().items()}


def fallback_ids(tokenizer, max_chars: int = 1) -> list[int]:
    """Token ids whose raw string has at most ``max_chars`` characters, plus those same strings with the
    leading-space marker ('Ġ' for byte-level BPE, '▁' for sentencepiece) in front; special tokens excluded."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab = tokenizer.get_vocab()
    out = set()
    for s, i in vocab.items():
        if i in special or not s:
            continue
        core = s[1:] if s[0] in ("Ġ", "▁") and len(s) > 1 else s
        if len(core) <= max_chars:
            out.add(int(i))
    return sorted(out)


@dataclass
class Vocabulary:
    """A CTC vocabulary over an LLM's tokens (sorted ids) and how it was made."""

    token_ids: list[int]
    """Sorted LLM token ids the CTC head can emit."""
    tokenizer: str = ""
    """The LLM spec whose tokenizer the ids belong to."""
    min_count: int = 1
    """A token of the text sample is in the vocabulary when it occurs at least this often."""
    fallback_chars: int = 1
    """Every token of at most this many characters (plus its leading-space form) is in the vocabulary."""
    sample_tokens: int = 0
    """Tokens in the text sample the vocabulary was counted on."""
    sample_texts: int = 0
    """Texts in that sample."""
    from_sample: int = 0
    """Ids that came from the sample (the rest are the fallback)."""
    sources: dict = field(default_factory=dict)
    """Where the sample came from (source name -> texts)."""


def build_vocabulary(tokenizer, texts: Iterable[str], *, min_count: int = 1, fallback_chars: int = 1,
                     tokenizer_spec: str = "", sources: dict | None = None) -> Vocabulary:
    """The tokens occurring at least ``min_count`` times in ``texts`` plus the fallback tokens."""
    counts: Counter = Counter()
    n_texts = 0
    batch: list[str] = []

    def flush():
        if batch:
            for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                counts.update(ids)
            batch.clear()

    for t in texts:
        n_texts += 1
        batch.append(t)
        if len(batch) >= 1024:
            flush()
    flush()
    sample = {t for t, c in counts.items() if c >= min_count}
    ids = sorted(sample | set(fallback_ids(tokenizer, fallback_chars)))
    return Vocabulary(token_ids=ids, tokenizer=tokenizer_spec, min_count=min_count, fallback_chars=fallback_chars,
                      sample_tokens=int(sum(counts.values())), sample_texts=n_texts, from_sample=len(sample),
                      sources=dict(sources or {}))


def save_vocabulary(vocab: Vocabulary, path: str | Path, **extra) -> Path:
    """Write a vocabulary file (JSON, atomically)."""
    from dataclasses import asdict

    from speechkeep.io import write_json

    write_json(path, {**asdict(vocab), **extra, "size": len(vocab.token_ids)})
    return Path(path)


def load_vocabulary(path: str | Path) -> Vocabulary:
    """Read a vocabulary file; DataError naming the file and the problem when it is not one."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: no such vocabulary file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: not a JSON vocabulary file ({e})") from None
    ids = obj.get("token_ids") if isinstance(obj, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise DataError(f"{p}: 'token_ids' must be a non-empty list of token ids (non-negative integers)")
    if sorted(set(ids)) != ids:
        raise DataError(f"{p}: 'token_ids' must be sorted and without duplicates")
    known = {f for f in Vocabulary.__dataclass_fields__}
    return Vocabulary(**{k: v for k, v in obj.items() if k in known})


class Speller:
    """Writes text as CTC-vocabulary token ids (see the module docstring)."""

    def __init__(self, tokenizer, token_ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.ids = set(int(i) for i in token_ids)
        strings = token_strings(tokenizer)
        self._str = strings
        self._by_str = {strings[i]: i for i in self.ids if i in strings}
        self._max = max((len(s) for s in self._by_str), default=1)
        self._cache: dict[int, list[int] | None] = {}

    def pieces(self, token_id: int) -> list[int] | None:
        """In-vocabulary ids spelling one token (itself when in the vocabulary); None if impossible."""
        if token_id in self.ids:
            return [token_id]
        if token_id in self._cache:
            return self._cache[token_id]
        s = self._str.get(token_id)
        out: list[int] | None = [] if s else None
        i = 0
        while s and i < len(s):
            for j in range(min(len(s), i + self._max), i, -1):
                t = self._by_str.get(s[i:j])
                if t is not None:
                    out.append(t)
                    i = j
                    break
            else:
                out = None
                break
        self._cache[token_id] = out
        return out

    def spell_ids(self, ids: Sequence[int]) -> list[int] | None:
        """Canonical token ids -> in-vocabulary ids (None when some token cannot be written)."""
        out: list[int] = []
        for t in ids:
            p = self.pieces(int(t))
            if p is None:
                return None
            out += p
        return out

    def spell(self, text: str) -> list[int] | None:
        """Text -> in-vocabulary ids (None when it cannot be written)."""
        return self.spell_ids(self.tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class Coverage:
    """How well a vocabulary covers a text set."""

    tokens: int
    """Canonical LLM tokens in the text set."""
    in_vocabulary: int
    """Of those, tokens in the vocabulary as they are."""
    texts: int
    """Texts in the set."""
    texts_fully_covered: int
    """Texts whose every canonical token is in the vocabulary."""
    words: int
    """Whitespace-separated words in the set."""
    unwritable_words: list[str]
    """Words that cannot be written even with the fallback (should be empty)."""
    spelled_tokens: int
    """Tokens written by the fallback instead (the pieces they became)."""

    @property
    def token_coverage(self) -> float:
        return self.in_vocabulary / max(self.tokens, 1)

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "in_vocabulary": self.in_vocabulary,
                "token_coverage": round(self.token_coverage, 6), "texts": self.texts,
                "texts_fully_covered": self.texts_fully_covered, "words": self.words,
                "unwritable_words": self.unwritable_words[:50], "n_unwritable_words": len(self.unwritable_words),
                "spelled_tokens": self.spelled_tokens}


def coverage(tokenizer, token_ids: Sequence[int], texts: Sequence[str]) -> Coverage:
    """Token coverage of ``texts`` by the vocabulary, and the words it cannot write at all."""
    sp = Speller(tokenizer, token_ids)
    tokens = inv = full = spelled = words = 0
    unwritable: list[str] = []
    for s in range(0, len(texts), 1024):
        chunk = list(texts[s: s + 1024])
        for text, ids in zip(chunk, tokenizer(chunk, add_special_tokens=False)["input_ids"]):
            n_in = sum(1 for t in ids if t in sp.ids)
            tokens += len(ids)
            inv += n_in
            full += n_in == len(ids)
            bad = False
            for t in ids:
                if t not in sp.ids:
                    p = sp.pieces(t)
                    spelled += p is not None
                    bad |= p is None
            ws = text.split()
            words += len(ws)
            if bad:  # only then can a word be unwritable: find which
                unwritable += [w for w in ws if sp.spell(" " + w) is None or sp.spell(w) is None]
    return Coverage(tokens=tokens, in_vocabulary=inv, texts=len(texts), texts_fully_covered=full, words=words,
                    unwritable_words=sorted(set(unwritable)), spelled_tokens=spelled)
