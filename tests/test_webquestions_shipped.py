"""The WebQuestions splits ship inside the package: found through package resources from a checkout
and from an installed wheel, with nothing beside the repository, and a user's own
directory still overrides them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from speechkeep.data.questions import read_questions
from speechkeep.data.webquestions import (
    CLEAN_EVAL_SPLITS,
    ENV,
    SPLITS,
    shipped_dir,
    webquestions_dir,
    webquestions_file,
)
from speechkeep.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
SIZES = {"trainmodel": 2834, "val": 755, "devtest": 189, "heldout": 1016}


def test_every_split_ships_with_its_license_and_attribution(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert set(SPLITS) == set(SIZES)
    for split, n in SIZES.items():
        path = webquestions_file(split)
        assert path.parent == shipped_dir() and path.is_relative_to(REPO / "speechkeep")
        res = read_questions(f"webquestions:{split}")
        assert len(res.items) == n and not res.skipped, split
        assert all(q.answers for q in res.items), split
    license_text = (shipped_dir() / "LICENSE").read_text()
    assert "Attribution 4.0 International" in license_text and "Section 3 -- License Conditions." in license_text
    readme = (shipped_dir() / "README.md").read_text()
    assert "Berant" in readme and "CC-BY 4.0" in readme


def test_clean_eval_pool_shares_no_question_with_training_splits(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)

    def texts(split):
        return {" ".join(q.text.lower().split()) for q in read_questions(webquestions_file(split)).items}

    def ids(split):
        return {q.id for q in read_questions(webquestions_file(split)).items}

    clean_texts = set().union(*(texts(s) for s in CLEAN_EVAL_SPLITS))
    clean_ids = set().union(*(ids(s) for s in CLEAN_EVAL_SPLITS))
    assert len(clean_ids) == 1205
    for split in ("trainmodel", "val"):
        assert not clean_ids & ids(split), split
        assert not clean_texts & texts(split), split


def test_user_directory_and_environment_override(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "devtest.json").write_text(json.dumps([{"qId": "x1", "qText": "who am i?", "answers": ["me"]}]))
    monkeypatch.delenv(ENV, raising=False)
    assert webquestions_file("devtest", mine) == mine / "devtest.json"
    monkeypatch.setenv(ENV, str(mine))
    assert webquestions_dir() == mine
    assert [q.id for q in read_questions("webquestions:devtest").items] == ["x1"]
    with pytest.raises(UsageError, match=rf"{mine / 'heldout.json'} not found .*\$SPEECHKEEP_WEBQUESTIONS"):
        webquestions_file("heldout")
    with pytest.raises(UsageError, match="webquestions setting"):
        webquestions_file("val", mine)


def test_demo_and_align_resolve_their_questions_from_the_package(monkeypatch):
    from speechkeep.align.recipe import AlignConfig
    from speechkeep.recipes.demo import DemoConfig, demo_questions

    monkeypatch.delenv(ENV, raising=False)
    assert demo_questions(DemoConfig()) == (shipped_dir() / "trainmodel.json", shipped_dir() / "devtest.json")
    align = AlignConfig()
    assert webquestions_file(align.eval_questions, align.webquestions) == shipped_dir() / "devtest.json"


_RESOLVE_ELSEWHERE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import speechkeep
    from speechkeep.align.recipe import AlignConfig
    from speechkeep.data.questions import read_questions, resolve_questions_path
    from speechkeep.data.webquestions import webquestions_file
    from speechkeep.recipes.demo import DemoConfig, demo_questions

    train, evaluation = demo_questions(DemoConfig())
    align = AlignConfig()
    paths = {
        "package": speechkeep.__file__,
        "demo_train": str(train), "demo_eval": str(evaluation),
        "align_eval": str(webquestions_file(align.eval_questions, align.webquestions)),
        "align_corpus": [str(resolve_questions_path(s)) for s in ("webquestions:trainmodel", "webquestions:val")],
        "n": {s: len(read_questions(f"webquestions:{s}").items) for s in ("trainmodel", "val", "devtest", "heldout")},
    }
    print(json.dumps(paths))
    """
)


def test_an_installed_wheel_finds_its_data_with_nothing_beside_it(tmp_path):
    """Build a wheel from a copy of the sources, install it into an empty directory, and resolve the
    demo's and align's inputs from a working directory and HOME in another empty directory: no
    data directory beside the repository, no checkout on the path."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "speechkeep", src / "speechkeep", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-build-isolation", "--no-deps", str(src), "-w", str(tmp_path / "wheel")],
                   check=True, capture_output=True, cwd=src)
    (wheel,) = (tmp_path / "wheel").glob("speechkeep-*.whl")
    site = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONPATH=str(site), XDG_CACHE_HOME=str(home / ".cache"))
    # -I would also drop site-packages (torch, ...): instead, make sure the checkout is not importable
    out = subprocess.run([sys.executable, "-c", _RESOLVE_ELSEWHERE], cwd=work, env=env, capture_output=True,
                         text=True, check=True).stdout
    got = json.loads(out)
    assert Path(got["package"]).is_relative_to(site), got["package"]
    for key in ("demo_train", "demo_eval", "align_eval", *[f"align_corpus{i}" for i in range(2)]):
        path = Path(got[key[:-1]][int(key[-1])] if key.startswith("align_corpus") else got[key])
        assert path.is_relative_to(site / "speechkeep" / "data" / "webquestions"), (key, path)
        assert path.is_file()
    assert got["n"] == SIZES
    assert not list(work.iterdir()) and not (home / ".cache" / "speechkeep").exists()


def test_clean_pool_reads_as_one_question_set(monkeypatch):
    """webquestions:clean = heldout + devtest in order (1,205); the same set through eval; a split named
    twice is a duplicate-id error naming both places; an empty split name is a usage error."""
    from speechkeep.data.questions import read_questions, resolve_question_sources
    from speechkeep.errors import DataError, UsageError
    from speechkeep.evaluate.run import load_eval_items

    monkeypatch.delenv("SPEECHKEEP_WEBQUESTIONS", raising=False)
    clean = read_questions("webquestions:clean")
    heldout, devtest = read_questions("webquestions:heldout"), read_questions("webquestions:devtest")
    assert [q.id for q in clean.items] == [q.id for q in heldout.items] + [q.id for q in devtest.items]
    assert len(clean.items) == 1205
    assert [p.name for p in resolve_question_sources("webquestions:heldout+devtest")] == ["heldout.json", "devtest.json"]
    items, has_audio = load_eval_items("webquestions:clean", None, None)
    assert [i.id for i in items] == [q.id for q in clean.items] and not has_audio
    with pytest.raises(DataError, match=r"devtest\.json:\d+: duplicate id .*first at .*devtest\.json"):
        read_questions("webquestions:devtest+devtest")
    with pytest.raises(UsageError, match="empty split name"):
        read_questions("webquestions:devtest+")
