"""``speechkeep align``: the alignment stage end to end, and the shippable aligned front-end.

1. the multi-voice transcription corpus (:mod:`speechkeep.align.corpus`);
2. the held-out evaluation set: WebQuestions ``devtest`` questions spoken by a held-out voice;
3. CTC training of the adaptor onto the LLM's vocabulary (:mod:`speechkeep.align.ctc`);
4. evaluation of the aligned SpeechLLM: transcription WER (the CTC transcript, and the LLM asked to
   transcribe), spoken QA (S2T) next to text QA (T2T) on the same questions and the Whisper cascade;
5. with ``export_to``: the adaptor in fp16 + its config + ``CARD.md`` (command, data, steps, time,
   metrics) — the form in which ``speechkeep/checkpoints/`` ships it.

Every stage is resumable: a re-run reuses the corpus, the features, the CTC checkpoint and a
finished model.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from speechkeep.config import Checked, ranged
from speechkeep.align.corpus import AlignCorpusConfig
from speechkeep.align.ctc import CTCAlignConfig


@dataclass
class AlignConfig(Checked):
    """Options of ``speechkeep align``."""

    out: str = "runs/align"
    """Run directory: corpus/, eval/, ctc/, eval_results/, report.json."""
    corpus: AlignCorpusConfig = field(default_factory=lambda: AlignCorpusConfig(out=""))
    """The alignment corpus (corpus.out empty: <out>/corpus)."""
    ctc: CTCAlignConfig = field(default_factory=lambda: CTCAlignConfig(manifest="", out=""))
    """The CTC stage (manifest and out empty: the corpus and <out>/ctc)."""
    webquestions: str | None = None
    """Directory with the eval_questions file; None: $SPEECHKEEP_WEBQUESTIONS, else the copy shipped in the package."""
    eval_questions: str = "devtest.json"
    """Held-out questions file (inside webquestions) spoken for evaluation."""
    n_eval: int | None = ranged(None, ge=1)
    """Evaluate on the first N held-out questions (None: all)."""
    eval_voice: str = "piper-joe-high"
    """Held-out voice of the evaluation set (never in the corpus)."""
    eval_tasks: list[str] = field(default_factory=lambda: ["t2t", "s2t", "cascade", "asr"])
    """Evaluation tasks for the aligned model (see speechkeep eval)."""
    measurement: str | None = None
    """measure.json of `benchmarks/measure_frontend.py` run on this run's model (ctc/model): its numbers (S2T vs the
    cascade and the CTC WER on the 1,205 clean WebQuestions questions, the WER on the general held-out set, the bars)
    go into report.json and the exported card."""
    export_to: str | None = None
    """Also write the shippable checkpoint (adaptor, config, CARD.md) to this directory."""
    export_storage: Literal["fp16", "int8"] = "fp16"
    """How the exported adaptor is stored: fp16, or int8 with a scale per row (matrices; half the size of fp16),
    see speechkeep.models.weight_storage."""
    command: str | None = None
    """The command line recorded on the card (default: this process's own)."""
    overwrite: bool = False
    """Write into an out (or export_to) directory that is not empty and not a previous `speechkeep align` output."""


def _filled(cfg: AlignConfig) -> AlignConfig:
    out = Path(cfg.out)
    cfg.corpus.out = cfg.corpus.out or str(out / "corpus")
    cfg.corpus.held_out_voices = sorted(set(cfg.corpus.held_out_voices) | {cfg.eval_voice})
    cfg.ctc.manifest = cfg.ctc.manifest or str(Path(cfg.corpus.out) / "manifest.jsonl")
    cfg.ctc.out = cfg.ctc.out or str(out / "ctc")
    cfg.ctc.eval_manifest = cfg.ctc.eval_manifest or str(out / "eval" / "manifest.jsonl")
    cfg.corpus.speech_encoder = cfg.ctc.model.speech_encoder
    return cfg


def build_eval_set(cfg: AlignConfig, progress: bool = True) -> Path:
    """Held-out questions spoken by the held-out voice, variable-length features cached."""
    from speechkeep.data.build import DataBuildConfig, build_dataset
    from speechkeep.data.webquestions import webquestions_file

    out = Path(cfg.out) / "eval"
    if (out / "manifest.jsonl").is_file():
        return out / "manifest.jsonl"
    rep = build_dataset(DataBuildConfig(
        questions=str(webquestions_file(cfg.eval_questions, cfg.webquestions)), out=str(out), limit=cfg.n_eval, voices=[cfg.eval_voice],
        split="eval", features=True, speech_encoder=cfg.ctc.model.speech_encoder, encode_mode="variable",
        deterministic_tts=True, progress=progress))
    return rep.manifest


def _check_align(cfg: AlignConfig) -> None:
    """What can be checked before any work: sources, held-out questions, voices, tasks, model specs."""
    from speechkeep.data.questions import read_questions
    from speechkeep.data.tts import VOICES, is_voice
    from speechkeep.errors import UsageError
    from speechkeep.evaluate.run import ALL_TASKS
    from speechkeep.models.llm import resolve_llm_dir
    from speechkeep.models.speech_encoder import resolve_encoder_dir
    from speechkeep.data.questions import resolve_questions_path
    from speechkeep.data.webquestions import webquestions_file

    from speechkeep.align.corpus import corpus_sources

    for src in [*(resolve_questions_path(n) for n in corpus_sources(cfg.corpus.sources)), webquestions_file(cfg.eval_questions, cfg.webquestions)]:
        if not src.is_file():
            raise UsageError(f"{src}: no such questions file (corpus.sources, webquestions, eval_questions)")
        read_questions(src)
    for v in [cfg.eval_voice, *cfg.corpus.held_out_voices]:
        if not is_voice(v):
            raise UsageError(f"unknown voice {v!r}; valid voices: {', '.join(VOICES)}, or one of the extended pool "
                             "(espeak-x-..., piper-x-...)")
    bad = [t for t in cfg.eval_tasks if t not in ALL_TASKS]
    if bad:
        raise UsageError(f"eval_tasks: unknown task '{bad[0]}'; valid: {', '.join(ALL_TASKS)}")
    for t in cfg.corpus.texts:
        if not Path(t).is_file():
            raise UsageError(f"corpus.texts: {t}: no such text file (train.jsonl of `speechkeep data text`)")
    if cfg.measurement:
        if not Path(cfg.measurement).is_file():
            raise UsageError(f"measurement: {cfg.measurement}: no such file (measure.json of benchmarks/measure_frontend.py)")
        read_measurement(cfg.measurement, Path(cfg.ctc.out or Path(cfg.out) / "ctc") / "model", cfg.export_storage)
    if cfg.ctc.vocabulary and not Path(cfg.ctc.vocabulary).is_file():
        raise UsageError(f"ctc.vocabulary: {cfg.ctc.vocabulary}: no such vocabulary file (vocabulary.json of `speechkeep data text`)")
    resolve_llm_dir(cfg.ctc.model.llm)
    resolve_encoder_dir(cfg.ctc.model.speech_encoder)


def run_align(cfg: AlignConfig, progress: bool = True) -> dict:
    """Corpus -> eval set -> CTC -> evaluation (-> export); returns report.json's content.

    The options, the output directories (out, export_to), the questions and the model specs are checked
    before any work; a failed run keeps what can be resumed and removes what is not worth keeping."""
    from speechkeep.io import OutputDir, has_files

    guard = OutputDir(cfg.out, "align", overwrite=cfg.overwrite, key="out", keep=has_files,
                      inputs=[*cfg.corpus.sources, cfg.webquestions])
    guard.check()
    if cfg.export_to:
        OutputDir(cfg.export_to, "align-export", overwrite=cfg.overwrite, key="export_to", marker=False).check()
    _check_align(cfg)
    with guard:
        return _run_align(cfg, progress)


def _run_align(cfg: AlignConfig, progress: bool = True) -> dict:
    from speechkeep.align.corpus import build_align_corpus
    from speechkeep.align.ctc import train_ctc
    from speechkeep.evaluate.run import EvalConfig, evaluate
    import torch

    from speechkeep.io import write_json

    cfg = _filled(cfg)
    command = cfg.command or " ".join(["speechkeep", *map(shlex.quote, sys.argv[1:])])
    t0 = time.perf_counter()
    print(f"[align] corpus -> {cfg.corpus.out}", flush=True)
    build_align_corpus(cfg.corpus, progress=progress)
    t_corpus = time.perf_counter() - t0
    print("[align] held-out evaluation set", flush=True)
    eval_manifest = build_eval_set(cfg, progress)
    model_dir = Path(cfg.ctc.out) / "model"
    summary_path = Path(cfg.ctc.out) / "summary.json"
    if summary_path.is_file() and model_dir.is_dir() and json.loads(summary_path.read_text())["steps"] >= cfg.ctc.max_steps:
        summary = json.loads(summary_path.read_text())
        print(f"[align] CTC stage finished earlier ({summary['steps']} steps): reusing {model_dir}", flush=True)
    else:
        print(f"[align] CTC stage -> {cfg.ctc.out}", flush=True)
        summary = train_ctc(cfg.ctc, progress=progress)
    if summary["steps"] < cfg.ctc.max_steps:
        print(f"[align] stopped at step {summary['steps']} of {cfg.ctc.max_steps} ({summary['stop_reason']}); "
              "run the same command again to resume", flush=True)
        return {"ctc": summary, "finished": False}
    print("[align] evaluating the aligned model", flush=True)
    metrics = evaluate(EvalConfig(model=str(model_dir), data=str(eval_manifest), out=str(Path(cfg.out) / "eval_results"),
                                  tasks=list(cfg.eval_tasks)))
    report = {
        "command": command, "finished": True,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "corpus": json.loads((Path(cfg.corpus.out) / "build_info.json").read_text()),
        "corpus_seconds": round(t_corpus, 1),
        "ctc": summary, "eval": metrics, "eval_set": {"questions": cfg.eval_questions, "voice": cfg.eval_voice,
                                                      "n": metrics["n"]},
    }
    report["ctc_curve"] = wer_curve(Path(cfg.ctc.out) / "metrics.csv")
    report["text_corpora"] = text_corpus_info(cfg.corpus.texts)
    if cfg.measurement:
        report["measurement"] = read_measurement(cfg.measurement, model_dir, cfg.export_storage)
    write_json(Path(cfg.out) / "report.json", report)
    if cfg.export_to:
        export_checkpoint(model_dir, Path(cfg.out) / "report.json", cfg.export_to, cfg.export_storage)
        print(f"[align] exported the aligned front-end to {cfg.export_to}", flush=True)
    print(format_report(report), flush=True)
    return report


def wer_curve(metrics_csv: str | Path) -> list[dict]:
    """[{step, minutes, eval_wer}] of the evaluations logged in a CTC run's metrics.csv (the training
    engine's columns elapsed_s / eval_wer; runs before the engine wrote train_seconds)."""
    import csv

    with open(metrics_csv, newline="") as f:
        return [{"step": int(r["step"]), "minutes": round(float(r.get("elapsed_s") or r.get("train_seconds")) / 60, 1),
                 "eval_wer": float(r["eval_wer"])} for r in csv.DictReader(f) if r.get("eval_wer")]


def text_corpus_info(texts: list[str]) -> list[dict]:
    """For each general text file of the corpus, what `speechkeep data text` recorded beside it (info.json:
    command, sources with licenses, counts, vocabulary, held-out coverage); {"file"} alone where there is none."""
    out = []
    for t in texts:
        info = Path(t).parent / "info.json"
        d = {"file": str(t)}
        if info.is_file():
            full = json.loads(info.read_text())
            d.update({k: full[k] for k in ("command", "sources", "train_by_source", "train_outside_webquestions",
                                           "heldout_texts", "vocabulary", "heldout_coverage") if k in full})
        out.append(d)
    return out


def read_measurement(path: str | Path, model_dir: Path, storage: str = "fp16") -> dict:
    """measure.json of benchmarks/measure_frontend.py, checked to be a measurement of the adaptor now in
    ``model_dir`` (its weights' fingerprint), either as trained or as shipped (stored as ``storage`` and loaded
    back: ``measured_weights`` says which), read the way the model reads (its ``ctc_emit``), and renderable."""
    from speechkeep.align.measure import adaptor_fingerprint, render
    from speechkeep.errors import UsageError
    from speechkeep.models.persistence import ADAPTOR_NAME, CONFIG_NAME

    try:
        res = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"measurement: {path}: not readable as JSON ({e})") from None
    if not isinstance(res, dict) or "clean" not in res or "bars" not in res or "adaptor_fingerprint" not in res:
        raise UsageError(f"measurement: {path}: not a measure.json of benchmarks/measure_frontend.py "
                         "(no 'clean', 'bars' or 'adaptor_fingerprint')")
    model_dir = Path(model_dir)
    if not (model_dir / ADAPTOR_NAME).is_file():
        raise UsageError(f"measurement: the run's model {model_dir} does not exist yet: run the align command without "
                         "measurement=, measure its model, then run it again with measurement=")
    from speechkeep.models.weight_storage import load_adaptor_state, round_trip

    state = load_adaptor_state(model_dir / ADAPTOR_NAME)
    if adaptor_fingerprint(state) == res["adaptor_fingerprint"]:
        res["measured_weights"] = "trained"
    elif adaptor_fingerprint(round_trip(state, storage)) == res["adaptor_fingerprint"]:
        res["measured_weights"] = "shipped"
    else:
        raise UsageError(f"measurement: {path} measured other adaptor weights than {model_dir}'s, trained or stored "
                         f"{storage} (model {res.get('model')!r}); measure this run's model (or its export) again")
    emit = json.loads((model_dir / CONFIG_NAME).read_text())["config"]["adaptor"].get("ctc_emit", "soft")
    if res.get("ctc_emit", "soft") != emit:
        raise UsageError(f"measurement: {path} measured S2T with ctc_emit={res.get('ctc_emit')}, but the model reads "
                         f"ctc_emit={emit}")
    try:
        render(res)
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"measurement: {path}: incomplete measure.json ({type(e).__name__}: {e})") from None
    return res


