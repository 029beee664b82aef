"""Every item of the bad-input corpus (``tests/badinputs``) through every command that can receive it.

For each (item, command): the exit code (2: usage error, 1: data error, 0: a supported input, or a
``--skip-bad`` skip that is counted and listed), one error line naming the file, line, option or key
and the problem, no traceback, no partial or empty output left, and nothing outside the output
directory touched (the workspace, the inputs and the models are compared before and after).

Tiny random models, in-process (``speechkeep.cli.main``): the whole walk takes about a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "badinputs"))
from make_corpus import AUDIO, write_corpus  # noqa: E402

from speechkeep.cli import main  # noqa: E402

WRITERS = ["build", "data build", "train", "eval", "importance", "deactivate", "importance-compare", "heatmap",
           "align", "demo", "reproduce"]
COMMANDS = WRITERS + ["ask", "models"]

BASE = {
    "build": ["build", "{config}", "llm={llm}", "speech_encoder={wh}", "adaptor.hidden_size=16", "--out", "{out}"],
    "train": ["train", "{config}", "model.llm={llm}", "model.speech_encoder={wh}", "model.adaptor.hidden_size=16",
              "init_from=none", "max_steps=1", "data.batch_size=2", "output_dir={out}", "data.train={data}"],
    "eval": ["eval", "--model", "{model}", "--data", "{data}", "--out", "{out}", "--tasks", "t2t", "s2t",
             "--max-new-tokens", "1"],
    "importance": ["importance", "--model", "{model}", "--data", "{data}", "--out", "{out}", "--fraction", "1",
                   "--input", "speech"],
    "deactivate": ["deactivate", "--model", "{model}", "--importance", "{imp}", "--data", "{data}", "--input", "speech",
                   "--fraction", "0.1", "--out", "{out}"],
    "heatmap": ["heatmap", "--importance", "{imp}", "--layer", "1", "--out", "{out}"],
    "importance-compare": ["importance-compare", "{imp}", "{imp2}", "--out", "{out}"],
    "ask": ["ask", "--model", "{model}", "--max-new-tokens", "1", "--text", "what is the capital of france?"],
    "data build": ["data", "build", "--questions", "{questions}", "--out", "{out}", "--no-features", "--no-progress",
                   "--workers", "1"],
    "align": ["align", "{config}", "out={out}", "corpus.sources=[{questions}]", "webquestions={wq}",
              "ctc.model.llm={llm}", "ctc.model.speech_encoder={wh}", "corpus.max_texts=1", "n_eval=1",
              "eval_voice=espeak-us-f2"],
    "demo": ["demo", "{config}", "out={out}", "webquestions={wq}", "llm={llm}", "speech_encoder={wh}", "n_train=1",
             "n_eval=1", "eval_voice=espeak-us-f2"],
    "reproduce": ["reproduce", "{config}", "out={out}", "llm={llm}", "speech_encoder={wh}", "train_questions={questions}",
                  "eval_questions={questions}", "n_train=1", "eval_limit=1", "teacher=false", "train_voices=[espeak-us-f2]",
                  "eval_voice=espeak-us-m3", "steps=1", "only=[data/eval]",  # if it ran: one small cell
                  "noft_tasks=[t2t, ppl]"],  # the tiny Whisper {wh} cannot transcribe for a cascade
    "models": ["models"],
}


@dataclass
class Case:
    item: str
    command: str
    code: int
    must: list[str] = field(default_factory=list)
    """Substrings of the error line (the file/line/key and the problem)."""
    slots: dict = field(default_factory=dict)
    """Placeholder values replacing the command's defaults (data, model, questions, ...)."""
    extra: list[str] = field(default_factory=list)
    """Arguments appended (a later override or flag wins)."""
    out: str = "fresh"
    """fresh | nonempty | an out-directory kind (cwd, home, ...) | a placeholder (e.g. '{art}/run_lora')."""
    check: str | None = None

    @property
    def id(self) -> str:
        return f"{self.item}-{self.command.replace(' ', '_')}"


