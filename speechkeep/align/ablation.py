"""What each choice of the general front-end's recipe gives (issue 16): short matched CTC runs on one corpus.

Every variant trains the CTC adaptor for ``steps`` steps with the same batch, seed, learning rate and schedule
(warmup ``steps // 10``, cosine), on the corpus of a finished-corpus ``speechkeep align`` run, with one choice of
that run's recipe changed; each is measured by its greedy-CTC WER on the spoken sets that
``benchmarks/measure_frontend.py`` wrote (the 1,205 clean WebQuestions questions and the general held-out set,
both by the unseen voice), with 95% bootstrap intervals and a paired bootstrap against ``full``:

- ``full``: the run's own recipe (its ``ctc/train_config.json``);
- ``mlp``: the 2-layer MLP adaptor (hidden 1024, the old front-end's) instead of the run's adaptor;
- ``no_augment``: without the augmented audio copies and without SpecAugment masks;
- ``no_general``: the WebQuestions utterances only (no general text, nor its augmented copies).

(The vocabulary's choice is measured by its coverage, without training: README, issue 16.)

::

    python benchmarks/frontend_ablation.py run=runs/align_general measure=runs/measure_new out=runs/ablation steps=1000

``<out>/manifests/<variant>.jsonl`` lists each variant's training utterances. Resumable: a finished variant (``<out>/<variant>/model`` and its ``summary.json`` at ``steps``) is measured again,
not retrained; an interrupted one resumes from its checkpoint. A re-run into the same ``out`` must have the same run,
recipe, corpus manifest and ``steps`` (``ablation_identity.json``), and the report keeps every finished variant. Writes ``<out>/ablation.json`` and ``<out>/ABLATION.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from speechkeep.config import Checked, ranged

VARIANTS = ("full", "mlp", "no_augment", "no_general")


@dataclass
class AblationConfig(Checked):
    """Options of the front-end ablation."""

    run: str = "runs/align_general"
    """A `speechkeep align` run whose corpus is built and whose CTC stage has started (ctc/train_config.json)."""
    measure: str = "runs/measure_new"
    """A benchmarks/measure_frontend.py output: its clean/ and general/ spoken sets are the test sets."""
    out: str = "runs/ablation"
    """Output directory: one CTC run per variant, ablation.json, ABLATION.md."""
    steps: int = ranged(1000, ge=1)
    """Optimizer steps of every variant."""
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    """Which variants to run, in order."""
    overwrite: bool = False
    """Write into an out directory that is not empty and not an earlier ablation's."""


def variant_rows(rows: list, variant: str, corpus_dir: Path, build_info: dict) -> list:
    """The training rows of a variant. Augmented copies are the rows whose audio lies under the corpus's
    ``audio_aug/``; general texts' rows are those whose ids start with ``g-`` (`speechkeep data text`'s ids). The
    number removed is checked against the corpus's ``build_info.json`` (``augmented_utterances``,
    ``general_utterances``), so a variant can never silently equal ``full``."""
    from speechkeep.errors import DataError

    if variant == "no_augment":
        aug = (corpus_dir / "audio_aug").resolve()
        kept = [r for r in rows if not Path(r.audio).resolve().is_relative_to(aug)]
        expected, what = build_info.get("augmented_utterances", 0), "augmented copies (augmented_utterances)"
    elif variant == "no_general":
        kept = [r for r in rows if not r.id.startswith("g-")]
        expected, what = build_info.get("general_utterances", 0), "general-text utterances (general_utterances)"
    else:
        return rows
    removed = len(rows) - len(kept)
    if not expected:
        raise DataError(f"{corpus_dir}/build_info.json: the corpus has no {what}: variant {variant!r} would equal 'full'")
    if removed != expected:
        raise DataError(f"variant {variant!r}: removed {removed} utterances, but {corpus_dir}/build_info.json counts "
                        f"{expected} {what}; the general texts' ids must start with 'g-' (`speechkeep data text`)")
    return kept


