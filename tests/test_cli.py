"""The command line: every command has --help; bad input is one clean error line, exit code 2."""

import pytest

from speechkeep.cli import build_parser, main

COMMANDS = ["models", "build", "ask", "data", "train", "eval", "demo", "importance", "deactivate",
            "importance-compare", "heatmap"]


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