CASES: list[Case] = []


def add(item, commands, code, must=(), **kw):
    for c in commands:
        CASES.append(Case(item, c, code, list(must), **kw))


# ---------------------------------------------------------------- audio: every format, every bad kind
MANIFEST_CMDS = ["eval", "train", "importance", "deactivate"]
for name, (fname, ok) in AUDIO.items():
    code = 0 if ok else 1
    must = [] if ok else [fname]
    add(f"audio-{name}", MANIFEST_CMDS, code, must, slots={"data": "{c}/manifests/audio-" + name + "/manifest.jsonl"})
    add(f"audio-{name}", ["data build"], code, [f"audio-{name}.jsonl:2", fname] if not ok else [],
        slots={"questions": "{c}/questions/audio-" + name + ".jsonl"})
    if not ok:
        add(f"audio-{name}-skip-bad", ["data build"], 0, slots={"questions": "{c}/questions/audio-" + name + ".jsonl"},
            extra=["--skip-bad"], check="skipped1")
    add(f"audio-{name}", ["ask"], 2 if name == "missing" else code, must, extra=["--audio", "{c}/audio/" + fname])

# ---------------------------------------------------------------- question files
QUESTIONS = {  # file -> (error substrings, skippable line by line with --skip-bad)
    "empty.jsonl": (["empty.jsonl", "empty"], False),
    "blank.jsonl": (["blank.jsonl", "empty"], False),
    "malformed_line.jsonl": (["malformed_line.jsonl:2", "malformed JSON"], True),
    "truncated_line.jsonl": (["truncated_line.jsonl:2", "malformed JSON"], True),
    "truncated_array.json": (["truncated_array.json:2", "malformed JSON"], False),
    "duplicate_ids.jsonl": (["duplicate_ids.jsonl:3", "duplicate id 'g1'"], True),
    "missing_text.jsonl": (["missing_text.jsonl:2", "missing text"], True),
    "missing_id.jsonl": (["missing_id.jsonl:2", "missing id"], True),
    "empty_text.jsonl": (["empty_text.jsonl:2", "empty text"], True),
    "wrong_types.jsonl": (["wrong_types.jsonl:2", "answers must be"], True),
    "not_object.jsonl": (["not_object.jsonl:2", "expected a JSON object"], True),
    "nonutf8.jsonl": (["nonutf8.jsonl:2", "not UTF-8"], True),
}
for fname, (must, skippable) in QUESTIONS.items():
    q = "{c}/questions/" + fname
    stem = fname.rsplit(".", 1)[0]
    add(f"questions-{stem}", ["data build", "align"], 1, must, slots={"questions": q})
    add(f"questions-{stem}", ["eval"], 1, must, slots={"data": q})
    add(f"questions-{stem}", ["demo"], 1, ["trainmodel.json"] + must[1:], slots={"wq": "{c}/wq_bad/" + stem})
    if skippable:
        add(f"questions-{stem}-skip-bad", ["data build"], 0, slots={"questions": q}, extra=["--skip-bad"],
            check="skipped1")
add("questions-missing_file", ["data build"], 2, ["no_such_questions.jsonl", "no such file"],
    slots={"questions": "{c}/questions/no_such_questions.jsonl"})
add("questions-missing_file", ["eval"], 2, ["no_such_questions.jsonl", "not found"],
    slots={"data": "{c}/questions/no_such_questions.jsonl"})
add("questions-missing_file", ["align"], 2, ["no_such_questions.jsonl", "no such questions file"],
    slots={"questions": "{c}/questions/no_such_questions.jsonl"})
add("questions-no_answers", ["eval"], 0, slots={"data": "{c}/questions/no_answers.jsonl"}, check="without_answers")
add("questions-no_answers", ["data build"], 0, slots={"questions": "{c}/questions/no_answers.jsonl"})

