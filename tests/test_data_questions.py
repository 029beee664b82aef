"""Reading question sets: formats, and every bad-input case with a file:line message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechkeep.data.questions import read_questions
from speechkeep.errors import DataError

from speechkeep.data.webquestions import webquestions_file


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list) -> Path:
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_webquestions_devtest():
    res = read_questions(webquestions_file("devtest"))
    assert res.format == "json"
    assert len(res.items) == 189 and not res.skipped
    first = res.items[0]
    assert first.id == "wqr000000"
    assert first.text == "what is the name of justin bieber brother?"
    assert first.answers == ["Jazmyn Bieber", "Jaxon Bieber"]
    assert first.line == 2 and first.response is None and not first.has_audio
    assert res.items[1].line == 3


def test_json_array_lines_and_answers(tmp_path):
    p = write(tmp_path / "q.json", '[\n {"qId": "a", "qText": "first?", "answers": ["x", "y"]},\n\n'
                                   ' {"qId": 7,\n  "qText": "  second   one? ", "answers": "z"}\n]\n')
    items = read_questions(p).items
    assert [(i.id, i.text, i.answers, i.line) for i in items] == [
        ("a", "first?", ["x", "y"], 2), ("7", "second one?", ["z"], 4)]


def test_jsonl_fields_and_relative_audio(tmp_path):
    p = jsonl(tmp_path / "q.jsonl", [
        {"id": "a", "text": "hello?", "answers": ["h"], "response": "hi", "audio": "wav/a.wav", "topic": "t"},
        "",
        {"id": "b", "text": "bye?", "split": "eval"},
    ])
    res = read_questions(p)
    assert res.format == "jsonl"
    a, b = res.items
    assert a.response == "hi" and a.audio_path == str((tmp_path / "wav" / "a.wav").resolve())
    assert a.extra == {"topic": "t"} and a.line == 1
    assert b.line == 3 and b.split == "eval" and b.answers == [] and b.audio_path is None


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = jsonl(tmp_path / "q.jsonl", [{"id": "a", "text": "ok?"}, '{"id": "b", "text": ', {"id": "c", "text": "ok"}])
    with pytest.raises(DataError, match=r"q\.jsonl:2: malformed JSON"):
        read_questions(p)


def test_skip_bad_counts_and_lists_lines(tmp_path):
    p = jsonl(tmp_path / "q.jsonl", [
        {"id": "a", "text": "ok?"}, "{not json", {"id": "b", "text": "  "}, {"id": "a", "text": "dup?"},
        {"id": "c"}, [1, 2], {"id": "d", "text": "fine"},
    ])
    res = read_questions(p, skip_bad=True)
    assert [i.id for i in res.items] == ["a", "d"]
    assert [n for n, _ in res.skipped] == [2, 3, 4, 5, 6]
    reasons = dict(res.skipped)
    assert "malformed JSON" in reasons[2] and "empty text" in reasons[3]
    assert "duplicate id 'a'" in reasons[4] and "missing text" in reasons[5]


def test_malformed_json_array_uses_decoder_line(tmp_path):
    p = write(tmp_path / "q.json", '[\n {"qId": "a", "qText": "x"},\n {"qId": "b" "qText": "y"}\n]\n')
    with pytest.raises(DataError, match=r"q\.json:3: malformed JSON at column 14"):
        read_questions(p)
    with pytest.raises(DataError, match="cannot skip"):
        read_questions(p, skip_bad=True)


@pytest.mark.parametrize("row, message", [
    ({"id": "a", "text": ""}, r"q\.jsonl:2: id 'a': empty text"),
    ({"id": "a", "question_text": "x"}, r"q\.jsonl:2: id 'a': missing text field"),
    ({"text": "x"}, r"q\.jsonl:2: missing id"),
    ({"id": "a", "text": 3}, r"q\.jsonl:2: id 'a': text must be a string"),
    ({"id": "a", "text": "x", "answers": {"a": 1}}, r"q\.jsonl:2: id 'a': answers must be"),
])
def test_bad_items(tmp_path, row, message):
    p = jsonl(tmp_path / "q.jsonl", [{"id": "z", "text": "fine"}, row])
    with pytest.raises(DataError, match=message):
        read_questions(p)


def test_duplicate_id_names_both_lines(tmp_path):
    p = jsonl(tmp_path / "q.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}])
    with pytest.raises(DataError, match=r"q\.jsonl:3: duplicate id 'a' \(first seen at .*q\.jsonl:1\)"):
        read_questions(p)


def test_duplicate_id_in_json_array(tmp_path):
    p = write(tmp_path / "q.json", json.dumps([{"qId": "a", "qText": "x"}, {"qId": "a", "qText": "y"}], indent=1))
    with pytest.raises(DataError, match=r"q\.json:6: duplicate id 'a' \(first seen at .*q\.json:2\)"):
        read_questions(p)


@pytest.mark.parametrize("content, message", [
    ("", "is empty"), ("\n  \n", "is empty"), ("[]", "no questions"), ('{"id": 1}\n', "missing text"),
])
def test_empty_inputs(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        read_questions(write(tmp_path / "q.jsonl", content))


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_questions(tmp_path / "nope.json")
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not UTF-8"):
        read_questions(p)
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(DataError, match="not a datasets directory"):
        read_questions(tmp_path / "plain_dir")


def test_datasets_directory_with_audio(tmp_path):
    datasets = pytest.importorskip("datasets")
    sf.write(tmp_path / "a.wav", np.zeros(8000, dtype=np.float32), 8000)
    ds = datasets.Dataset.from_dict({"id": ["u1", "u2"], "transcript": ["hello there", "second"],
                                     "audio": [str(tmp_path / "a.wav")] * 2, "speaker": ["s1", "s2"]})
    ds = ds.cast_column("audio", datasets.Audio())
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "dd"))
    res = read_questions(tmp_path / "dd")
    assert res.format == "datasets"
    assert [(i.id, i.text, i.split, i.voice, i.line) for i in res.items] == [
        ("u1", "hello there", "test", "s1", 1), ("u2", "second", "test", "s2", 2)]
    assert all(i.has_audio and i.audio_bytes for i in res.items)  # save_to_disk embeds the bytes
