"""The WebQuestions question files that ship inside the package (CC-BY 4.0, see README.md and LICENSE here).

    from speechkeep.data.webquestions import webquestions_file
    webquestions_file("devtest")                 # .../speechkeep/data/webquestions/devtest.json
    webquestions_file("devtest", "my/wq_dir")    # my/wq_dir/devtest.json (a user's own copy)

Resolution order: the directory given by the caller (a recipe's ``webquestions=DIR``), else
``$SPEECHKEEP_WEBQUESTIONS``, else the files shipped in this package (found through
``importlib.resources``, so an installed wheel works as well as a checkout).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from speechkeep.errors import UsageError

ENV = "SPEECHKEEP_WEBQUESTIONS"

SPLITS: dict[str, str] = {
    "trainmodel": "training questions (2,834)",
    "val": "validation questions (755); in the shipped front-end's alignment corpus",
    "devtest": "held-out evaluation questions (189)",
    "heldout": "held-out evaluation questions (1,016): second half of the official test split",
}
"""Split name -> what it is. ``devtest`` + ``heldout`` are the clean evaluation pool."""

CLEAN_EVAL_SPLITS = ("heldout", "devtest")
"""Never in a training, alignment, teacher or vocabulary corpus."""


ALIASES: dict[str, tuple[str, ...]] = {"clean": CLEAN_EVAL_SPLITS}
"""``webquestions:clean`` = ``webquestions:heldout+devtest``: the 1,205 clean evaluation questions."""


def split_names(spec: str) -> list[str]:
    """``'heldout+devtest'`` -> ``['heldout', 'devtest']``; an alias (``'clean'``) -> its splits."""
    names: list[str] = []
    for part in spec.split("+"):
        part = part.strip()
        if not part:
            raise UsageError(f"webquestions:{spec}: empty split name; shipped splits: {', '.join(SPLITS)}")
        names.extend(ALIASES.get(part, (part,)))
    return names


def shipped_dir() -> Path:
    """The directory of the question files shipped in the package."""
    root = resources.files(__name__)
    if not isinstance(root, Path):  # e.g. a zipped install: these files need a real directory
        root = Path(str(root))
    return root


def webquestions_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$SPEECHKEEP_WEBQUESTIONS``, else the shipped files' directory."""
    if override:
        return Path(override)
    env = os.environ.get(ENV)
    return Path(env) if env else shipped_dir()


def webquestions_file(split: str, override: str | os.PathLike | None = None) -> Path:
    """Path of ``<split>.json`` (``split`` may also be a file name such as ``devtest.json``);
    a UsageError (a path that does not exist: exit code 2) naming the file and the way to fix it."""
    name = split if split.endswith(".json") else f"{split}.json"
    directory = webquestions_dir(override)
    path = directory / name
    if not path.is_file():
        how = (f"the directory comes from {'the webquestions setting' if override else '$' + ENV}"
               if override or os.environ.get(ENV) else "the package's shipped copy is incomplete: reinstall speechkeep")
        raise UsageError(f"{path} not found ({how}); shipped splits: {', '.join(SPLITS)}")
    return path
