"""Spoken-QA answer matching (LLaMA Questions / Web Questions convention).

A response is correct when any reference answer, normalized, occurs in the normalized response on
word boundaries. Normalization: lower-case, punctuation removed, articles (a, an, the) removed,
whitespace collapsed. Matching on word boundaries rejects partial words, e.g. the answer "Paris"
inside "parish", which plain substring matching would accept.
"""

from __future__ import annotations

import re
import string
from typing import Sequence

MATCHING_RULE = ("any reference answer, normalized, is contained on word boundaries in the normalized response "
                 "(normalization: lower-case, punctuation and articles removed, spaces collapsed)")
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}‘’“”–—]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = _PUNCT.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def is_correct(response: str, references: Sequence[str]) -> bool:
    resp = f" {normalize_answer(response)} "
    for ref in references:
        r = normalize_answer(ref)
        if r and f" {r} " in resp:
            return True
    return False