def _measurement_section(m: dict) -> str:
    """The card's section of the issue-16 measurement (the table and bars of MEASURE.md), saying what was measured."""
    from speechkeep.align.measure import render

    opts = m.get("options") or {}
    what = f"{m['clean']['n']:,} questions of `{opts.get('questions', 'webquestions:clean')}`"
    if "general" in m:
        what += f" and {m['general']['n']:,} texts of the general held-out set (`{Path(opts.get('general') or '').name}`)"
    qa = ("; S2T and the cascade answer the same questions from the same audio (paired)"
          if "s2t_accuracy" in m["clean"] else "; transcripts only (no QA)")
    body = render(m).split("\n", 2)[2]  # without MEASURE.md's title
    return ("\n## Measured on held-out questions and general English (benchmarks/measure_frontend.py)\n\n"
            f"The {what}, spoken by the unseen voice `{m['voice']}`{qa}. Measured on "
            + ("the shipped weights (this directory's)" if m.get("measured_weights") == "shipped" else
               "the trained weights (float32; the shipped ones are their rounding to the storage above)")
            + ".\n\n" + body)


def format_report(report: dict) -> str:
    ev, ctc = report["eval"], report["ctc"]
    lines = [f"aligned front-end: {ctc['steps']} CTC steps, {ctc['train_minutes']:.1f} min, "
             f"{ctc['utterances']} utterances ({ctc['hours']} h)",
             f"held-out: {ev['n']} {report['eval_set']['questions']} questions, voice {report['eval_set']['voice']}"]
    if "asr" in ev:
        lines.append(f"  transcription WER: CTC {ev['asr'].get('ctc_wer', float('nan')):.1%}, "
                     f"LLM-written {ev['asr']['wer']:.1%}")
    for t in ("t2t", "s2t", "cascade"):
        if t in ev:
            extra = f" (Whisper WER {ev[t]['asr_wer']:.1%})" if t == "cascade" else ""
            lines.append(f"  {t.upper()} accuracy: {ev[t]['accuracy']:.1%}{extra}")
    return "\n".join(lines)


