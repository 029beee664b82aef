"""Manifest round-trip, relative audio paths, validation with file:line errors."""

from __future__ import annotations

import json

import pytest

from speechkeep.data.manifest import ManifestRow, read_manifest, write_manifest
from speechkeep.errors import DataError


def rows(base):
    return [
        ManifestRow("q1", "what is it?", str(base / "audio" / "piper-joe" / "q1.wav"), 16000, 1.25, "piper-joe",
                    ["it"], "It is this.", "train"),
        ManifestRow("q2", "who is she?", str(base / "audio" / "espeak-us-f2" / "q2.wav"), 16000, 2.0,
                    "espeak-us-f2", [], None, "eval"),
    ]


def test_round_trip_with_relative_paths(tmp_path):
    original = rows(tmp_path)
    path = write_manifest(tmp_path / "manifest.jsonl", original)
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    assert lines[0]["audio"] == "audio/piper-joe/q1.wav"  # stored relative to the manifest
    assert list(lines[0]) == ["id", "text", "audio", "sample_rate", "duration", "voice", "answers", "response", "split"]
    assert read_manifest(path) == original
    assert read_manifest(tmp_path) == original  # a directory means DIR/manifest.jsonl


def test_moved_directory_still_resolves(tmp_path):
    write_manifest(tmp_path / "a" / "manifest.jsonl", rows(tmp_path / "a"))
    (tmp_path / "a").rename(tmp_path / "b")
    back = read_manifest(tmp_path / "b" / "manifest.jsonl")
    assert back[0].audio == str(tmp_path / "b" / "audio" / "piper-joe" / "q1.wav")


def test_write_is_atomic_and_rejects_duplicates(tmp_path):
    path = write_manifest(tmp_path / "manifest.jsonl", rows(tmp_path))
    before = path.read_bytes()
    dup = rows(tmp_path) + [rows(tmp_path)[0]]
    with pytest.raises(DataError, match="duplicate utterance id 'q1'"):
        write_manifest(path, dup)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]  # no temporaries left


@pytest.mark.parametrize("line, message", [
    ("{oops", "malformed JSON"),
    ('{"id": "x"}', "missing field"),
    ('{"id": "x", "text": "t", "audio": "a.wav", "sample_rate": 16000, "duration": 1, "voice": "v", "extra": 1}',
     "unknown field"),
    ('{"id": "x", "text": "t", "audio": "a.wav", "sample_rate": "16k", "duration": 1, "voice": "v"}',
     "field 'sample_rate' must be an integer"),
    ('{"id": "x", "text": "t", "audio": "a.wav", "sample_rate": 16000, "duration": 0, "voice": "v"}',
     "sample_rate and duration must be positive"),
    ('{"id": "q1", "text": "t", "audio": "a.wav", "sample_rate": 16000, "duration": 1, "voice": "v"}',
     "duplicate id 'q1' \\(first at line 1\\)"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = write_manifest(tmp_path / "manifest.jsonl", rows(tmp_path)[:1])
    with open(path, "a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError, match=rf"manifest\.jsonl:2: {message}"):
        read_manifest(path)


def test_check_audio(tmp_path):
    path = write_manifest(tmp_path / "manifest.jsonl", rows(tmp_path))
    with pytest.raises(DataError, match=r"manifest\.jsonl:1: audio file not found"):
        read_manifest(path, check_audio=True)
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "nothing.jsonl")
