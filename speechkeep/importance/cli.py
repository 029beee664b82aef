"""CLI: ``speechkeep importance``, ``deactivate``, ``importance-compare``, ``heatmap``, ``restore``.

Each takes ``[CONFIG.yaml] [key=value ...]`` of its config dataclass (:mod:`speechkeep.importance.options`),
its ``--help`` is generated from it, and its flags are aliases of those keys (``--batch-size 4`` =
``batch_size=4``)."""

from __future__ import annotations

import sys
from pathlib import Path

from speechkeep.config import Flag, Range, add_config_arguments, config_from_args
from speechkeep.errors import UsageError
from speechkeep.importance.options import CompareConfig, DeactivateConfig, HeatmapConfig, ImportanceConfig

FRACTION_OF_ROWS = Range(gt=0, le=1)
"""``importance --fraction``: a share of the manifest's rows, 1 = all."""
FRACTION_OF_PARAMS = Range(gt=0, lt=1)
"""``deactivate --fraction``: a share of the parameters to zero."""
SHARE = Range(gt=0, le=1)
POSITIVE = Range(ge=1)
SEED = Range(ge=0)


def _options(args, required: tuple[str, ...] = ()):
    """The command's config (YAML, key=value, alias flags); each required key must be given."""
    cfg, _ = config_from_args(args)
    for key in required:
        if not getattr(cfg, key):
            raise UsageError(f"--{key.replace('_', '-')}: required (or {key}=...)")
    return cfg


def _check_inputs(model: str | None = None, data: str | None = None) -> None:
    """Cheap checks of the inputs before any output is created or model loaded."""
    from speechkeep.models.persistence import check_model_spec

    if data is not None and not Path(data).exists():
        raise UsageError(f"--data {data}: no such file or directory")
    if model is not None:
        check_model_spec(model)


def _out(args, command: str, inputs=()):
    from speechkeep.io import output_dir

    return output_dir(args.out, command, overwrite=args.overwrite, inputs=[i for i in inputs if i])


def _load(spec: str):
    """The model with LoRA (if any) merged: importance is about the effective weights, under the
    base model's parameter names, so runs before and after LoRA fine-tuning compare directly."""
    from speechkeep.models.persistence import load_speech_llm

    model, trained = load_speech_llm(spec)
    if model.is_peft():
        model.llm = model.llm.merge_and_unload()
    return model, trained


def cmd_importance(args) -> None:
    from speechkeep.importance.runs import batched, queries_from_manifest, save_importance
    from speechkeep.importance.taylor import compute_importance

    args = _options(args, ("model", "data", "out"))

    _check_inputs(args.model, args.data)
    fraction = None if args.fraction >= 1 else args.fraction
    from speechkeep.distributed import Processes
    from speechkeep.io import OutputDir

    procs = Processes()  # several processes: batches shared out, scores summed (see compute_importance)
    guard = OutputDir(args.out, "importance", overwrite=args.overwrite, inputs=[i for i in (args.model, args.data) if i])
    guard.check()
    if procs.main:
        guard.create()
    procs.barrier()
    try:
        model, trained = _load(args.model)
        if args.input == "speech" and not trained:
            raise UsageError("speech-input importance needs a trained speech model (a run or SpeechLLM directory)")
        queries = queries_from_manifest(args.data, args.input, model, fraction, args.limit, args.split, seed=args.seed)
        res = compute_importance(model, batched(queries, args.batch_size), convention=args.convention, procs=procs)
        here = res.meta.pop("batches_here", None)
        if procs.world > 1:
            print(f"importance: process {procs.rank} of {procs.world} scored {here} batches", file=sys.stderr)
        res.meta.update({"model": args.model, "data": args.data, "input": args.input, "fraction": fraction,
                         "split": args.split})
        if procs.main:
            summary = save_importance(args.out, res.scores, res.meta)
        procs.barrier()
    except BaseException:
        if procs.main:
            guard.cleanup_after_failure()
        raise
    if not procs.main:
        return
    shares = [v / summary["layer_total"] for v in summary["per_layer"]]
    peak = max(range(len(shares)), key=shares.__getitem__) if shares else None
    print(f"importance ({args.convention}, {args.input} input) of {len(res.scores)} tensors over "
          f"{res.meta['n_queries']} queries / {res.meta['response_tokens']} response tokens in {res.meta['seconds']:.0f} s")
    print(f"peak layer {peak}; per-type totals: " + ", ".join(f"{k} {v:.3g}" for k, v in summary["per_type"].items() if v))
    print(f"wrote {args.out}/importance.safetensors, summary.json, summary.csv")