# ---------------------------------------------------------------- manifests
MANIFESTS = {
    "empty": ["empty/manifest.jsonl", "no rows"],
    "malformed_line": ["malformed_line/manifest.jsonl:2", "malformed JSON"],
    "truncated_line": ["truncated_line/manifest.jsonl:2", "malformed JSON"],
    "duplicate_ids": ["duplicate_ids/manifest.jsonl:3", "duplicate id"],
    "missing_field": ["missing_field/manifest.jsonl:2", "missing field"],
    "wrong_type": ["wrong_type/manifest.jsonl:2", "duration"],
    "unknown_field": ["unknown_field/manifest.jsonl:2", "unknown field"],
    "not_object": ["not_object/manifest.jsonl:2", "expected a JSON object"],
    "negative_duration": ["negative_duration/manifest.jsonl:2", "positive"],
    "nonutf8": ["nonutf8/manifest.jsonl:2", "not UTF-8"],
}
for name, must in MANIFESTS.items():
    add(f"manifest-{name}", MANIFEST_CMDS, 1, must, slots={"data": "{c}/manifests/" + name + "/manifest.jsonl"})
add("manifest-missing_file", ["train"], 2, ["data.train", "no such file"], slots={"data": "{c}/manifests/none.jsonl"})
add("manifest-missing_file", ["eval"], 2, ["none.jsonl", "not found"], slots={"data": "{c}/manifests/none.jsonl"})
add("manifest-missing_file", ["importance", "deactivate"], 2, ["--data", "none.jsonl"],
    slots={"data": "{c}/manifests/none.jsonl"})
add("manifest-no_responses", ["train"], 1, ["'qa'", "no usable examples"],
    slots={"data": "{c}/manifests/no_responses/manifest.jsonl"})
add("manifest-no_responses", ["importance", "deactivate"], 1, ["no_responses/manifest.jsonl", "no rows with responses"],
    slots={"data": "{c}/manifests/no_responses/manifest.jsonl"})
add("manifest-no_responses", ["eval"], 0, slots={"data": "{c}/manifests/no_responses/manifest.jsonl"})
add("manifest-no_answers", ["eval"], 0, slots={"data": "{c}/manifests/no_answers/manifest.jsonl"},
    check="without_answers")
add("manifest-no_answers", ["train", "importance", "deactivate"], 0,
    slots={"data": "{c}/manifests/no_answers/manifest.jsonl"})

# ---------------------------------------------------------------- config files, keys, types, ranges
CONFIG_CMDS = ["build", "train", "align", "demo", "reproduce"]
for fname, must in {"malformed.yaml": ["malformed.yaml:", "invalid YAML"],
                    "list.yaml": ["list.yaml", "must be a mapping"],
                    "unknown_key.yaml": ["unknown_key.yaml", "unknown config key 'nonsense_key'"],
                    "nonutf8.yaml": ["nonutf8.yaml", "not UTF-8"],
                    "missing.yaml": ["missing.yaml", "not found"]}.items():
    add(f"config-{fname.split('.')[0]}", CONFIG_CMDS, 2, must, slots={"config": "{c}/configs/" + fname})