def variant_config(base: dict, variant: str, out: Path, manifest: Path, steps: int) -> dict:
    """The TrainConfig (as a dict) of a variant from the run's own."""
    import copy

    cfg = copy.deepcopy(base)
    cfg.update(output_dir=str(out), max_steps=steps, max_minutes=None, eval_every=None, resume=True)
    cfg["optim"]["warmup_steps"] = max(steps // 10, 1)
    cfg["data"]["train"] = str(manifest)
    cfg["data"]["features_dir"] = cfg["data"].get("features_dir") or str(Path(base["data"]["train"]).parent / "features")
    cfg["ctc_align"]["eval_manifest"] = None
    if variant == "mlp":
        ad = cfg["model"]["adaptor"]
        ad.update(arch="mlp", hidden_size=1024)
    elif variant == "no_augment":
        cfg["ctc_align"].update(time_masks=0, feature_masks=0)
    return cfg


def measure(model_dir: Path, sets: dict[str, Path]) -> dict:
    import torch

    from speechkeep.data.features import FeatureCache
    from speechkeep.data.manifest import read_manifest
    from speechkeep.metrics import corpus_wer, utterance_errors
    from speechkeep.models.builder import build_speech_llm

    model, _ = build_speech_llm(init_from=str(model_dir))
    model.eval()
    res = {}
    for name, d in sets.items():
        rows = read_manifest(d / "manifest.jsonl")
        refs = [r.text for r in rows]
        cache = FeatureCache(None, model.encoder, model.config.encode_mode, read_roots=[d / "features"], progress=False)
        with torch.no_grad():
            hyp = model.ctc_transcribe(cache.get([r.audio for r in rows]))
        res[name] = {"n": len(rows), "wer": corpus_wer(refs, hyp), "errors": utterance_errors(refs, hyp)}
    return res


def run_ablation(cfg: AblationConfig, progress: bool = True) -> dict:
    """Train (or reuse) and measure every variant; writes and returns ablation.json's content. The output
    directory is checked first (another command's output needs overwrite); a failed run keeps what is resumable."""
    from speechkeep.errors import UsageError

    bad = [v for v in cfg.variants if v not in VARIANTS]
    if bad:
        raise UsageError(f"variants: unknown variant {bad[0]!r}; valid: {', '.join(VARIANTS)}")
    from speechkeep.io import OutputDir, has_files

    run, out = Path(cfg.run), Path(cfg.out)
    base_path = run / "ctc" / "train_config.json"
    if not base_path.is_file():
        raise UsageError(f"{base_path}: no such file (run= must be a `speechkeep align` run whose CTC stage has started)")
    sets = {n: Path(cfg.measure) / n for n in ("clean", "general") if (Path(cfg.measure) / n / "manifest.jsonl").is_file()}
    if "clean" not in sets:
        raise UsageError(f"{cfg.measure}/clean/manifest.jsonl: no such file (run benchmarks/measure_frontend.py first)")
    guard = OutputDir(cfg.out, "ablation", overwrite=cfg.overwrite, key="out", keep=has_files, inputs=[cfg.run, cfg.measure])
    guard.check()
    with guard:
        return _run_ablation(cfg, base_path, sets, progress)


def _identity(cfg: AblationConfig, base: dict) -> dict:
    """What the variants in ``out`` were made from: a re-run into the same ``out`` must match it."""
    import hashlib

    manifest = Path(base["data"]["train"])
    return {"run": str(Path(cfg.run).resolve()), "steps": cfg.steps,
            "base_config_sha256": hashlib.sha256(json.dumps(base, sort_keys=True).encode()).hexdigest(),
            "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}


def _run_ablation(cfg: AblationConfig, base_path: Path, sets: dict[str, Path], progress: bool) -> dict:
    from speechkeep.config import config_from_dict
    from speechkeep.data.manifest import read_manifest, write_manifest
    from speechkeep.evaluate.stats import paired_wer_difference, wer_ci
    from speechkeep.io import atomic_path, write_json
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.loop import train

    from speechkeep.errors import UsageError

    out = Path(cfg.out)
    base = json.loads(base_path.read_text())
    train_manifest = Path(base["data"]["train"])
    if not train_manifest.is_file():
        raise UsageError(f"{base_path}: its training manifest {train_manifest} does not exist (relative paths are "
                         "relative to the directory the align run was started from: run the ablation from there)")
    corpus_dir = train_manifest.parent
    build_info = json.loads((corpus_dir / "build_info.json").read_text())
    ident = _identity(cfg, base)
    ident_path = out / "ablation_identity.json"
    if ident_path.is_file():
        before = json.loads(ident_path.read_text())
        if before != ident:
            diff = ", ".join(k for k in ident if before.get(k) != ident[k])
            raise UsageError(f"out {out}: its variants were made with another {diff} (see {ident_path}); choose a new "
                             "out (a matched comparison needs the same corpus, recipe and steps)")
    rows = read_manifest(train_manifest)
    out.mkdir(parents=True, exist_ok=True)
    write_json(ident_path, ident)
    todo = [v for v in VARIANTS if v in cfg.variants or (out / v / "summary.json").is_file()]  # finished ones stay in
    results = {}
    for v in todo:
        vdir = out / v
        model_dir = vdir / "model"
        summary = vdir / "summary.json"
        t0 = time.perf_counter()
        if not (summary.is_file() and (model_dir / "speechkeep.json").is_file()
                and json.loads(summary.read_text()).get("steps") == cfg.steps):
            vrows = variant_rows(rows, v, corpus_dir, build_info)
            manifest = out / "manifests" / f"{v}.jsonl"  # outside the run directory (the engine reads, never writes, it)
            write_manifest(manifest, vrows)
            tcfg = config_from_dict(TrainConfig, variant_config(base, v, vdir, manifest, cfg.steps))
            print(f"[ablation] {v}: {len(vrows)} utterances, {cfg.steps} steps -> {vdir}", flush=True)
            train(tcfg, progress=progress)
        s = json.loads(summary.read_text())
        m = measure(model_dir, sets)
        results[v] = {"utterances": s.get("utterances"), "ctc_vocab_size": s.get("ctc_vocab_size"),
                      "train_minutes": round(s.get("train_seconds", 0) / 60, 1), "final_loss": s.get("final_loss"),
                      **{n: {"n": r["n"], "wer": r["wer"], "wer_ci95": list(wer_ci(r["errors"])), "errors": r["errors"]}
                         for n, r in m.items()}}
        print(f"[ablation] {v}: " + ", ".join(f"{n} WER {100 * r['wer']:.1f}%" for n, r in m.items())
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    if "full" in results:
        for v, r in results.items():
            for n in sets:
                if v != "full":
                    d = paired_wer_difference(r[n]["errors"], results["full"][n]["errors"])
                    r[n]["vs_full"] = {"difference": d.difference, "ci95": [d.ci_low, d.ci_high]}
    for r in results.values():
        for n in sets:
            r[n].pop("errors")
    report = {"config": {k: getattr(cfg, k) for k in ("run", "measure", "out", "steps", "variants")}, "identity": ident,
              "results": results}
    write_json(out / "ablation.json", report)
    with atomic_path(out / "ABLATION.md") as tmp:
        tmp.write_text(render(report), encoding="utf-8")
    return report


def render(report: dict) -> str:
    """ABLATION.md: one row per variant, each test set's WER with its interval and its paired difference from full."""
    cfg, results = report["config"], report["results"]
    sets = [n for n in ("clean", "general") if results and n in next(iter(results.values()))]
    lines = [f"# Front-end ablation: {cfg['steps']} CTC steps per variant, from `{cfg['run']}`", "",
             "| variant | utterances | CTC vocabulary | minutes | final loss | "
             + " | ".join(f"{n} WER [95% CI] | {n} vs full" for n in sets) + " |",
             "| --- " * (5 + 2 * len(sets)) + "|"]
    for v, r in results.items():
        cells = []
        for n in sets:
            x = r[n]
            cells.append(f"{100 * x['wer']:.1f}% [{100 * x['wer_ci95'][0]:.1f}, {100 * x['wer_ci95'][1]:.1f}]")
            vs = x.get("vs_full")
            cells.append(f"{100 * vs['difference']:+.1f} [{100 * vs['ci95'][0]:+.1f}, {100 * vs['ci95'][1]:+.1f}]" if vs else "-")
        lines.append(f"| {v} | {r['utterances']} | {r['ctc_vocab_size']} | {r['train_minutes']} | {r['final_loss']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "WER: corpus WER of the greedy CTC transcript after Whisper's English normalizer; 95% intervals by "
              "bootstrap over utterances; 'vs full': the paired bootstrap interval of the difference (variant - full) on "
              "the same utterances. Each variant is one training run (one seed): the intervals cover the test sample, "
              "not training noise, and no correction is made for the several comparisons."]
    return "\n".join(lines) + "\n"