def cmd_deactivate(args) -> None:
    from speechkeep.importance.deactivate import deactivation_table
    from speechkeep.importance.runs import load_scores, queries_from_manifest
    from speechkeep.io import write_json

    import contextlib

    args = _options(args, ("model", "importance", "data"))
    _check_inputs(args.model, args.data)
    scores = load_scores(args.importance)
    guard = _out(args, "deactivate", [args.model, args.data, args.importance]) if args.out else contextlib.nullcontext()
    with guard:
        model, trained = _load(args.model)
        if args.input == "speech" and not trained:
            raise UsageError("speech input needs a trained speech model (a run or SpeechLLM directory)")
        queries = queries_from_manifest(args.data, args.input, model, None, args.limit, args.split)
        table = deactivation_table(model, scores, queries, args.fraction, args.scope,
                                   args.batch_size, args.seed, include_embeddings=args.include_embeddings)
        table.update({"model": args.model, "importance": args.importance, "data": args.data, "input": args.input})
        if args.out:
            write_json(Path(args.out) / "deactivation.json", table)
    pct = f"{100 * args.fraction:g}%"
    print(f"perplexity on {table['n_eval']} held-out responses ({args.input} input), {pct} of "
          f"{table['n_scored_params']:,} parameters zeroed ({args.scope}):")
    print(f"| base | top {pct} | bottom {pct} | random {pct} |\n|---|---|---|---|")
    print(f"| {table['base']:.3g} | {table['top']:.3g} | {table['bottom']:.3g} | {table['random']:.3g} |")
    if args.out:
        print(f"wrote {args.out}/deactivation.json")


def cmd_compare(args) -> None:
    from speechkeep.importance.distribution import compare_runs
    from speechkeep.io import write_json

    from speechkeep.importance.runs import load_summary

    args = _options(args, ("runs", "out"))
    if args.labels and len(args.labels) != len(args.runs):
        raise UsageError(f"{len(args.labels)} labels for {len(args.runs)} runs")
    for r in args.runs:
        load_summary(r)  # each is an importance run, before anything is written
    out = Path(args.out)
    with _out(args, "importance-compare", args.runs):
        res = compare_runs(args.runs, args.labels, str(out / "layer_importance.png"), relative=not args.absolute)
        write_json(out / "shift.json", res)
    for lab, m in res["shift"].items():
        print(f"{res['reference']} -> {lab}: JS divergence {m['js_divergence']:.4f}, Spearman {m['spearman']:.3f}, "
              f"magnitude x{m['magnitude_ratio']:.3f}, peak layer {m['peak_layer_before']} -> {m['peak_layer_after']}")
    print(f"wrote {out}/layer_importance.png and shift.json")


def _llm_params(spec: str):
    model, _ = _load(spec)
    return {n: p.detach() for n, p in model.llm.named_parameters()}