OVERRIDES = {  # command -> [(override, substrings)]
    "build": [("adaptor.stack_frames=0", ["adaptor.stack_frames", ">= 1", "got 0"]),
              ("adaptor.hidden_size=wide", ["adaptor.hidden_size", "cannot read 'wide' as int"]),
              ("adaptr.k=3", ["unknown config key 'adaptr'"]),
              ("encode_mode=fast", ["encode_mode", "not one of"])],
    "train": [("lora.r=0", ["lora.r", ">= 1"]), ("data.batch_size=0", ["data.batch_size", ">= 1"]),
              ("optim.lr=-1", ["optim.lr", "> 0"]), ("optim.lr=nan", ["optim.lr", "got nan"]),
              ("max_steps=-1", ["max_steps", ">= 1"]), ("max_steps=many", ["max_steps", "cannot read 'many'"]),
              ("optim.warmup_ratio=1.5", ["optim.warmup_ratio", "in [0, 1]"]), ("seed=-1", ["seed", ">= 0"]),
              ("data.tasks={qa: -1}", ["data.tasks.qa", ">= 0"]), ("data.tasks={tts: 1}", ["unknown task 'tts'"]),
              ("strategy=magic", ["unknown strategy 'magic'"]), ("lora.dropout=1", ["lora.dropout", "in [0, 1)"]),
              ("layer_lr.lam=2", ["layer_lr.lam", "in [0, 1]"]), ("optmi.lr=1", ["unknown config key 'optmi'"]),
              ("data.limit=-1", ["data.limit", ">= 1"])],
    "align": [("ctc.batch_size=0", ["ctc.batch_size", ">= 1"]), ("n_eval=0", ["n_eval", ">= 1"]),
              ("corpus.workers=0", ["corpus.workers", ">= 1"]), ("ctc.lr=fast", ["ctc.lr", "cannot read"]),
              ("eval_tasks=[t2t, magic]", ["eval_tasks", "magic"]), ("eval_voice=nobody", ["nobody"])],
    "demo": [("n_train=0", ["n_train", ">= 1"]), ("lr=-1", ["lr", "> 0"]), ("max_steps=x", ["max_steps", "cannot read"]),
             ("strategy=magic", ["unknown strategy 'magic'"]), ("extra={nonsense: 1}", ["unknown config key 'nonsense'"]),
             ("train_minutes=0", ["train_minutes", "> 0"])],
    "reproduce": [("steps=0", ["steps", ">= 1"]), ("budget_minutes=-1", ["budget_minutes", "> 0"]),
                  ("cells=[magic]", ["unknown cell 'magic'"]), ("only=[magic]", ["'magic' matches no cell"]),
                  ("eval_voice=nobody", ["nobody"]), ("preset=every", ["preset", "not one of"]),
                  ("train_extra=[optmi.lr=1]", ["unknown config key 'optmi'"]), ("full_lr=0", ["full_lr", "> 0"])],
}
FLAGS = {  # command -> [(args, substrings)]
    "eval": [(["--batch-size", "0"], ["--batch-size", ">= 1"]), (["--max-new-tokens", "0"], ["--max-new-tokens", ">= 1"]),
             (["--limit", "-1"], ["--limit", ">= 1"]), (["--limit", "x"], ["--limit", "cannot read 'x'"]),
             (["--tasks", "magic"], ["--tasks", "magic"]), (["--baseline", "{c}/emptydir"], ["--baseline", "metrics.json"])],
    "importance": [(["--fraction", "1.5"], ["--fraction", "in (0, 1]"]), (["--fraction", "0"], ["--fraction", "in (0, 1]"]),
                   (["--fraction", "-0.5"], ["--fraction", "in (0, 1]"]), (["--limit", "-1"], ["--limit", ">= 1"]),
                   (["--batch-size", "0"], ["--batch-size", ">= 1"]), (["--seed", "-1"], ["--seed", ">= 0"])],
    "deactivate": [(["--fraction", "1"], ["--fraction", "in (0, 1)"]), (["--fraction", "0"], ["--fraction", "in (0, 1)"]),
                   (["--batch-size", "0"], ["--batch-size", ">= 1"]), (["--limit", "0"], ["--limit", ">= 1"])],
    "heatmap": [(["--top", "0"], ["--top", "in (0, 1]"]), (["--rows", "1.5"], ["--rows", "in (0, 1]"]),
                (["--layer", "-1"], ["--layer", ">= 0"])],
    "ask": [(["--max-new-tokens", "0"], ["--max-new-tokens", ">= 1"]), (["--text", " "], ["--text", "empty"])],
    "data build": [(["--limit", "0"], ["--limit", ">= 1"]), (["--workers", "0"], ["--workers", ">= 1"]),
                   (["--max-new-tokens", "0"], ["--max-new-tokens", ">= 1"]), (["--seed", "-2"], ["--seed", ">= 0"]),
                   (["--voices", "nobody"], ["unknown voice 'nobody'"])],
    "build": [(["--seed", "-1"], ["--seed", ">= 0"])],
    "importance-compare": [(["--labels", "just-one"], ["1 labels for 2 runs"])],
    "models": [(["--prepare"], ["--prepare", "at least one"])],
}
for cmd, items in OVERRIDES.items():
    for ov, must in items:
        add(f"override-{ov.split('=')[0]}", [cmd], 2, must, extra=[ov])