def export_checkpoint(model_dir: str | Path, report_path: str | Path, to: str | Path, storage: str = "fp16") -> Path:
    """The aligned SpeechLLM as shipped: the adaptor weights stored as ``storage`` (fp16, or int8 per row:
    :mod:`speechkeep.models.weight_storage`), config and CARD.md (atomic)."""
    import torch
    from safetensors.torch import load_file, save_file

    from speechkeep.io import atomic_path
    from speechkeep.models.persistence import ADAPTOR_NAME, CONFIG_NAME

    model_dir, to = Path(model_dir), Path(to)
    report = json.loads(Path(report_path).read_text())
    from speechkeep.models.weight_storage import encode, load_adaptor_state

    trained = load_adaptor_state(model_dir / ADAPTOR_NAME)
    state, metadata = encode(trained, storage)
    report = {**report, "storage": storage}
    card = render_card(report, n_params=sum(v.numel() for v in trained.values() if v.is_floating_point()))
    if (to / "CARD.md").is_file():
        old_state = load_file(str(to / ADAPTOR_NAME)) if (to / ADAPTOR_NAME).is_file() else {}
        if old_state.keys() == state.keys() and all(torch.equal(old_state[k], state[k]) for k in state):
            old = (to / "CARD.md").read_text(encoding="utf-8")  # the same front-end exported again (e.g. with its
            i = old.find("\n## History\n")                      # measurement): its history is kept, not itself
            card += old[i:] if i >= 0 else ""
        else:  # the front-end it replaces: its card (numbers and history) is kept below
            card += history_section(to / "CARD.md", report)
    with atomic_path(to, own_names=(CONFIG_NAME, ADAPTOR_NAME, "CARD.md", "report.json")) as tmp:
        tmp.mkdir(parents=True)
        (tmp / CONFIG_NAME).write_text((model_dir / CONFIG_NAME).read_text())
        save_file(state, str(tmp / ADAPTOR_NAME), metadata=metadata)
        (tmp / "CARD.md").write_text(card)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return to