def cmd_heatmap(args) -> None:
    from speechkeep.importance.heatmaps import parameter_change_report, rank_clustering_report
    from speechkeep.importance.runs import load_scores
    from speechkeep.io import write_json

    args = _options(args, ("out",))
    out = Path(args.out)
    names = args.matrices or [f"model.layers.{i}.{m}.weight" for i in (0, args.layer) for m in
                              ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj")]
    if bool(args.before) != bool(args.after):
        raise UsageError("--before and --after go together (parameter change between two models)")
    if not args.importance and not args.before:
        raise UsageError("give --importance RUN (rank clustering) and/or --before/--after (parameter change)")
    scores = None
    if args.importance:
        scores = load_scores(args.importance)
        missing = [n for n in names if n not in scores]
        if missing:
            example = next((n for n in scores if n.endswith("q_proj.weight")), next(iter(scores), "none"))
            raise UsageError(f"--importance {args.importance}: no scores for {missing[0]} (another model, or --layer/"
                             f"--matrices beyond it?); e.g. {example}")
    if args.before:
        from speechkeep.models.persistence import check_model_spec

        check_model_spec(args.before, "--before")
        check_model_spec(args.after, "--after")
    result = {}
    with _out(args, "heatmap", [args.importance, args.before, args.after]):
        if scores is not None:
            result["rank_clustering"] = rank_clustering_report(scores, names, out / "rank_clustering.png", args.top,
                                                               args.rows)
            for n, r in result["rank_clustering"].items():
                print(f"{n}: top-{100 * args.top:g}% concentration in top-{100 * args.rows:g}% rows x{r['rows']:.2f} "
                      f"(random {r['rows_random']:.2f}), columns x{r['cols']:.2f} (random {r['cols_random']:.2f})")
        if args.before and args.after:
            before, after = _llm_params(args.before), _llm_params(args.after)
            missing = [n for n in names if n not in before or n not in after]
            if missing:
                raise UsageError(f"--before/--after: no parameter {missing[0]} in both models")
            bad = [n for n in names if before[n].shape != after[n].shape]
            if bad:
                raise UsageError(f"--before/--after: {bad[0]} has shape {tuple(before[bad[0]].shape)} vs "
                                 f"{tuple(after[bad[0]].shape)}: not the same architecture")
            result["parameter_change"] = parameter_change_report(before, after, names, out / "parameter_change.png")
            for n, r in result["parameter_change"].items():
                energy = r["energy_top8"]
                energy = f"{energy:.3f}" if energy == energy else "undefined (no change)"
                print(f"{n}: mean |dW| {r['mean_abs_change']:.2e}, energy in top-8 singular directions {energy}")
        from speechkeep.evaluate.run import finite_or_none

        bad = finite_or_none(result)  # JSON has no NaN: an unchanged matrix's low-rank energy is written as null
        if bad:
            result["non_finite"] = {"keys": bad, "note": "not finite (e.g. a matrix that did not change), written as null"}
        write_json(out / "heatmaps.json", result)
    print(f"wrote {out}/heatmaps.json and PNGs")


def add_importance_parsers(sub) -> None:
    p = sub.add_parser("importance", help="first-order Taylor importance |dL/dtheta * theta| of every parameter",
                       description="Importance of every LLM (and adaptor) parameter over a spoken manifest's responses.")
    add_config_arguments(p, ImportanceConfig, ["model", "data", "input", "out", "convention", "fraction", "limit",
                                               "split", "batch_size", "seed"])
    p.set_defaults(func=cmd_importance)

    p = sub.add_parser("deactivate", help="zero the top/bottom/random fraction by importance; perplexity (seed Table 1)",
                       description="Deactivation test: perplexity on held-out data with the top, bottom and a random "
                                   "fraction of parameters zeroed, and untouched. Weights are restored afterwards.")
    add_config_arguments(p, DeactivateConfig, ["model", "importance", "data", "input", "fraction", "scope",
                                               Flag("include_embeddings", const=True), "split", "limit", "batch_size",
                                               "seed", "out"])
    p.set_defaults(func=cmd_deactivate)

    p = sub.add_parser("importance-compare", help="layer-wise importance distributions and their shift (seed Fig. 2/3)",
                       description="Plot per-layer importance shares of several runs on the same axes; JS divergence, "
                                   "Spearman correlation, magnitude ratio and peak layer of each against the first. "
                                   "The run directories are bare arguments (key runs).")
    add_config_arguments(p, CompareConfig, ["labels", Flag("absolute", const=True), "out"], positional="runs")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("heatmap", help="rank-clustering heatmaps (seed Fig. 1) and parameter-change heatmaps (Fig. 4)",
                       description="Rank clustering of an importance run's matrices and/or |W_after - W_before| "
                                   "between two models, each with a number (concentration score, low-rank energy).")
    add_config_arguments(p, HeatmapConfig, ["importance", "before", "after", "matrices", "layer", "top", "rows", "out"])
    p.set_defaults(func=cmd_heatmap)

    from speechkeep.importance.restore import RestoreConfig

    p = sub.add_parser("restore", help="put the top p%% textually important LLM weights back to their pre-trained values",
                       description="Importance-guided restoration after speech fine-tuning: the top p% of the LLM's "
                                   "parameters by the pre-trained LLM's textual importance go back to their pre-trained "
                                   "values (alpha=1) or part of the way (theta = alpha*pre + (1-alpha)*ft), with no "
                                   "retraining. Writes a loadable SpeechLLM; sweep=[0.5,1,3,10] with data=... evaluates "
                                   "a series and writes the curve of T2T recovered vs S2T lost. Resumable.")
    add_config_arguments(p, RestoreConfig, ["run", "importance", "fraction", "alpha", "ranking", "out", "sweep", "data", "limit"])
    p.set_defaults(func=cmd_restore)


def cmd_restore(args) -> None:
    from speechkeep.importance.restore import run_restore

    run_restore(_options(args))