for cmd, items in FLAGS.items():
    for args, must in items:
        add(f"flag{args[0]}={args[1] if len(args) > 1 else ''}", [cmd], 2, must, extra=list(args))
add("baseline-not_json", ["eval"], 1, ["list.yaml", "metrics.json"], extra=["--baseline", "{c}/configs/list.yaml"])

# ---------------------------------------------------------------- model specs that do not exist, damaged models
SPECS = {"bundled:nope": ["bundled", "nope"], "{ws}/no/such/model": ["no/such/model"],
         "{ws}/missing.gguf": ["missing.gguf", "not found"], "{c}/emptydir": ["emptydir", "config.json"]}
for spec, must in SPECS.items():
    item = "spec-" + Path(spec).name.replace(":", "_")
    add(item, ["build"], 2, must, extra=[f"llm={spec}"])
    add(item, ["train"], 2, must, extra=[f"model.llm={spec}"])
    add(item, ["eval", "ask", "importance", "deactivate"], 2, must, slots={"model": spec})
    add(item, ["heatmap"], 2, ["--before"] + must, extra=["--before", spec, "--after", "{model}"])
    add(item, ["data build"], 2, must, extra=["--teacher", spec])
    add(item, ["align"], 2, must, extra=[f"ctc.model.llm={spec}"])
    add(item, ["demo"], 2, must, extra=[f"llm={spec}"])
    add(item, ["models"], 2, must, extra=["--prepare", spec])
add("spec-encoder_nope", ["build"], 2, ["speech encoder", "nope"], extra=["speech_encoder=bundled:nope"])
add("spec-encoder_nope", ["train"], 2, ["speech encoder", "nope"], extra=["model.speech_encoder=bundled:nope"])
add("spec-encoder_nope", ["demo"], 2, ["speech encoder", "nope"], extra=["speech_encoder=bundled:nope"])
add("spec-encoder_nope", ["data build"], 2, ["speech encoder", "nope"], extra=["--features", "--speech-encoder", "bundled:nope"])

DAMAGED = {"model_trunc": (1, ["adaptor.safetensors", "truncated"]), "model_badcfg": (1, ["speechkeep.json", "not a valid"]),
           "model_foreign": (1, ["adaptor.safetensors", "do not fit"]), "run_nomodel": (2, ["run_nomodel"])}
for name, (code, must) in DAMAGED.items():
    spec = "{art}/" + name
    add(name, ["eval", "ask", "importance", "deactivate"], code, must, slots={"model": spec})
    add(name, ["heatmap"], code, must, extra=["--before", "{model}", "--after", spec])
    add(name, ["train"], code, must, extra=[f"init_from={spec}"])