def history_section(old_card: Path, report: dict) -> str:
    """The replaced front-end's card, headings moved two levels down, under '## History'."""
    import datetime

    old = old_card.read_text(encoding="utf-8")
    demoted = "\n".join("##" + line if line.startswith("#") else line for line in old.splitlines())
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return (f"\n## History\n\nThe front-end this one replaced ({when}), as its card described it:\n\n"
            f"{demoted.rstrip()}\n")


def render_card(report: dict, n_params: int) -> str:
    ev, ctc, corpus = report["eval"], report["ctc"], report["corpus"]
    cfg = ctc["config"]
    ad = cfg["model"]["adaptor"]
    llm, enc = cfg["model"]["llm"], cfg["model"]["speech_encoder"]
    if llm.startswith("bundled:") and enc.startswith("bundled:"):
        spec = f"bundled:{llm[8:]}+{enc[8:]}"
        load = (f"Load it with the spec `{spec}` (e.g. `speechkeep ask --model {spec} --audio q.wav`) once it is "
                f"shipped in speechkeep/checkpoints/{spec[8:]}/;\n`speechkeep train` starts every strategy on "
                f"{llm} + {enc} from it by default (`init_from=none`: from scratch).")
    else:
        load = ("Load it by its directory (e.g. `speechkeep ask --model DIR --audio q.wav`); `speechkeep train` "
                "starts from it with `init_from=DIR`.")
    copy_note = ("SmolLM2-135M-Instruct does not copy text on request (given the text question itself and the same "
                 "instruction, it answers or paraphrases it instead)" if llm == "bundled:smollm2-135m" else
                 "a small instruct LLM may not copy text on request (it answers or paraphrases the question instead)")
    named = {v: n for v, n in corpus["voices"].items() if not v.startswith(("espeak-x-", "piper-x-"))}
    voices = ", ".join(f"{v} {n}" for v, n in named.items())
    for fam, what in (("espeak-x-", "extended eSpeak NG accent/variant voices"), ("piper-x-", "extended piper parameter voices")):
        ext = {v: n for v, n in corpus["voices"].items() if v.startswith(fam)}
        if ext:
            voices += f"{'; ' if voices else ''}{len(ext)} {what} ({sum(ext.values()):,} utterances)"
    from speechkeep.align.corpus import DEFAULT_SOURCES, corpus_sources

    srcs = corpus_sources(corpus["config"].get("sources"))
    questions = ("WebQuestions trainmodel + val" if srcs == list(DEFAULT_SOURCES)
                 else " + ".join(f"`{Path(x).name if not x.startswith('webquestions:') else x}`" for x in srcs))
    answers = " and their distinct\n  reference answers (one piper and one eSpeak voice each)" if corpus["config"].get(
        "include_answers", True) else ""
    ccfg = corpus["config"]
    if corpus.get("texts"):
        answers += (f"; and {corpus.get('general_utterances', 0):,} utterances of general English texts "
                    f"({', '.join('`' + Path(t).name + '`' for t in corpus['texts'])}, {ccfg.get('general_voices_per_text', 1)} voice(s) "
                    f"each, {100 * ccfg.get('piper_share', 0.5):.0f}% piper): {100 * corpus.get('outside_webquestions', 0):.1f}% of the "
                    "utterances are from outside WebQuestions")
    if ccfg.get("voice_pool", "standard") != "standard":
        answers += f"; voice pool `{ccfg['voice_pool']}` ({corpus.get('n_voices', len(corpus['voices']))} voices used)"
    aug = ccfg.get("augment") or {}
    if aug.get("fraction"):
        answers += (f"; {corpus.get('augmented_utterances', 0):,} augmented copies ({100 * aug['fraction']:.0f}% of the "
                    f"utterances: {', '.join(f'{k} {n}' for k, n in corpus.get('augmentations', {}).items())})")
    vocab_note = (f"the {ctc.get('ctc_vocab_size', ad['ctc_vocab_size']):,} tokens of `{Path(cfg['vocabulary']).name}` (general English + every "
                  "single-character token, so any word can be spelled)" if cfg.get("vocabulary")
                  else f"{ad['ctc_vocab_size']} LLM tokens\n  (every token in the corpus transcripts)")
    sources_note = ""
    for tc in report.get("text_corpora") or []:
        if tc.get("sources"):
            sources_note += (f"\n- General texts `{Path(tc['file']).name}` (`{tc.get('command', '')}`), texts in the file by source "
                             "(the spoken ones are a sample of them): "
                             + "; ".join(f"`{k}` {tc.get('train_by_source', {}).get(k, 0):,} ({v.get('license', 'license not recorded')})"
                                         for k, v in tc["sources"].items()) + ".")
    masks = (f" SpecAugment masking on the features: {cfg['time_masks']} time masks of up to {cfg['time_mask_frames']} frames, "
             f"{cfg['feature_masks']} channel masks of up to {cfg['feature_mask_channels']} channels."
             if cfg.get("time_masks") or cfg.get("feature_masks") else "")
    arch = ad.get("arch", "mlp")
    arch_note = ("Linear -> ReLU (hidden {h}) -> Linear -> LLM width".format(h=ad['hidden_size']) if arch == "mlp" else
                 f"Linear -> {ad['layers']}-layer {arch} (width {ad['hidden_size']}, {ad['heads']} heads, feed-forward "
                 f"{ad['ffn_size']}, convolution width {ad['conv_kernel']}) -> Linear -> LLM width")
    storage_note = ("int8 with one float32 scale per row for the matrices, fp16 for the rest"
                    if report.get("storage") == "int8" else "fp16")
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    rows = []
    if "asr" in ev:
        rows.append(f"| transcription WER, greedy CTC transcript | {pct(ev['asr']['ctc_wer'])} |")
        rows.append(f"| transcription WER, the LLM asked \"{ev['asr'].get('instruction', '')}\" | {pct(ev['asr']['wer'])} |")
    for t, name in (("s2t", "spoken QA accuracy (S2T)"), ("t2t", "text QA accuracy, same questions (T2T)"),
                    ("cascade", f"cascade accuracy ({enc} transcripts -> LLM)")):
        if t in ev:
            rows.append(f"| {name} | {pct(ev[t]['accuracy'])} |")
    if "cascade" in ev:
        rows.append(f"| {enc} WER (the cascade's transcripts) | {pct(ev['cascade']['asr_wer'])} |")
    curve = report.get("ctc_curve") or []
    curve = ("| step | minutes | WER |\n| --- | --- | --- |\n"
             + "\n".join(f"| {c['step']} | {c['minutes']} | {pct(c['eval_wer'])} |" for c in curve)) if curve else "(not logged)"
    return f"""# Aligned speech front-end: {cfg['model']['llm']} + {cfg['model']['speech_encoder']}

The adaptor of a speechkeep SpeechLLM (frozen speech encoder {enc} -> adaptor -> frozen LLM
{llm}), trained so that speech maps to what the LLM reads. {load}

## What it is
- Adaptor: {ad['stack_frames']} stacked {enc} frames -> {arch_note}, then
  CTC onto the LLM's own vocabulary: logits = output x the frozen token embeddings of {vocab_note} + a learned blank. The LLM reads one input per token of the
  greedy CTC path: the posterior-weighted average of the token embeddings (`ctc_emit={ad['ctc_emit']}`).
- {n_params:,} parameters, stored in {storage_note} (`adaptor.safetensors`). The LLM and the encoder are not
  stored: they are referenced by spec (`{llm}`, `{enc}`) in `speechkeep.json`.

## How it was made
```
{report['command']}
```
- Data: {corpus['utterances']} synthesized utterances, {corpus['hours']} h: the questions of {questions}
  (each by {corpus['config']['piper_voices_per_text']} piper and {corpus['config']['espeak_voices_per_text']} eSpeak voices){answers}; transcripts lower-cased. Voices: {voices}.
  Held-out voice never used: {report['eval_set']['voice']}.{sources_note}
- Training: CTC, {ctc['steps']} steps of batch {cfg['batch_size']}, AdamW lr {cfg['lr']} (warmup {cfg['warmup_steps']}, cosine to 10%),
  {ctc['train_minutes']:.1f} min on {report['machine']}; final CTC loss {ctc['final_loss']}.{masks}
  {ctc['dropped_infeasible']} utterances with more tokens than CTC frames were left out. The final step's weights
  are shipped (no checkpoint selection on the evaluation set).

## Metrics
Held-out: the {report['eval_set']['n']} questions of WebQuestions `{report['eval_set']['questions']}` spoken by the held-out
voice `{report['eval_set']['voice']}`; greedy decoding; WER is corpus WER after Whisper's English normalizer;
an answer is correct when a reference answer appears in it on word boundaries after normalization.

| metric | value |
| --- | --- |
{chr(10).join(rows)}

Greedy-CTC WER on the same held-out set during training (monitoring only):
{curve}

When the LLM-written transcript is much worse than the CTC transcript, it is because {copy_note}; the CTC
transcript is the front-end's own transcription. The S2T answers come from the LLM reading the posterior-weighted
token embeddings, with the LLM frozen: text ability is untouched by construction (T2T = the base LLM's).

The per-item predictions are in `eval_results/predictions.jsonl` of the run; `report.json` here holds
every number above and the full configuration.
""" + (_measurement_section(report["measurement"]) if report.get("measurement") else "")
