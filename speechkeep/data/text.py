"""General English text for the alignment corpus, available offline, with a held-out set (issue 16).

``speechkeep data text`` (:func:`build_text_corpus`) gathers sentences from named sources, cleans them
into speakable transcripts, holds a share out as a **general held-out text set**, and writes

* ``train.jsonl`` / ``heldout.jsonl``: one ``{"id", "text", "source"}`` per line (the JSONL question
  format of ``data build`` and of ``corpus.sources``);
* ``vocabulary.json``: the CTC vocabulary counted on ``train.jsonl`` only, with the spelling fallback
  (:mod:`speechkeep.models.ctc_vocab`), and its coverage of the held-out set;
* ``info.json`` and ``CARD.md``: the command, every source with its license and count, what was removed.

Sources (``sources=[...]``):

| name | what | license |
| --- | --- | --- |
| ``wordnet`` | WordNet 3.0 example sentences and definitions (Debian/Ubuntu package ``wordnet-base``: ``/usr/share/wordnet``, or ``$WNHOME``/``wordnet_dir``) | WordNet 3.0 license (Princeton; use, copy, modify and distribute with its notice) |
| ``requests`` | everyday requests, generated here from templates x topics ("can you explain how photosynthesis works in simple terms") | speechkeep's own (the templates and topics in this module) |
| ``llm`` | text the LLM itself writes (``llm``, greedy) for ``llm_prompts`` of the requests, split into complete sentences; cached in ``llm_cache.jsonl`` | the LLM's output (SmolLM2: Apache-2.0) |
| ``webquestions:SPLIT`` | WebQuestions questions of a shipped split (``trainmodel``, ``val`` only: the clean splits are refused) | CC-BY 4.0 |
| ``file:PATH`` | a UTF-8 text file, one utterance per line (license: yours to record, ``file_license``) | as given |

Held-out rule: a text is held out by a hash of its **unit** (a WordNet synset, a request's topic, the
prompt an LLM text answers), so the held-out set shares no synset, request topic or prompt with training;
then every training text that contains a held-out text (or equals one) is removed. No text of any output
contains a question of WebQuestions ``devtest`` or ``heldout`` (checked after cleaning, on normalized text).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from speechkeep.config import Checked, ranged
from speechkeep.errors import DataError, UsageError

WORDNET_LICENSE = ("WordNet 3.0 license (Princeton University): permission to use, copy, modify and distribute "
                   "for any purpose without fee, provided the copyright notice 'WordNet 3.0 Copyright 2006 by "
                   "Princeton University. All rights reserved.' and the disclaimer appear on all copies")
LICENSES = {
    "wordnet": WORDNET_LICENSE,
    "requests": "speechkeep's own templates and topics (the project's license)",
    "llm": "text written by the LLM itself (bundled:smollm2-135m: SmolLM2-135M-Instruct, Apache-2.0)",
    "webquestions": "WebQuestions (Berant et al., EMNLP 2013), CC-BY 4.0",
}


@dataclass
class TextCorpusConfig(Checked):
    """Options of ``speechkeep data text`` (the general English text corpus)."""

    out: str = "runs/text"
    """Output directory: train.jsonl, heldout.jsonl, vocabulary.json, info.json, CARD.md, llm_cache.jsonl."""
    sources: list[str] = field(default_factory=lambda: ["wordnet", "requests", "llm", "webquestions:trainmodel",
                                                        "webquestions:val"])
    """Text sources: wordnet, requests, llm, webquestions:SPLIT (not devtest/heldout), file:PATH (see the module docstring)."""
    wordnet_dir: str | None = None
    """WordNet database directory (data.noun, ...); None: $WNHOME/dict, $WNHOME, else /usr/share/wordnet (Debian package wordnet-base)."""
    file_license: str = "not recorded"
    """License recorded on the card for file:PATH sources."""
    heldout_fraction: float = ranged(0.02, ge=0, lt=1)
    """Share of the units (synsets, request topics, prompts; not WebQuestions) held out as the general held-out set."""
    max_heldout: int = ranged(1000, ge=0)
    """At most this many held-out texts (a seeded sample of the held-out units' texts)."""
    max_per_source: int | None = ranged(None, ge=1)
    """Keep at most this many training texts per source (a seeded sample; None: all)."""
    min_words: int = ranged(3, ge=1)
    """Shortest text kept (words)."""
    max_words: int = ranged(30, ge=1)
    """Longest text kept (words; 30 words are about 10 s of speech)."""
    llm: str = "bundled:smollm2-135m"
    """The LLM whose tokenizer makes the vocabulary and which writes the 'llm' source."""
    llm_prompts: int = ranged(600, ge=0)
    """Requests the LLM answers for the 'llm' source (each answer split into sentences; cached)."""
    llm_max_new_tokens: int = ranged(96, ge=1)
    """Tokens the LLM writes per answer."""
    llm_batch_size: int = ranged(16, ge=1)
    """Answers generated per batch."""
    vocab_min_count: int = ranged(1, ge=1)
    """A training-text token enters the CTC vocabulary when it occurs at least this often."""
    fallback_chars: int = ranged(1, ge=1)
    """Every LLM token of at most this many characters (plus its leading-space form) is in the vocabulary: any word can be spelled."""
    seed: int = ranged(0, ge=0)
    """Seed of the held-out split and of the samples."""
    webquestions: str | None = None
    """WebQuestions directory (for webquestions:SPLIT sources and the clean-pool check); None: the shipped copy."""
    command: str | None = None
    """The command recorded on the card (default: this process's own)."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not a previous `speechkeep data text` output."""
    progress: bool = True
    """Show progress bars."""


# ----------------------------------------------------------------------------- cleaning
_PARENS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_ALLOWED = re.compile(r"^[a-z0-9 ,.?!'\-;:]+$")
_SPACES = re.compile(r"\s+")
_SENT = re.compile(r"(?<=[.!?])\s+")


def normalize(text: str) -> str:
    """Lower case, single spaces: the transcript form (case is not audible)."""
    return " ".join(text.lower().split())


def clean_text(text: str, min_words: int = 3, max_words: int = 30) -> str | None:
    """A speakable transcript, or None: parentheses dropped, typographic quotes and dashes made plain,
    lower case; texts with characters a listener cannot hear (digits are kept: TTS reads them) or outside
    the word range are refused."""
    t = _PARENS.sub(" ", text)
    t = (t.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'").replace("\u201c", "").replace("\u201d", "")
         .replace('"', "").replace("\u2014", ", ").replace("\u2013", "-").replace("_", " "))
    t = normalize(t).strip(" ,;:-")
    t = re.sub(r"\s+([,.?!;:])", r"\1", t)
    if not t or not _ALLOWED.match(t) or not any(c.isalpha() for c in t):
        return None
    n = len(t.split())
    return t if min_words <= n <= max_words else None


def _hash01(key: str, seed: int) -> float:
    h = hashlib.sha1(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


# ----------------------------------------------------------------------------- sources
@dataclass
class RawText:
    text: str
    source: str
    unit: str
    """Held-out grouping key (texts of one unit are all held out or all kept)."""
    can_hold_out: bool = True


def wordnet_path(override: str | None = None) -> Path:
    """The WordNet database directory (see TextCorpusConfig.wordnet_dir)."""
    cands = [Path(override)] if override else []
    if not override and os.environ.get("WNHOME"):
        cands += [Path(os.environ["WNHOME"]) / "dict", Path(os.environ["WNHOME"])]
    if not override:
        cands.append(Path("/usr/share/wordnet"))
    for c in cands:
        if (c / "data.noun").is_file():
            return c
    raise UsageError(f"wordnet: no WordNet database (data.noun) in {', '.join(map(str, cands))}; install the Debian "
                     "package wordnet-base (apt-get install wordnet-base) or set wordnet_dir=DIR")


def read_wordnet(directory: Path) -> list[RawText]:
    """Example sentences (quoted in the glosses) and definitions of every synset of data.{noun,verb,adj,adv}."""
    out: list[RawText] = []
    for pos in ("noun", "verb", "adj", "adv"):
        p = directory / f"data.{pos}"
        if not p.is_file():
            raise DataError(f"{p}: missing WordNet data file")
        with open(p, encoding="utf-8", errors="strict") as f:
            for n, line in enumerate(f, 1):
                if line.startswith("  "):  # the license header
                    continue
                if " | " not in line:
                    raise DataError(f"{p}:{n}: not a WordNet data line (no ' | ' gloss separator)")
                offset, gloss = line.split(" ", 1)[0], line.split(" | ", 1)[1].strip()
                unit = f"wn:{pos}:{offset}"
                examples = re.findall(r'"([^"]+)"', gloss)
                definition = gloss.split('"', 1)[0].strip(" ;")
                for d in definition.split(";"):
                    if d.strip():
                        out.append(RawText(d.strip(), "wordnet", unit))
                out += [RawText(e, "wordnet", unit) for e in examples]
    return out


REQUEST_TEMPLATES = (
    "can you explain how {t} works in simple terms", "what is the history of {t}",
    "please give me three facts about {t}", "tell me something interesting about {t}",
    "how do i get started with {t}", "write a short poem about {t}", "why is {t} important",
    "what are the pros and cons of {t}", "could you summarize what you know about {t}",
    "i need help understanding {t}", "what should a beginner know about {t}",
    "describe {t} to a ten year old", "what is the difference between {t} and something similar",
    "give me a quick overview of {t}", "how has {t} changed over the last fifty years",
    "what are common mistakes people make with {t}", "recommend a good book about {t}",
    "is {t} expensive", "how can i learn more about {t} this weekend", "what do experts say about {t}",
    "please write an email to my manager about {t}", "set a reminder to read about {t} tomorrow morning",
    "what questions should i ask about {t}", "make a list of words related to {t}",
    "how would you teach {t} in one hour", "what is the future of {t}", "tell me a joke about {t}",
    "who are the most famous people in {t}", "compare {t} in europe and in asia",
    "what are the main ideas behind {t}",
)
"""Everyday request templates ({t}: a topic)."""

REQUEST_TOPICS = (
    "photosynthesis", "the stock market", "climate change", "machine learning", "the roman empire",
    "baking bread", "electric cars", "the human heart", "volcanoes", "jazz music", "gardening",
    "the french revolution", "black holes", "vaccines", "renewable energy", "chess", "the olympic games",
    "coffee", "earthquakes", "the internet", "honey bees", "meditation", "football", "the moon landing",
    "credit cards", "recycling", "dinosaurs", "public speaking", "the immune system", "solar panels",
    "ancient egypt", "yoga", "social media", "the water cycle", "ocean tides", "the printing press",
    "classical music", "taxes", "sleep", "running a marathon", "the great wall of china", "antibiotics",
    "cryptocurrency", "the solar system", "wine making", "video games", "the brain", "rainforests",
    "shakespeare", "the cold war", "nuclear power", "cooking pasta", "photography", "the amazon river",
    "human rights", "knitting", "democracy", "hurricanes", "the immune response", "chocolate",
    "the industrial revolution", "electricity", "glaciers", "bird migration", "the periodic table",
    "first aid", "saving money", "job interviews", "time management", "learning a new language",
    "the piano", "cloud computing", "genetics", "traffic lights", "airplanes", "submarines", "bicycles",
    "the printing of money", "inflation", "mountain climbing", "camping", "tea ceremonies", "origami",
    "the theory of evolution", "plate tectonics", "the speed of light", "artificial intelligence",
    "smartphones", "the middle ages", "greek mythology", "the northern lights", "coral reefs", "deserts",
    "wind turbines", "the postal service", "libraries", "museums", "street food", "opera", "ballet",
    "architecture", "bridges", "the human skeleton", "nutrition", "diabetes", "allergies", "dogs", "cats",
    "horses", "whales", "sharks", "spiders", "mushrooms", "tomatoes", "rice farming", "fishing",
    "the weather forecast", "thunderstorms", "snowflakes", "rainbows", "telescopes", "microscopes",
    "the census", "elections", "the supreme court", "the united nations", "trade agreements", "shipping",
    "railways", "the steam engine", "batteries", "plastic pollution", "clean water", "vaccination campaigns",
    "space stations", "mars exploration", "comets", "the big bang", "quantum physics", "gravity",
    "magnets", "sound waves", "color theory", "painting with watercolors", "poetry", "novels",
    "film making", "podcasts", "online shopping", "password security", "email etiquette", "remote work",
    "team meetings", "project planning", "budget spreadsheets", "customer service", "small businesses",
)
"""Topics of the request templates."""


def make_requests() -> list[RawText]:
    """Every template x topic (the topic is the held-out unit)."""
    return [RawText(tpl.format(t=topic), "requests", f"topic:{topic}") for topic in REQUEST_TOPICS
            for tpl in REQUEST_TEMPLATES]


def read_text_file(path: Path) -> list[RawText]:
    """One utterance per line of a UTF-8 text file (blank lines skipped)."""
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"file:{path}: no such text file") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({e.reason})") from None
    return [RawText(t, f"file:{path.name}", f"file:{path.name}:{n}") for n, t in enumerate(lines, 1) if t.strip()]


def read_webquestions(split: str, webquestions: str | None) -> list[RawText]:
    from speechkeep.data.questions import read_questions
    from speechkeep.data.webquestions import CLEAN_EVAL_SPLITS, split_names, webquestions_file

    out = []
    for name in split_names(split):
        if name in CLEAN_EVAL_SPLITS:
            raise UsageError(f"webquestions:{name} is a clean evaluation split: it may not enter a text corpus")
        for it in read_questions(webquestions_file(name, webquestions)).items:
            out.append(RawText(it.text, f"webquestions:{name}", f"wq:{it.id}", can_hold_out=False))
    return out


def llm_texts(cfg: TextCorpusConfig, requests: list[RawText], progress: bool = True) -> tuple[list[RawText], dict]:
    """The LLM's greedy answers to a seeded sample of ``llm_prompts`` requests, split into sentences; each
    sentence's unit is its request's topic (so a held-out topic's answers are held out with it)."""
    from speechkeep.data.teacher import generate_responses

    if cfg.llm_prompts == 0 or not requests:
        return [], {}
    ranked = sorted(requests, key=lambda r: _hash01("llm:" + r.text, cfg.seed))[: cfg.llm_prompts]
    stats: dict = {}
    answers = generate_responses(cfg.llm, [r.text for r in ranked], max_new_tokens=cfg.llm_max_new_tokens,
                                 batch_size=cfg.llm_batch_size, cache_path=Path(cfg.out) / "llm_cache.jsonl",
                                 progress=progress, stats=stats)
    out = []
    for r, a in zip(ranked, answers):
        for line in a.splitlines():
            line = re.sub(r"^\s*(?:[-*#>]+|\d+[.)])\s*", "", line).replace("**", "")
            # complete sentences only: an answer cut by llm_max_new_tokens ends in a fragment
            out += [RawText(s, "llm", r.unit) for s in _SENT.split(line.strip()) if s.strip().endswith((".", "!", "?"))]
    return out, stats


# ----------------------------------------------------------------------------- the corpus
def clean_questions(webquestions: str | None = None) -> list[str]:
    """The normalized questions of the clean evaluation pool (WebQuestions devtest + heldout)."""
    from speechkeep.data.questions import read_questions
    from speechkeep.data.webquestions import CLEAN_EVAL_SPLITS, webquestions_file

    qs = []
    for name in CLEAN_EVAL_SPLITS:
        for it in read_questions(webquestions_file(name, webquestions)).items:
            q = clean_text(it.text, 1, 10 ** 6) or normalize(it.text)
            qs.append(q.rstrip("?.! "))
    return [q for q in qs if q]


def containing(texts: list[str], needles: list[str]) -> set[int]:
    """Indices of ``texts`` that contain any of ``needles`` (plain substring on the given strings)."""
    if not texts or not needles:
        return set()
    import bisect

    joined = "\n".join(texts)
    starts, pos = [], 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + 1
    hit: set[int] = set()
    for n in set(needles):
        if not n:
            continue
        i = joined.find(n)
        while i >= 0:
            hit.add(bisect.bisect_right(starts, i) - 1)
            i = joined.find(n, i + 1)
    return hit


def gather(cfg: TextCorpusConfig, progress: bool = True) -> tuple[list[RawText], dict]:
    """Every source's raw texts (LLM texts last: they answer the requests)."""
    raw: list[RawText] = []
    info: dict = {}
    requests = make_requests()
    for src in cfg.sources:
        if src == "wordnet":
            d = wordnet_path(cfg.wordnet_dir)
            got = read_wordnet(d)
            info["wordnet"] = {"path": str(d), "license": LICENSES["wordnet"]}
        elif src == "requests":
            got = requests
            info["requests"] = {"templates": len(REQUEST_TEMPLATES), "topics": len(REQUEST_TOPICS),
                                "license": LICENSES["requests"]}
        elif src == "llm":
            got, st = llm_texts(cfg, requests, progress)
            info["llm"] = {"llm": cfg.llm, "prompts": cfg.llm_prompts, "max_new_tokens": cfg.llm_max_new_tokens,
                           "generation": {k: st[k] for k in ("cached", "generated", "new_tokens", "truncated") if k in st},
                           "license": LICENSES["llm"] if cfg.llm == "bundled:smollm2-135m" else f"output of {cfg.llm}"}
        elif src.startswith("webquestions:"):
            got = read_webquestions(src.split(":", 1)[1], cfg.webquestions)
            info[src] = {"license": LICENSES["webquestions"]}
        elif src.startswith("file:"):
            p = Path(src[5:])
            got = read_text_file(p)
            info[f"file:{p.name}"] = {"path": str(p), "license": cfg.file_license}
        else:
            raise UsageError(f"sources: unknown text source {src!r}; valid: wordnet, requests, llm, "
                             "webquestions:SPLIT, file:PATH")
        raw += got
    return raw, info


def split_texts(cfg: TextCorpusConfig, raw: list[RawText], clean_pool: list[str]) -> tuple[list[dict], list[dict], dict]:
    """Clean, dedupe, hold out by unit, remove clean-pool questions and train texts containing held-out
    ones; returns (train rows, held-out rows, counts)."""
    import random

    counts: Counter = Counter()
    seen: set[str] = set()
    kept: list[tuple[str, RawText]] = []
    for r in raw:
        t = clean_text(r.text, cfg.min_words, cfg.max_words)
        if t is None:
            counts["refused_by_cleaning"] += 1
            continue
        if t in seen:
            counts["duplicates"] += 1
            continue
        seen.add(t)
        kept.append((t, r))
    texts = [t for t, _ in kept]
    bad = containing(texts, clean_pool)
    counts["containing_a_clean_webquestions_question"] = len(bad)
    kept = [k for i, k in enumerate(kept) if i not in bad]
    held = [(t, r) for t, r in kept if r.can_hold_out and _hash01(r.unit, cfg.seed) < cfg.heldout_fraction]
    held_set = {t for t, _ in held}
    train = [(t, r) for t, r in kept if t not in held_set]
    rng = random.Random(cfg.seed)
    if len(held) > cfg.max_heldout:
        held = [held[i] for i in sorted(rng.sample(range(len(held)), cfg.max_heldout))]
    drop = containing([t for t, _ in train], [t for t, _ in held])
    counts["train_containing_a_heldout_text"] = len(drop)
    train = [k for i, k in enumerate(train) if i not in drop]
    if cfg.max_per_source:
        by: dict[str, list] = {}
        for k in train:
            by.setdefault(k[1].source, []).append(k)
        train = []
        for src, ks in by.items():
            if len(ks) > cfg.max_per_source:
                ks = [ks[i] for i in sorted(rng.sample(range(len(ks)), cfg.max_per_source))]
            train += ks

    def rows(items, prefix):
        out = []
        for t, r in items:
            h = hashlib.sha1(t.encode("utf-8")).hexdigest()[:12]
            out.append({"id": f"{prefix}-{re.sub(r'[^a-z0-9]+', '', r.source.split(':')[0])}-{h}", "text": t,
                        "source": r.source})
        return out

    return rows(train, "g"), rows(held, "h"), dict(counts)


def load_tokenizer(spec: str):
    """The tokenizer of an LLM spec (no weights loaded)."""
    from transformers import AutoTokenizer

    from speechkeep.models.llm import resolve_llm_dir

    return AutoTokenizer.from_pretrained(resolve_llm_dir(spec))


OUT_NAMES = ("train.jsonl", "heldout.jsonl", "vocabulary.json", "info.json", "CARD.md", "llm_cache.jsonl")


def build_text_corpus(cfg: TextCorpusConfig) -> dict:
    """Gather, clean, split, count the vocabulary, measure its held-out coverage, write everything; returns info.json."""
    from speechkeep.io import OutputDir, atomic_path, write_json, write_jsonl
    from speechkeep.models.ctc_vocab import build_vocabulary, coverage, save_vocabulary

    for src in cfg.sources:  # usage errors before any work
        if src.startswith("webquestions:"):
            from speechkeep.data.webquestions import CLEAN_EVAL_SPLITS, split_names

            bad = [n for n in split_names(src.split(":", 1)[1]) if n in CLEAN_EVAL_SPLITS]
            if bad:
                raise UsageError(f"sources: webquestions:{bad[0]} is a clean evaluation split: it may not enter a text corpus")
        elif src.startswith("file:") and not Path(src[5:]).is_file():
            raise UsageError(f"sources: {src}: no such text file")
        elif src == "wordnet":
            wordnet_path(cfg.wordnet_dir)
    guard = OutputDir(cfg.out, "data-text", overwrite=cfg.overwrite, key="out",
                      keep=lambda p: (p / "llm_cache.jsonl").is_file(),
                      inputs=[s[5:] for s in cfg.sources if s.startswith("file:")])
    guard.check()
    command = cfg.command or " ".join(["speechkeep", *map(shlex.quote, sys.argv[1:])])
    with guard:
        t0 = time.perf_counter()
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        raw, sources = gather(cfg, cfg.progress)
        pool = clean_questions(cfg.webquestions)
        train, held, removed = split_texts(cfg, raw, pool)
        if not train:
            raise DataError(f"data text: no training text left from sources {cfg.sources}")
        tok = load_tokenizer(cfg.llm)
        by_src = dict(sorted(Counter(r["source"] for r in train).items()))
        vocab = build_vocabulary(tok, [r["text"] for r in train], min_count=cfg.vocab_min_count,
                                 fallback_chars=cfg.fallback_chars, tokenizer_spec=cfg.llm, sources=by_src)
        cov = coverage(tok, vocab.token_ids, [r["text"] for r in held]).as_dict() if held else None
        out = Path(cfg.out)
        write_jsonl(out / "train.jsonl", train)
        write_jsonl(out / "heldout.jsonl", held)
        save_vocabulary(vocab, out / "vocabulary.json", heldout_coverage=cov)
        wq = sum(n for s, n in by_src.items() if s.startswith("webquestions:"))
        info = {
            "command": command, "config": _config_dict(cfg), "sources": sources,
            "train_texts": len(train), "train_by_source": by_src,
            "train_outside_webquestions": round(1 - wq / len(train), 4),
            "heldout_texts": len(held), "heldout_by_source": dict(sorted(Counter(r["source"] for r in held).items())),
            "removed": removed, "clean_pool_questions": len(pool),
            "vocabulary": {"size": len(vocab.token_ids), "from_sample": vocab.from_sample,
                           "fallback_chars": vocab.fallback_chars, "min_count": vocab.min_count,
                           "sample_tokens": vocab.sample_tokens},
            "heldout_coverage": cov, "seconds": round(time.perf_counter() - t0, 1),
        }
        write_json(out / "info.json", info)
        with atomic_path(out / "CARD.md") as tmp:
            tmp.write_text(render_text_card(info), encoding="utf-8")
    return info


def _config_dict(cfg) -> dict:
    from speechkeep.config import config_to_dict

    return config_to_dict(cfg)


def render_text_card(info: dict) -> str:
    """CARD.md of a text corpus: command, sources with licenses and counts, held-out rule, vocabulary and coverage."""
    rows = "\n".join(f"| `{s}` | {info['train_by_source'].get(s, 0)} "
                     f"| {info['heldout_by_source'].get(s, 0)} | {v.get('license', '')} |"
                     for s, v in info["sources"].items())
    cov = info.get("heldout_coverage") or {}
    voc = info["vocabulary"]
    removed = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(info["removed"].items())) or "none"
    cov_line = (f"- Held-out token coverage: **{100 * cov['token_coverage']:.2f}%** of {cov['tokens']:,} tokens "
                f"({cov['texts_fully_covered']:,} of {cov['texts']:,} texts fully covered); words that cannot be "
                f"written even with the fallback: {cov['n_unwritable_words']}."
                if cov else "- No held-out text: coverage not measured.")
    return f"""# General English text corpus

Written by `speechkeep data text` ({info['seconds']} s):
```
{info['command']}
```

| source | training texts | held-out texts | license |
| --- | --- | --- | --- |
{rows}

- Training texts: {info['train_texts']:,} ({100 * info['train_outside_webquestions']:.1f}% from outside WebQuestions).
- General held-out set (`heldout.jsonl`): {info['heldout_texts']:,} texts, held out by unit (a WordNet synset, a
  request topic, the prompt an LLM text answers); no training text contains a held-out text.
- No text contains a question of the clean WebQuestions pool (`devtest` + `heldout`, {info['clean_pool_questions']:,}
  questions, normalized). Removed: {removed}.
- Vocabulary (`vocabulary.json`, tokenizer of `{info['config']['llm']}`): {voc['size']:,} tokens, {voc['from_sample']:,} of them
  occurring at least {voc['min_count']} time(s) in the training texts ({voc['sample_tokens']:,} tokens), the rest the fallback
  (every token of at most {voc['fallback_chars']} character(s), with and without the leading space), so any word can be spelled.
{cov_line}
"""
