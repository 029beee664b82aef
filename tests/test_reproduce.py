"""``speechkeep reproduce`` end to end on a shrunk config: tiny random LLM and Whisper, real TTS (espeak),
every strategy cell for 2 steps, every importance cell, the report in all three forms; resumption,
--only, the budget, bad configs; and the HTML report rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from speechkeep.cli import main

TRAIN_VOICE, EVAL_VOICE = "espeak-us-f2", "espeak-us-m3"


def _questions(path: Path, split: str, n: int) -> Path:
    """A JSONL question file with answers and responses (the tiny random LLM is no usable teacher)."""
    from speechkeep.data.webquestions import webquestions_file

    with open(path, "w") as f:
        for i, q in enumerate(json.loads(webquestions_file(split).read_text())[:n]):
            f.write(json.dumps({"id": f"{split}-{i}", "text": q["qText"], "answers": q["answers"],
                                "response": f"It is {q['answers'][0]}."}) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory, tiny_llm_dir, tiny_whisper_dir, tiny_speech_llm_factory) -> Path:
    from speechkeep.models.adaptor import AdaptorConfig

    d = tmp_path_factory.mktemp("reproduce_cfg")
    cfg = d / "tiny.yaml"
    # every strategy starts from a saved front-end (the aligned row); the cascade transcribes with the real Whisper
    # tiny.en (the tiny random Whisper has no tokenizer)
    front_end = tiny_speech_llm_factory(adaptor=AdaptorConfig(hidden_size=32)).save_pretrained(d / "front_end")
    cfg.write_text("\n".join([
        f"llm: {tiny_llm_dir}", f"speech_encoder: {tiny_whisper_dir}", f"init_from: {front_end}",
        "cascade_whisper: bundled:whisper-tiny.en", "noft_tasks: [t2t, cascade, ppl]",
        f"train_questions: {_questions(d / 'train.jsonl', 'trainmodel', 6)}", "n_train: 4",
        f"eval_questions: {_questions(d / 'eval.jsonl', 'devtest', 6)}", "eval_limit: 4",
        "teacher: false", f"train_voices: [{TRAIN_VOICE}]", f"eval_voice: {EVAL_VOICE}",
        "eval_max_new_tokens: 4", "steps: 2", "batch_size: 2", "save_every: 1",
        "importance_fraction: 1.0", "importance_batch_size: 4", "deactivate_limit: 4",
        "heatmap_matrices: [model.layers.1.self_attn.q_proj.weight]", ""]))
    return cfg


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, tiny_config):
    out = tmp_path_factory.mktemp("reproduce") / "out"
    assert main(["reproduce", str(tiny_config), f"out={out}"]) == 0
    return out


def _cells(tiny_config, out, *extra):
    from speechkeep.config import load_config
    from speechkeep.recipes.reproduce import ReproduceConfig, plan_cells, resolve_start

    cfg = load_config(ReproduceConfig, str(tiny_config), [f"out={out}", *extra])
    return cfg, plan_cells(cfg, resolve_start(cfg))


def test_every_cell_runs_and_the_report_covers_them(reproduced, tiny_config):
    from speechkeep.recipes.reproduce import VARIANTS
    from speechkeep.strategies import STRATEGIES

    out = reproduced
    cfg, cells = _cells(tiny_config, out)
    # every registered strategy has a cell (ctc_align made the aligned front-end), lora at three ranks
    strategies = {v.strategy for v in cfg.variants().values()}
    assert strategies == set(STRATEGIES) - {"ctc_align"}
    extra = set(cfg.variants()) - set(VARIANTS)  # strategies registered after the list was written get a cell too
    assert set(VARIANTS) <= set(cfg.variants()) and extra <= set(STRATEGIES)
    record = json.loads((out / "cells.json").read_text())
    assert set(record) == {c.name for c in cells}
    skipped = {n for n, r in record.items() if r.get("skipped")}
    # only parameter-change heatmaps of models whose LLM is not comparable weight by weight are skipped
    assert skipped == {"heatmap/adaptor", "heatmap/upscale_transformer", "heatmap/upscale_ebranchformer",
                       "heatmap/upscale_ebranchformer_top", "heatmap/upscale_ebranchformer_speech_only"}
    for c in cells:
        assert c.done() or c.name in skipped, c.name
        r = record[c.name]
        if c.name not in skipped:  # command, time, versions and machine of every cell
            assert r["command"].startswith("speechkeep ") and r["seconds"] > 0
            assert r["versions"]["torch"] and r["machine"]["cpu_count"] >= 1
    times = json.loads((out / "times.json").read_text())
    assert {"data_train", "eval_noft", "train_lora", "eval_lora", "importance_base"} <= set(times)

    res = json.loads((out / "results.json").read_text())
    names = list(cfg.variants())
    # No-FT, the cascade (the real Whisper tiny.en on espeak speech), the front-end every strategy starts from, and
    # every strategy; each strategy's S2T against the cascade's on the same questions; both rows on the Pareto plot
    cascade = "cascade (Whisper tiny.en transcript -> text LLM)"
    assert [r[0] for r in res["table2"]][:3] == ["No-FT (text LLM as is)", cascade, "aligned front-end, before any strategy"]
    assert len(res["table2"]) == 3 + len(names)
    noft = res["evaluations"]["noft"]
    assert noft["cascade"]["whisper"] == "bundled:whisper-tiny.en" and noft["cascade"]["asr_wer"] < 0.5
    assert "s2t" in res["evaluations"]["aligned"] and "asr" in res["evaluations"]["aligned"]
    for n in names:
        assert any(c["a"] == n and c["b"].startswith("cascade") and c["task"] == "S2T" for c in res["comparisons"]), n
    assert {cascade, "aligned front-end, before any strategy"} <= {p["name"] for p in res["pareto"]}
    assert [r[0] for r in res["table3"]] == [8, 16, 24]
    assert set(res["table1"]) >= {"base", "top", "bottom", "random"}
    assert set(res["importance_shift"]["shift"]) == set(names)
    assert set(res["parameter_change"]) == set(names) - {n for n in names if n.startswith("upscale") or n == "adaptor"}
    for n in names:
        if n != "full":  # every strategy against full on T2T and S2T, and against No-FT on T2T
            got = {(c["b"], c["task"]) for c in res["comparisons"] if c["a"] == n}
            assert {("full", "T2T"), ("full", "S2T"), ("full", "ASR WER"), ("No-FT", "T2T")} <= got, n
        assert res["training_curves"][n]["step"]
    for c in res["comparisons"]:  # a difference is called only when it is significant
        assert (c["verdict"] == "no significant difference") == (not c["significant"])
    assert set(res["degradation_reduction"]) == set(names) - {"full"}
    # the importance-guided restoration sweep of full: p = 0 (full's own evaluation) and every p, on the Pareto plot
    assert [c["fraction_percent"] for c in res["restoration"]["full"]] == [0, 0.5, 1, 3, 10]
    assert res["restoration"]["full"][0]["t2t"] == res["evaluations"]["full"]["t2t"]["accuracy"]
    assert res["restoration"]["full"][-1]["restored"] > res["restoration"]["full"][1]["restored"] > 0
    assert sum("top 10% restored" in p["name"] for p in res["pareto"]) == 1
    # T2T retention with a paired interval for every strategy (undefined when No-FT gets nothing right, as the tiny
    # random LLM may; retention_ci itself is tested in test_stats.py)
    noft_right = res["evaluations"]["noft"]["t2t"]["accuracy"] > 0
    assert set(res["retention"]) == (set(names) if noft_right else set())
    assert all(lo <= r <= hi for r, lo, hi in res["retention"].values())
    # issue 19: anchor vs full and layer_lr, importance-guided vs uniform LoRA, every restored point vs its run;
    # and each of them against the seeds' best trade-off (T2T >= layer_lr's, S2T >= LoRA's)
    beyond = res["beyond_the_seeds"]
    label = {n: cfg.variants()[n].label for n in names}
    pairs = {(c["a"], c["b"], c["task"]) for c in beyond["comparisons"]}
    for a, b in (("anchor", "full"), ("anchor", "layer_lr"), ("lora_importance", "lora")):
        assert {(label[a], label[b], "T2T"), (label[a], label[b], "S2T")} <= pairs
    restored = [f"{label['full']}, top {p:g}% restored" for p in (0.5, 1, 3, 10)]
    assert all((r, label["full"], "S2T") in pairs for r in restored)
    # the control rankings at 1%: restored like the method, and the method tested against each
    controls = [f"{label['full']}, top 1% restored ({c} ranking)" for c in ("random", "change")]
    for c, name in zip(("random", "change"), controls):
        assert [p["fraction_percent"] for p in res["restoration"][f"full:{c}"]] == [0, 1]
        assert {(restored[1], name, "T2T"), (restored[1], name, "S2T"), (name, label["full"], "T2T")} <= pairs
    assert {t["model"] for t in beyond["trade_off"]} == {label["anchor"], label["lora_importance"], *restored, *controls}
    for t in beyond["trade_off"]:
        assert t["meets"] == (t["t2t_minus_layer_lr"] >= 0 and t["s2t_minus_lora"] >= 0)
        assert t["verdict"].startswith("inside" if t["meets"] else "outside")
    # every seed claim is checked (all cells ran here) with a verdict that follows its test
    from speechkeep.recipes.seed_claims import SEED_CLAIMS

    claims = {r["claim"]: r for r in res["seed_claims"]}
    assert {c.text for c in SEED_CLAIMS} <= set(claims)
    # seed 003: three orderings per up-scaling cell, the 75% bar per E-Branchformer cell, E-Branchformer vs Transformer ASR
    up = [n for n in names if n.startswith("upscale")]
    assert sum(r["seed"] == "003" for r in res["seed_claims"]) == 3 * len(up) + sum("ebranchformer" in n for n in up) + 1
    for r in res["seed_claims"]:
        assert not r["verdict"].startswith("not measured"), r
        if r["direction"] in ("higher", "lower"):
            assert r["verdict"].startswith("not shown") == (not r["significant"]), r
    figs = set(res["figures"])
    assert {"figures/pareto.png", "figures/restore_full.png", "figures/training_curves.png", "figures/fig1_rank_clustering.png",
            "figures/fig23_layer_importance.png", "figures/fig4_parameter_change_lora.png"} <= figs

    html = (out / "report.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == len(figs) and all(s.startswith("data:image/png;base64,") for s in srcs)  # self-contained
    assert "<link" not in html and "<script" not in html
    md = (out / "report.md").read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Fig. 1", "Figs. 2/3", "Fig. 4", "Pareto", "Training curves",
                  "Degradation reduction", "Paired significance", "Claims of the seed papers", "Importance-guided restoration",
                  "Beyond the seeds"):
        assert title in md and title in html
    for f in figs:
        assert f"]({f})" in md and (out / f).is_file()


def test_finished_cells_are_skipped_and_an_incomplete_one_is_redone(reproduced, tiny_config, capsys):
    out = reproduced
    before = json.loads((out / "cells.json").read_text())
    summary_mtime = (out / "runs" / "lora" / "summary.json").stat().st_mtime_ns
    (out / "eval" / "lora" / "metrics.json").unlink()  # an evaluation killed before it wrote its metrics
    capsys.readouterr()
    assert main(["reproduce", str(tiny_config), f"out={out}"]) == 0
    log = capsys.readouterr().out
    after = json.loads((out / "cells.json").read_text())
    assert "eval/lora: running" in log and "train/lora: done" in log
    assert [n for n in after if after[n]["finished"] != before[n]["finished"]] == ["eval/lora"]
    assert (out / "runs" / "lora" / "summary.json").stat().st_mtime_ns == summary_mtime
    assert re.findall(r"\] (\S+): running", log) == ["eval/lora"]
    assert re.search(r"eval/lora: running \(est\. [0-9.]+ (s|min|h);", log)  # the mean of the finished evaluations

    # a training cell killed after its last checkpoint (no summary.json yet): the cell runs again and its training
    # resumes from the checkpoint instead of starting over
    finished = json.loads((out / "runs" / "lora" / "summary.json").read_text())
    (out / "runs" / "lora" / "summary.json").unlink()
    capsys.readouterr()
    assert main(["reproduce", str(tiny_config), f"out={out}"]) == 0
    log = capsys.readouterr().out
    assert re.findall(r"\] (\S+): running", log) == ["train/lora"]
    assert f"resumed from {out / 'runs' / 'lora' / 'checkpoint'} at step 2" in log
    again = json.loads((out / "runs" / "lora" / "summary.json").read_text())
    assert again["steps"] == finished["steps"] == 2 and again["final_loss"] == pytest.approx(finished["final_loss"])


def test_a_comparison_directory_without_records_is_taken_up_as_it_is(reproduced, tiny_config, tmp_path, capsys):
    """What benchmarks/strategy_comparison.py left (cells and times.json, no cells.json, no marker) is reused."""
    import shutil

    from speechkeep.io import MARKER_PREFIX

    legacy = tmp_path / "legacy"
    shutil.copytree(reproduced, legacy, symlinks=True)
    for name in ("cells.json", "report.html", "report.md", "results.json", MARKER_PREFIX + "reproduce"):
        (legacy / name).unlink()
    for name in ("figures", "importance", "deactivate", "heatmap"):  # the earlier comparisons had no importance cells
        shutil.rmtree(legacy / name)
    capsys.readouterr()
    assert main(["reproduce", str(tiny_config), f"out={legacy}", "importance=false", "cells=[lora, full]"]) == 0
    log = capsys.readouterr().out
    assert ": running" not in log and "train/lora: done" in log and "eval/full: done" in log
    record = json.loads((legacy / "cells.json").read_text())
    assert set(record) == {"data/train", "data/eval", "eval/noft", "eval/aligned", "train/full", "eval/full", "train/lora",
                           "eval/lora"}
    # the command that made a found cell is unknown: recorded as such, with the command this config would give now
    assert all(r["found"] and r["finished"] is None and r["command"] is None and r["command_now"].startswith("speechkeep ")
               for r in record.values())
    md = (legacy / "report.md").read_text()
    assert "importance cells are off" in md
    assert "made before speechkeep reproduce recorded it (its settings: the files of runs/lora/)" in md


def test_budget_stops_before_a_cell_and_the_report_says_what_is_left(reproduced, tiny_config, capsys):
    out = reproduced
    extra = "extra_cells={lora_r2: [strategy=lora, lora.r=2]}"
    capsys.readouterr()
    assert main(["reproduce", str(tiny_config), f"out={out}", extra, "eval_batch_size=3", "--budget-minutes", "0.00001"]) == 0
    log = capsys.readouterr().out
    assert "stopped at the budget" in log and not (out / "runs" / "lora_r2").exists()
    # a finished cell is kept, with a note when this config would give it another command
    assert "note: eval/lora was made by another command" in log and "batch_size=3" in log
    assert "note: train/lora" not in log
    assert "train/lora_r2" in (out / "report.md").read_text().split("Not finished yet")[1].split("\n")[0]


def test_only_selects_cells_and_what_they_need(tiny_config, tmp_path):
    from speechkeep.errors import UsageError
    from speechkeep.recipes.reproduce import select_cells

    _, cells = _cells(tiny_config, tmp_path / "o")
    chosen = [c.name for c in select_cells(cells, ["lora"])]
    assert chosen == ["data/train", "data/eval", "eval/noft", "importance/base", "train/lora", "eval/lora",
                      "importance/lora", "heatmap/lora"]
    assert [c.name for c in select_cells(cells, ["deactivate/base"])] == ["data/train", "data/eval", "importance/base",
                                                                          "deactivate/base"]
    assert {c.name for c in select_cells(cells, ["eval/*"])} >= {"eval/full", "eval/noft", "data/eval"}
    assert "train/layer_lr" in [c.name for c in select_cells(cells, ["layer_lr"])]
    with pytest.raises(UsageError, match="'lora_r99' matches no cell"):
        select_cells(cells, ["lora_r99"])


def test_dry_run_writes_nothing(tiny_config, tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(["reproduce", str(tiny_config), f"out={out}", "dry_run=true", "--only", "full"]) == 0
    log = capsys.readouterr().out
    assert "train/full: to run" in log and "$ speechkeep train " in log and "strategy=full" in log
    assert not out.exists()


@pytest.mark.parametrize("overrides, message", [
    (["cells=[lora, lorra]"], "cells: unknown cell 'lorra'"),
    (["eval_voice=nobody"], "eval_voice: unknown voice 'nobody'"),
    ([f"train_voices=[{EVAL_VOICE}]"], f"train_voices: {EVAL_VOICE} is the held-out eval_voice"),
    (["extra_cells={x: [lora.r=4]}"], "extra_cells.x: give its strategy"),
    (["extra_cells={x: [strategy=lora, lora.rank=4]}"], "cell x: unknown config key"),
    (["reference=lora_r16", "cells=[lora]"], "reference: 'lora_r16' is not among the cells"),
    (["eval_tasks=[t2t, s2tt]"], "eval_tasks: unknown task 's2tt'"),
    (["budget_minutes=0"], "budget_minutes must be > 0"),
    # the cascade defaults to speech_encoder, here the tiny encoder-only Whisper: refused before any cell runs
    (["cascade_whisper=null"], "has no tokenizer (tokenizer.json or vocab.json), so its Whisper cannot transcribe"),
])
def test_bad_config_is_a_clear_error_before_any_work(tiny_config, tmp_path, capsys, overrides, message):
    out = tmp_path / "bad"
    assert main(["reproduce", str(tiny_config), f"out={out}", *overrides]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_directory_of_another_command_is_refused_and_the_benchmark_layout_accepted(tiny_config, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["reproduce", str(tiny_config), f"out={other}", "--only", "lora"]) == 2
    assert "is not empty and was not written by `speechkeep reproduce`" in capsys.readouterr().err
    from speechkeep.io import OutputDir

    with pytest.raises(Exception, match="not empty"):
        OutputDir(other, "reproduce", key="out").check()
    legacy = tmp_path / "legacy"  # what benchmarks/strategy_comparison.py wrote before it became a wrapper
    (legacy / "data" / "eval").mkdir(parents=True)
    (legacy / "times.json").write_text("{}")
    OutputDir(legacy, "reproduce", key="out").check()
    assert (other / "notes.txt").read_text() == "mine"


def test_report_html_renders_in_headless_chromium(reproduced, tmp_path):
    from browser import chromium, render

    if chromium() is None:
        if os.environ.get("SPEECHKEEP_REQUIRE_BROWSER"):
            pytest.fail("SPEECHKEEP_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium (Debian: apt-get install chromium; `make test` installs it when it can)")
    res = render(reproduced / "report.html", tmp_path / "report.png", tmp_path)
    n_figs = len(json.loads((reproduced / "results.json").read_text())["figures"])
    assert len(res["images"]) == n_figs > 0
    broken = [i["alt"] for i in res["images"] if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert not broken, broken
    assert res["errors"] == [] and res["console"] == []
    import matplotlib.image

    shot = matplotlib.image.imread(res["screenshot"])
    assert shot.shape[0] > 1000 and shot.shape[1] > 1000 and shot.std() > 0.05  # a page with content, not blank


def test_the_browser_check_catches_broken_images_and_errors(tmp_path):
    from browser import chromium, render

    if chromium() is None:
        pytest.skip("no chromium")
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><title>t</title></head><body><img alt="gone" src="missing.png">'
                    '<img alt="bad" src="data:image/png;base64,AAAA"><script>console.error("boom")</script></body></html>')
    res = render(page, tmp_path / "bad.png", tmp_path)
    assert [i["width"] for i in res["images"]] == [0, 0]
    assert any("boom" in e for e in res["errors"]) and any("missing.png" in e for e in res["errors"])
    assert res["console"]


def test_embedded_figures_are_palette_pngs_with_the_same_picture(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from speechkeep.recipes.reproduce_report import compact_png

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.imshow(np.random.default_rng(0).random((100, 100)), cmap="magma")
    ax.set_title("noise")
    fig.savefig(tmp_path / "f.png", dpi=110)
    plt.close(fig)
    small = compact_png(tmp_path / "f.png")
    assert len(small) < 0.6 * (tmp_path / "f.png").stat().st_size
    (tmp_path / "s.png").write_bytes(small)
    a = np.asarray(Image.open(tmp_path / "f.png").convert("RGB"), dtype=float)
    b = np.asarray(Image.open(tmp_path / "s.png").convert("RGB"), dtype=float)
    assert a.shape == b.shape and np.abs(a - b).mean() < 2.0  # the same picture to the eye (0-255 scale)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(Exception):
        compact_png(tmp_path / "x.png")


def test_table2_says_what_the_aligned_rows_asr_wer_is():
    from speechkeep.recipes.reproduce_report import _aligned_asr_note

    note = _aligned_asr_note({"wer": 3.666, "ctc_wer": 0.237, "ctc_wer_ci95": [0.22, 0.25]})
    assert "never trained" in note and "CTC transcript has WER 23.7 [22.0, 25.0]" in note
    assert _aligned_asr_note({"wer": 0.3}) == "" and _aligned_asr_note(None) == ""


def test_step_time_is_the_median_so_a_pause_does_not_count():
    from speechkeep.recipes.reproduce_report import median_step_seconds

    steps = list(range(0, 110, 10))
    elapsed = [2.5 * s for s in steps]
    elapsed[6:] = [e + 1200 for e in elapsed[6:]]  # paused 20 minutes between steps 50 and 60
    assert median_step_seconds({"step": steps, "elapsed_s": elapsed}) == pytest.approx(2.5)
    assert median_step_seconds({"step": [1], "elapsed_s": [3.0]}) is None
