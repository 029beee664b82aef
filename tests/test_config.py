from dataclasses import dataclass, field
from typing import Literal

import pytest

from speechkeep.config import config_help, field_docs, load_config, parse_overrides
from speechkeep.errors import ConfigError
from speechkeep.models.speech_llm import SpeechLLMConfig


@dataclass
class Inner:
    """Inner section."""

    lr: float = 1e-3
    """Learning rate."""
    layers: list[int] = field(default_factory=lambda: [1, 2])
    """Layers to touch."""


@dataclass
class Outer:
    """Outer config."""

    name: str = "x"
    """A name."""
    steps: int = 10
    """How many steps."""
    mode: Literal["a", "b"] = "a"
    """Which mode."""
    flag: bool = False
    """A switch."""
    note: str | None = None
    """Optional note."""
    inner: Inner = field(default_factory=Inner)
    """Nested section."""


def test_yaml_and_dotted_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: hello\ninner:\n  lr: 0.5\n")
    cfg = load_config(Outer, p, ["inner.lr=2e-4", "steps=7", "flag=true", "inner.layers=[3,4]", "mode=b", "note=hi"])
    assert cfg.name == "hello" and cfg.steps == 7 and cfg.flag is True and cfg.mode == "b"
    assert cfg.inner.lr == pytest.approx(2e-4) and cfg.inner.layers == [3, 4] and cfg.note == "hi"
    assert load_config(Outer, None, ["note=null"]).note is None


def test_unknown_key_names_key_and_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'inner\.lrr'.*lr, layers"):
        load_config(Outer, None, ["inner.lrr=1"])
    p = tmp_path / "c.yaml"
    p.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*'stepz'.*name, steps, mode"):
        load_config(Outer, p)


@pytest.mark.parametrize("ov, msg", [
    ("steps=abc", "steps: cannot read 'abc' as int"),
    ("mode=c", r"mode: 'c' is not one of \['a', 'b'\]"),
    ("flag=maybe", "flag: cannot read 'maybe' as bool"),
    ("steps", "not of the form key=value"),
])
def test_bad_values_are_clear_errors(ov, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(Outer, None, [ov])


def test_invalid_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: a\nsteps: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(Outer, p)


def test_every_field_has_a_docstring():
    rows = config_help(Outer)
    assert [r[0] for r in rows] == ["name", "steps", "mode", "flag", "note", "inner.lr", "inner.layers"]
    assert all(r[3] for r in rows)
    assert all(field_docs(SpeechLLMConfig).get(f) for f in ("llm", "speech_encoder", "adaptor", "encode_mode"))
    assert all(doc for *_, doc in config_help(SpeechLLMConfig))


def test_parse_overrides_nesting():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_corpus_wer_is_token_weighted_and_normalized():
    from speechkeep.metrics import corpus_wer

    assert corpus_wer(["Hello, World!"], ["hello world"]) == 0.0
    # 1 error over 1+4 words, not the mean of per-utterance WERs (0.5)
    assert corpus_wer(["cat", "red green blue sky"], ["dog", "red green blue sky"]) == pytest.approx(1 / 5)


def test_partial_nested_override_keeps_the_fields_own_default():
    """`ctc.model.llm=...` must keep AlignConfig's CTC adaptor default, not reset it to AdaptorConfig()."""
    from speechkeep.align.recipe import AlignConfig
    from speechkeep.config import load_config

    cfg = load_config(AlignConfig, None, ["ctc.model.llm=bundled:gemma3-270m", "ctc.model.adaptor.hidden_size=64"])
    assert cfg.ctc.model.llm == "bundled:gemma3-270m"
    assert cfg.ctc.model.adaptor.output == "ctc" and cfg.ctc.model.adaptor.hidden_size == 64
    assert cfg.ctc.model.encode_mode == "variable" and cfg.ctc.batch_size == 32


def test_a_mapping_setting_is_replaced_not_merged_with_its_default():
    """`data.tasks={asr: 1}` trains asr only (it used to be merged into the default {qa: 1}: qa + asr),
    while nested configs still merge key by key with their field's own default."""
    from speechkeep.align.recipe import AlignConfig
    from speechkeep.train.config import TrainConfig

    assert load_config(TrainConfig, None, ["data.tasks={asr: 1}"]).data.tasks == {"asr": 1.0}
    assert load_config(TrainConfig, None, ["data.tasks={asr: 1}", "data.batch_size=2"]).data.batch_size == 2
    a = load_config(AlignConfig, None, ["ctc.model.adaptor.hidden_size=16"])
    assert a.ctc.model.adaptor.output == "ctc" and a.ctc.model.adaptor.hidden_size == 16
