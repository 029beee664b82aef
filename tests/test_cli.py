"""The command line: every command has --help; bad input is one clean error line, exit code 2."""

import pytest

from speechkeep.cli import build_parser, main

COMMANDS = ["models", "build", "ask", "data", "train", "eval", "demo", "importance", "deactivate",
            "importance-compare", "heatmap", "export", "reproduce"]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for c in COMMANDS:
        assert f"    {c} " in out or f"    {c}\n" in out, c


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_for_every_option(cmd, capsys):
    args = [cmd, "build", "--help"] if cmd == "data" else [cmd, "--help"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[cmd]
    if cmd == "data":
        sub = sub._subparsers._group_actions[0].choices["build"]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, f"{cmd}: option {action.dest} has no help"


def test_config_commands_list_config_keys(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "lora.r (int, default 8)" in out and "layer_lr.lam" in out and "optim.grad_accum" in out


def test_unknown_key_is_one_clean_error(capsys, tmp_path):
    assert main(["build", "adaptr.k=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("speechkeep: error: unknown config key 'adaptr'") and "Traceback" not in err
    assert main(["eval", "--model", "bundled:smollm2-135m", "--data", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    assert "evaluation data not found" in capsys.readouterr().err


def test_unknown_model_spec_lists_accepted_forms(capsys):
    assert main(["ask", "--model", "bundled:nope", "--text", "hi"]) == 2
    assert "accepted LLM specs" in capsys.readouterr().err


def test_a_broken_data_command_is_an_error_not_a_missing_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "speechkeep.data.cli", None)  # importing it raises ImportError
    with pytest.raises(ImportError):
        build_parser()


def test_align_help_shows_the_defaults_that_are_used(capsys):
    from speechkeep.align.recipe import AlignConfig

    with pytest.raises(SystemExit):
        main(["align", "--help"])
    out = capsys.readouterr().out
    used = AlignConfig().ctc.model
    assert used.adaptor.hidden_size == 1024 and used.adaptor.output == "ctc" and used.encode_mode == "variable"
    assert "ctc.model.adaptor.hidden_size (int, default 1024)" in out
    import re

    assert re.search(r"ctc\.model\.adaptor\.output \(.*, default 'ctc'\)", out)
    assert re.search(r"ctc\.model\.encode_mode \(.*, default 'variable'\)", out)
    assert "ctc.out (str, default '')" in out and "runs/align/ctc" not in out.split("config keys")[1]


def test_eval_takes_config_keys_and_its_flags_are_aliases(tmp_path, monkeypatch, capsys):
    import speechkeep.evaluate.run as run_mod

    seen = []
    monkeypatch.setattr(run_mod, "evaluate", lambda cfg: seen.append(cfg) or {"n": 0})
    monkeypatch.setattr("speechkeep.evaluate.report.format_metrics", lambda m: "")
    (tmp_path / "e.yaml").write_text("data: d.jsonl\nmax_new_tokens: 9\n")
    assert main(["eval", str(tmp_path / "e.yaml"), "limit=5", "tasks=[t2t]", "out=o"]) == 0
    assert main(["eval", "--data", "d.jsonl", "--max-new-tokens", "9", "--limit", "5", "--tasks", "t2t", "--out", "o"]) == 0
    assert seen[0] == seen[1]
    assert (seen[0].data, seen[0].max_new_tokens, seen[0].limit, seen[0].tasks, seen[0].out) == ("d.jsonl", 9, 5, ["t2t"], "o")
    assert main(["eval", str(tmp_path / "e.yaml"), "max_new_tokens=3", "--max-new-tokens", "4"]) == 0
    assert seen[2].max_new_tokens == 4  # a flag wins over the key
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "max_new_tokens (int, default 48)" in out and "asr_max_new_tokens" in out and "--max-new-tokens" in out


def test_eval_without_data_is_a_usage_error(capsys, tmp_path):
    assert main(["eval", f"out={tmp_path / 'o'}"]) == 2
    assert "data: give the evaluation data" in capsys.readouterr().err


# ---------------------------------------------------------------- one mechanism for every job command
def _job_commands():
    from speechkeep.align.recipe import AlignConfig
    from speechkeep.cli import AskConfig, BuildConfig, ExportConfig, ModelsConfig
    from speechkeep.data.build import DataBuildConfig
    from speechkeep.evaluate.run import EvalConfig
    from speechkeep.importance.options import CompareConfig, DeactivateConfig, HeatmapConfig, ImportanceConfig
    from speechkeep.recipes.demo import DemoConfig
    from speechkeep.recipes.reproduce import ReproduceConfig
    from speechkeep.train.config import TrainConfig

    # command -> (config class, [(old flags, the same as key=value)])
    return {
        "models": (ModelsConfig, [(["--prepare", "a", "b"], ["prepare=[a, b]"])]),
        "build": (BuildConfig, [(["--out", "o", "--seed", "3", "--overwrite"], ["out=o", "seed=3", "overwrite=true"])]),
        "ask": (AskConfig, [(["--model", "m", "--text", "hi there", "--text", "yo", "--audio", "a.wav",
                              "--max-new-tokens", "2"],
                             ["model=m", "text=[hi there, yo]", "audio=[a.wav]", "max_new_tokens=2"])]),
        "train": (TrainConfig, [(["--overwrite"], ["overwrite=true"])]),
        "export": (ExportConfig, [(["--model", "m", "--out", "o"], ["model=m", "out=o"])]),
        "eval": (EvalConfig, [(["--tasks", "t2t", "asr", "--ctc-emit", "hard", "--batch-size", "3"],
                               ["tasks=[t2t, asr]", "ctc_emit=hard", "batch_size=3"])]),
        "demo": (DemoConfig, [(["--overwrite"], ["overwrite=true"])]),
        "reproduce": (ReproduceConfig, [(["--only", "lora,eval/*", "--budget-minutes", "90", "--out", "o"],
                                         ["only=[lora, eval/*]", "budget_minutes=90", "out=o"])]),
        "align": (AlignConfig, [(["--overwrite"], ["overwrite=true"])]),
        "data build": (DataBuildConfig, [(["--questions", "q.json", "--out", "o", "--voices", "a,b", "--no-features",
                                           "--no-progress", "--workers", "1", "--split-by-voice", "--encode-mode",
                                           "variable", "--limit", "4"],
                                          ["questions=q.json", "out=o", "voices=[a, b]", "features=false",
                                           "progress=false", "workers=1", "split_by_voice=true",
                                           "encode_mode=variable", "limit=4"])]),
        "importance": (ImportanceConfig, [(["--model", "m", "--data", "d", "--out", "o", "--fraction", "1", "--input",
                                            "speech", "--batch-size", "2"],
                                           ["model=m", "data=d", "out=o", "fraction=1", "input=speech", "batch_size=2"])]),
        "deactivate": (DeactivateConfig, [(["--model", "m", "--importance", "i", "--data", "d", "--fraction", "0.1",
                                            "--include-embeddings", "--scope", "per_matrix"],
                                           ["model=m", "importance=i", "data=d", "fraction=0.1",
                                            "include_embeddings=true", "scope=per_matrix"])]),
        "importance-compare": (CompareConfig, [(["r1", "r2", "--out", "o", "--absolute", "--labels", "A", "B"],
                                                ["runs=[r1, r2]", "out=o", "absolute=true", "labels=[A, B]"])]),
        "heatmap": (HeatmapConfig, [(["--importance", "i", "--layer", "1", "--top", "0.1", "--matrices", "x", "y"],
                                     ["importance=i", "layer=1", "top=0.1", "matrices=[x, y]"])]),
    }


def _resolve(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("cmd", list(_job_commands()))
def test_every_job_command_help_lists_every_key_with_its_real_default(cmd, capsys):
    from speechkeep.config import config_help, load_config

    cls, _ = _job_commands()[cmd]
    with pytest.raises(SystemExit):
        main([*cmd.split(), "--help"])
    out = capsys.readouterr().out
    assert "[config] [overrides ...]" in out.replace("\n", " ").replace("  ", " ") or "[config]" in out
    used = load_config(cls, None, [])  # what the command runs with when nothing is given
    rows = config_help(cls)
    assert {r[0].split(".")[0] for r in rows} >= {f for f in cls.__dataclass_fields__ if f != "sections"}
    for key, tname, default, doc in rows:
        assert f"  {key} ({tname}, default {default})" in out, key
        assert default == repr(_resolve(used, key)), f"{key}: help says {default}, the command uses {_resolve(used, key)!r}"
        assert doc, f"{cmd}: {key} has no docstring"


@pytest.mark.parametrize("cmd", list(_job_commands()))
def test_every_job_commands_old_flags_equal_their_key_value_form(cmd, tmp_path):
    from speechkeep.config import config_from_args

    cls, pairs = _job_commands()[cmd]
    parser = build_parser()
    for flags, keys in pairs:
        a, _ = config_from_args(parser.parse_args([*cmd.split(), *flags]))
        b, _ = config_from_args(parser.parse_args([*cmd.split(), *keys]))
        assert isinstance(a, cls) and a == b, (flags, keys)
        assert a != cls() or not flags
    # and a YAML file takes the same keys
    (tmp_path / "c.yaml").write_text("\n".join(k.replace("=", ": ", 1) for k in pairs[0][1]) + "\n")
    c, path = config_from_args(parser.parse_args([*cmd.split(), str(tmp_path / "c.yaml")]))
    assert path == str(tmp_path / "c.yaml") and c == a


def test_bare_arguments_after_an_option_are_still_runs(monkeypatch):
    import speechkeep.importance.cli as icli
    from speechkeep.config import config_from_args

    seen = []
    monkeypatch.setattr(icli, "cmd_compare", lambda args: seen.append(config_from_args(args)[0]))
    assert main(["importance-compare", "r1", "--out", "o", "r2", "labels=[A, B]", "--absolute"]) == 0
    assert seen[0].runs == ["r1", "r2"] and seen[0].labels == ["A", "B"] and seen[0].out == "o" and seen[0].absolute
    assert main(["eval", "--out", "o", "stray"]) == 2  # a command without bare arguments still refuses them


def test_a_list_of_numbers_flag_takes_commas_or_spaces():
    """Issue 19 writes `restore --sweep 0.5,1,3,10`; `--sweep 0.5 1 3 10` and `sweep=[0.5,1,3,10]` are the same."""
    from speechkeep.config import config_from_args

    parser = build_parser()
    forms = [["--sweep", "0.5,1,3,10"], ["--sweep", "0.5", "1", "3", "10"], ["--sweep", "0.5,1", "3,10"],
             ["sweep=[0.5,1,3,10]"]]
    got = [config_from_args(parser.parse_args(["restore", "--run", "r", *f]))[0].sweep for f in forms]
    assert got == [[0.5, 1.0, 3.0, 10.0]] * 4
    with pytest.raises(Exception, match="sweep"):
        config_from_args(parser.parse_args(["restore", "--sweep", "0.5,x"]))