# ---------------------------------------------------------------- importance runs: another model's, damaged, not one
add("imp_other", ["deactivate"], 2, ["do not fit"], slots={"imp": "{art}/imp_other"})
add("imp_other", ["importance-compare"], 2, ["different architectures"], slots={"imp2": "{art}/imp_other"})
add("imp_other", ["train"], 2, ["3 layers", "the model 2"], extra=["strategy=layer_lr", "layer_lr.importance={art}/imp_other"])
add("imp_trunc", ["deactivate", "heatmap"], 1, ["importance.safetensors", "truncated"], slots={"imp": "{art}/imp_trunc"})
add("imp_badsum", ["importance-compare"], 1, ["summary.json"], slots={"imp2": "{art}/imp_badsum"})
add("imp_badsum", ["train"], 1, ["summary.json"], extra=["strategy=layer_lr", "layer_lr.importance={art}/imp_badsum"])
add("imp_none", ["deactivate", "heatmap"], 2, ["emptydir", "not an importance run"], slots={"imp": "{c}/emptydir"})
add("imp_none", ["importance-compare"], 2, ["emptydir", "not an importance run"], slots={"imp2": "{c}/emptydir"})
add("imp_none", ["train"], 2, ["emptydir", "not an importance run"],
    extra=["strategy=layer_lr", "layer_lr.importance={c}/emptydir"])

# ---------------------------------------------------------------- run directories of another strategy, damaged runs
add("run_lora-other_strategy", ["train"], 2, ["strategy=lora", "strategy=adaptor"], out="{art}/run_lora",
    extra=["resume=true"])
add("run_lora-no_resume", ["train"], 2, ["checkpoint", "resume=true"], out="{art}/run_lora", extra=["strategy=lora"])
add("run_trunc_ckpt", ["train"], 1, ["trainable.safetensors", "truncated"], out="{art}/run_trunc_ckpt",
    extra=["strategy=lora", "lora.r=2", "resume=true"])

# ---------------------------------------------------------------- output directories no command may use
OUT_KINDS = {"cwd": ["current directory"], "parent_of_cwd": ["parent of the current directory"],
             "home": ["home directory"], "repo": ["repository root"], "input": ["input"],
             "file": ["not a directory"], "file_parent": ["not a directory"], "nonempty": ["not empty"],
             "readonly": ["writ"]}
for kind, must in OUT_KINDS.items():
    add(f"out-{kind}", WRITERS, 2, must, out=kind)
add("out-cwd-overwrite", ["build"], 2, ["current directory"], out="cwd", extra=["--overwrite"])
add("out-nonempty-overwrite", ["build", "eval"], 0, out="nonempty", extra=["--overwrite"], check="precious")
add("out-nonempty-overwrite", ["train"], 0, out="nonempty", extra=["overwrite=true"], check="precious")

INPUT_AS_OUT = {"build": "{llm}", "data build": "{c}/questions", "train": "{c}/manifests/good", "eval": "{c}/manifests/good",
                "importance": "{c}/manifests/good", "deactivate": "{imp}", "importance-compare": "{imp}",
                "heatmap": "{imp}", "align": "{c}/wq", "demo": "{c}/wq", "reproduce": "{c}/questions"}


