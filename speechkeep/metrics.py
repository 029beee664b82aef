"""Text metrics shared by data checks and evaluation: Whisper's English normalizer and corpus WER."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence


@lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    # Whisper's normalizer also maps British to American spellings from a normalizer.json that ships
    # with hub checkpoints; offline we have no such file, so that one step is skipped ({}).
    return EnglishTextNormalizer({})


def whisper_normalize(text: str) -> str:
    """Whisper's English text normalizer (lower-case, numbers and punctuation standardized)."""
    return _normalizer()(text)


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus-level WER (total edits / total reference words) after Whisper normalization, via jiwer."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [whisper_normalize(r) for r in references]
    hyps = [whisper_normalize(h) for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r.strip()]
    if not keep:
        raise ValueError("every reference is empty after normalization")
    return float(jiwer.wer([refs[i] for i in keep], [hyps[i] for i in keep]))


def utterance_errors(references: Sequence[str], hypotheses: Sequence[str]) -> list[tuple[int, int]]:
    """Per utterance (word edits, reference words) after Whisper normalization, via jiwer's alignment;
    utterances whose reference is empty after normalization are left out. ``sum(edits) / sum(words)``
    is :func:`corpus_wer`; the pairs are what a bootstrap of the WER resamples."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    out = []
    for r, h in zip(references, hypotheses):
        r, h = whisper_normalize(r), whisper_normalize(h)
        if not r.strip():
            continue
        if not h.strip():
            out.append((len(r.split()), len(r.split())))
            continue
        o = jiwer.process_words(r, h)
        out.append((o.substitutions + o.deletions + o.insertions, len(r.split())))
    return out
