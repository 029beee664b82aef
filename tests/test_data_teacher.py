"""Teacher responses: left-padded batches give the unbatched answers; the cache prevents regeneration."""

from __future__ import annotations

import json

import pytest

from speechkeep.data import teacher
from speechkeep.data.teacher import generate_responses, read_cache
from speechkeep.errors import DataError

pytestmark = pytest.mark.real
LLM = "bundled:smollm2-135m"
QUESTIONS = ["what is the capital of france?", "who wrote hamlet?", "what is the name of justin bieber brother?"]


@pytest.fixture(scope="module")
def llm(smollm2):
    return smollm2  # the session-wide load (tests/conftest.py)


def test_batched_left_padding_matches_one_by_one(llm):
    kw = dict(max_new_tokens=8, llm=llm, progress=False)
    batched = generate_responses(LLM, QUESTIONS, batch_size=3, **kw)
    single = generate_responses(LLM, QUESTIONS, batch_size=1, **kw)
    assert batched == single
    assert all(isinstance(r, str) and r for r in batched)


def test_cache_reused_without_loading_the_llm(tmp_path, llm, monkeypatch):
    cache = tmp_path / "teacher.jsonl"
    st: dict = {}
    first = generate_responses(LLM, QUESTIONS[:2], max_new_tokens=6, batch_size=2, cache_path=cache,
                               llm=llm, progress=False, stats=st)
    assert st["generated"] == 2 and st["cached"] == 0 and st["new_tokens"] > 0
    assert len(cache.read_text().splitlines()) == 2

    def no_load(*a, **k):
        raise AssertionError("the LLM must not be loaded when every response is cached")

    monkeypatch.setattr("speechkeep.models.llm.load_llm", no_load)
    st = {}
    again = generate_responses(LLM, list(reversed(QUESTIONS[:2])), max_new_tokens=6, cache_path=cache,
                               progress=False, stats=st)
    assert again == list(reversed(first))
    assert st == {"cached": 2, "generated": 0, "new_tokens": 0, "seconds": 0.0, "truncated": st["truncated"]}

    # Another max_new_tokens is another key; a torn last line (crash) is ignored and repaired.
    with open(cache, "a") as f:
        f.write('{"key": "torn')
    assert len(read_cache(cache)) == 2
    monkeypatch.undo()
    st = {}
    generate_responses(LLM, QUESTIONS[:1], max_new_tokens=4, cache_path=cache, llm=llm, progress=False, stats=st)
    assert st["generated"] == 1
    lines = cache.read_text().splitlines()
    assert json.loads(lines[-1])["max_new_tokens"] == 4 and len(read_cache(cache)) == 3


def test_bad_arguments():
    with pytest.raises(DataError, match="empty"):
        generate_responses(LLM, ["ok?", " "])
    with pytest.raises(DataError, match="max_new_tokens"):
        generate_responses(LLM, ["ok?"], max_new_tokens=0)
    assert teacher.response_key(LLM, "a", 4) != teacher.response_key(LLM, "a", 5)