# ---------------------------------------------------------------- the workspace
def _run(argv: list[str]) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code or 0)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_llm_dir, tiny_whisper_dir):
    """The corpus plus the artefacts some items need (a model, importance runs, a LoRA run, damaged copies)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("badinputs_cache")
    mp.setenv("SPEECHKEEP_CACHE", str(cache))  # features computed by eval/train land here, not in ~/.cache
    mp.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path_factory.mktemp("badinputs")
    c = write_corpus(root / "corpus")
    art = root / "art"
    llm, wh = str(tiny_llm_dir), str(tiny_whisper_dir)
    good = c / "manifests" / "good" / "manifest.jsonl"
    assert _run(["build", f"llm={llm}", f"speech_encoder={wh}", "adaptor.hidden_size=16", "--out", art / "model"]) == 0
    for out, inp in (("imp", "text"), ("imp2", "speech")):
        assert _run(["importance", "--model", art / "model", "--data", good, "--out", art / out, "--fraction", "1",
                     "--input", inp]) == 0
    # another model: 3 layers of width 48 (same tokenizer)
    tok = AutoTokenizer.from_pretrained(llm)
    torch.manual_seed(1)
    other = root / "other_llm"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                 tie_word_embeddings=True)).save_pretrained(other)
    tok.save_pretrained(other)
    assert _run(["build", f"llm={other}", f"speech_encoder={wh}", "adaptor.hidden_size=16", "--out", art / "model_other"]) == 0
    assert _run(["importance", "--model", art / "model_other", "--data", good, "--out", art / "imp_other",
                 "--fraction", "1"]) == 0
    assert _run(["train", f"model.llm={llm}", f"model.speech_encoder={wh}", "model.adaptor.hidden_size=16",
                 "init_from=none", "strategy=lora", "lora.r=2", "max_steps=1", "data.batch_size=2",
                 f"output_dir={art / 'run_lora'}", f"data.train={good}"]) == 0

    def damaged(src: str, name: str, file: str, data: bytes | None = None) -> None:
        shutil.copytree(art / src, art / name)
        p = art / name / file
        p.write_bytes(data if data is not None else p.read_bytes()[: p.stat().st_size // 2])

    damaged("model", "model_trunc", "adaptor.safetensors")
    damaged("model", "model_badcfg", "speechkeep.json", b"{not json")
    damaged("model", "model_foreign", "adaptor.safetensors", (art / "model_other" / "adaptor.safetensors").read_bytes())
    damaged("imp", "imp_trunc", "importance.safetensors")
    damaged("imp", "imp_badsum", "summary.json", b"{")
    damaged("run_lora", "run_trunc_ckpt", "checkpoint/trainable.safetensors")
    shutil.copytree(art / "run_lora", art / "run_nomodel", ignore=shutil.ignore_patterns("model", "checkpoint"))

    for d, f in (("cwd", "keep.txt"), ("home", "keep.txt"), ("repo", "README.md"), ("repo/.git", "HEAD")):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / f).write_text("precious\n")
    (root / "afile.txt").write_text("precious\n")
    (root / "outs").mkdir()
    ro = root / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    readonly = str(ro / "out")
    if os.access(ro, os.W_OK):  # root ignores permissions: a path the kernel refuses to create instead
        readonly = "/sys/speechkeep-badinputs-test/out" if Path("/sys").is_dir() else None
    yield {"root": root, "c": c, "art": art, "llm": llm, "wh": wh, "readonly": readonly,
           "values": {"ws": str(root), "c": str(c), "art": str(art), "llm": llm, "wh": wh,
                      "model": str(art / "model"), "imp": str(art / "imp"), "imp2": str(art / "imp2"),
                      "data": str(good), "questions": str(c / "questions" / "good.jsonl"), "wq": str(c / "wq"),
                      "config": None}}
    ro.chmod(0o755)
    mp.undo()


def _snapshot(roots: list[Path], skip: list[Path]) -> dict[str, tuple]:
    """(size, mtime, inode) of every file and directory under ``roots``, except under ``skip``."""
    out = {}
    skip_s = [str(s.resolve()) for s in skip]
    for r in roots:
        for dirpath, dirnames, filenames in os.walk(r):
            if any(dirpath == s or dirpath.startswith(s + os.sep) for s in skip_s):
                dirnames[:] = []
                continue
            for n in filenames + dirnames:
                p = os.path.join(dirpath, n)
                if any(p == s or p.startswith(s + os.sep) for s in skip_s):
                    continue
                st = os.lstat(p)
                out[p] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def _fill(text: str, vals: dict) -> str:
    """Replace the {placeholders} we know (a YAML mapping such as {qa: -1} stays as it is)."""
    return re.sub(r"\{(\w+)\}", lambda m: str(vals[m.group(1)]) if vals.get(m.group(1)) is not None else m.group(0), text)


def _argv(case: Case, values: dict, out: str) -> list[str]:
    vals = {**values, **{k: _fill(v, values) for k, v in case.slots.items()}, "out": out}
    argv = []
    for a in BASE[case.command]:
        if a == "{config}":
            if vals.get("config"):
                argv.append(vals["config"])
            continue
        argv.append(_fill(a, vals))
    return argv + [_fill(a, vals) for a in case.extra]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ws, monkeypatch, capsys):
    root, values = ws["root"], ws["values"]
    cwd = root / "cwd"
    monkeypatch.chdir(cwd)
    if case.out == "fresh":
        out = str(root / "outs" / case.id)
    elif case.out == "nonempty":
        out = str(root / "outs" / case.id)
        Path(out).mkdir()
        (Path(out) / "precious.txt").write_text("precious\n")
    elif case.out == "cwd":
        out = "."
    elif case.out == "parent_of_cwd":
        out = ".."
    elif case.out == "home":
        monkeypatch.setenv("HOME", str(root / "home"))
        out = str(root / "home")
    elif case.out == "repo":
        out = str(root / "repo")
    elif case.out == "input":
        out = _fill(INPUT_AS_OUT[case.command], values)
    elif case.out == "file":
        out = str(root / "afile.txt")
    elif case.out == "file_parent":
        out = str(root / "afile.txt" / "sub")
    elif case.out == "readonly":
        if ws["readonly"] is None:
            pytest.skip("no read-only location available")
        out = ws["readonly"]
    else:
        out = _fill(case.out, values)
    argv = _argv(case, values, out)
    out_path = (cwd / out).resolve() if not Path(out).is_absolute() else Path(out)
    out_existed = out_path.exists()
    watched = [root, Path(ws["llm"]), Path(ws["wh"])]
    skip = [root / "outs"] + ([out_path] if case.code == 0 or not out_existed else [])
    before = _snapshot(watched, skip)
    out_before = _snapshot([out_path], []) if out_existed and out_path.is_dir() else None
    capsys.readouterr()

    code = _run(argv)
    cap = capsys.readouterr()
    err_lines = [l for l in cap.err.splitlines() if l.startswith("speechkeep: error:")]
    assert "Traceback" not in cap.err, cap.err
    assert code == case.code, f"{' '.join(argv)}\nexit {code}\n{cap.err[-2000:]}"
    if case.code:
        assert len(err_lines) == 1, cap.err
        for m in case.must:
            assert m in err_lines[0], f"{m!r} not in: {err_lines[0]}"
        if out_existed:  # an existing output directory (a run, cwd, ...) is exactly as it was
            if out_before is not None:
                assert _snapshot([out_path], []) == out_before, f"{out_path} changed"
        else:  # nothing left behind: no partial and no empty directory
            assert not out_path.exists(), f"left behind: {sorted(p.name for p in out_path.iterdir())}"
    after = _snapshot(watched, skip)
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, f"touched outside the output directory: {changed[:5]}"

    if case.check == "skipped1":
        skipped = (out_path / "skipped.jsonl").read_text().splitlines()
        assert len(skipped) == 1 and "skipped 1 bad input" in cap.out
    elif case.check == "without_answers":
        m = json.loads((out_path / "metrics.json").read_text())
        assert m["without_answers"]["n"] == 1 and m["t2t"]["n"] == 1, m
    elif case.check == "precious":
        assert (out_path / "precious.txt").read_text() == "precious\n"
    if case.code == 0 and (out_path / "metrics.json").is_file():
        json.loads((out_path / "metrics.json").read_text(),
                   parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}"))


def test_corpus_covers_every_command():
    """The README's count: distinct inputs x commands walked (see the Reliability section)."""
    assert {c.command for c in CASES} == set(COMMANDS)
    items = {c.item for c in CASES}
    print(f"\nbad-input corpus: {len(items)} inputs, {len(COMMANDS)} commands, {len(CASES)} (input, command) cases")
    assert len(CASES) >= 300
