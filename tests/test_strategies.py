"""Strategies as plugins: the registry, settings sections, named loss terms, per-task metrics, frozen
modules, transcripts for the loss, and the engine's main-process-only logging."""

import ast
import csv
import dataclasses
from pathlib import Path

import pytest
import torch

import speechkeep
from speechkeep.config import Checked, config_to_dict, load_config, ranged
from speechkeep.errors import ConfigError
from speechkeep.strategies import STRATEGIES, LossTerms, Strategy, register, unregister
from speechkeep.strategies.base import task_losses
from speechkeep.train.config import TrainConfig
from speechkeep.train.loop import train
from test_train import ROWS, cfg_for, fake_features

PKG = Path(speechkeep.__file__).parent


def read_metrics(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def plugin():
    """Register test strategies for one test and remove them afterwards."""
    names = []

    def add(cls):
        register(cls)
        names.append(cls.name)
        return cls

    yield add
    for n in names:
        unregister(n)


# ------------------------------------------------------------------ registry and settings
def test_a_duplicate_strategy_name_is_an_error():
    before = STRATEGIES["lora"]

    class Other(Strategy):
        name = "lora"

        def setup(self, model):
            return []

    with pytest.raises(ValueError, match="'lora' is already registered by speechkeep.strategies.lora.LoRA"):
        register(Other)
    assert STRATEGIES["lora"] is before
    register(before)  # the same class again (a module re-imported) is not a duplicate


def test_the_core_train_config_imports_no_strategy():
    tree = ast.parse((PKG / "train" / "config.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("speechkeep.strategies.")], imported
    field_types = {f.type for f in dataclasses.fields(TrainConfig)}
    assert not any("Settings" in str(t) for t in field_types)
    # yet every strategy's settings are reachable as <strategy>.* keys, from overrides and back from a dict
    cfg = load_config(TrainConfig, None, ["strategy=lora", "lora.r=16", "layer_lr.lam=0.2"])
    assert cfg.lora.r == 16 and cfg.sections["layer_lr"].lam == 0.2 and cfg.lora.alpha is None
    d = config_to_dict(cfg)
    assert d["lora"]["r"] == 16 and "sections" not in d
    assert load_config(TrainConfig, None, [f"lora.r={d['lora']['r']}"]).lora == cfg.lora


def test_a_new_strategy_is_one_class_with_its_settings(plugin, tmp_path, capsys):
    @dataclasses.dataclass
    class ProbeSettings(Checked):
        """Settings of a test strategy."""

        scale: float = ranged(1.0, gt=0)
        """A documented setting of the probe strategy."""

    @plugin
    class Probe(Strategy):
        name = "probe_plugin"
        description = "test plugin"
        Settings = ProbeSettings

        def setup(self, model):
            return [self.adaptor_group(model)]

    (tmp_path / "c.yaml").write_text("strategy: probe_plugin\nprobe_plugin:\n  scale: 2.5\n")
    cfg = load_config(TrainConfig, tmp_path / "c.yaml")
    assert cfg.probe_plugin.scale == 2.5 and Probe(cfg).settings.scale == 2.5
    with pytest.raises(ConfigError, match="probe_plugin.scale must be > 0"):
        load_config(TrainConfig, None, ["probe_plugin.scale=0"])
    from speechkeep.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "probe_plugin.scale (float, default 1.0)" in out and "A documented setting of the probe strategy." in out
    assert "probe_plugin: test plugin" in out


def test_a_strategy_name_may_not_hide_a_core_key():
    @dataclasses.dataclass
    class S(Checked):
        x: int = ranged(1, ge=0)

    class Bad(Strategy):
        name = "optim"
        Settings = S

    with pytest.raises(ValueError, match="would hide the train config key 'optim'"):
        register(Bad)
    assert "optim" not in STRATEGIES


# ------------------------------------------------------------------ the model side: response logits, transcripts
def test_response_logits_are_the_logits_at_response_positions(tiny_speech_llm_factory, tone):
    from speechkeep.models.speech_llm import IGNORE_INDEX, Query

    m = tiny_speech_llm_factory()
    qs = [Query(text="Name a color.", response="Blue.", task="t2t"),
          Query(audio=tone, response="Green is a color too.", transcript="name a color", task="qa")]
    b = m.prepare(qs)
    assert b.transcripts == [None, "name a color"] and b.tasks == ["t2t", "qa"]
    r = m.response_logits(b)
    full = m.logits(b)[:, :-1]
    keep = b.labels[:, 1:] != IGNORE_INDEX
    torch.testing.assert_close(r.logits, full[keep].float())
    assert r.targets.tolist() == b.labels[:, 1:][keep].tolist()
    assert r.rows.tolist() == [0] * int(keep[0].sum()) + [1] * int(keep[1].sum())
    loss, n = m.loss(b)
    assert n == r.n and torch.equal(loss, r.cross_entropy())
    per_task = task_losses(r, qs, loss)
    (s_t, n_t), (s_q, n_q) = per_task["t2t"], per_task["qa"]
    assert n_t == int(keep[0].sum()) and n_q == int(keep[1].sum())
    assert (s_t + s_q) / (n_t + n_q) == pytest.approx(float(loss), rel=1e-5)
    assert not hasattr(Query, "is_speech")


def test_training_queries_keep_the_transcript_and_task():
    from speechkeep.train.data import examples_from_rows, to_queries

    per_task = examples_from_rows(ROWS[:2], {"qa": 1.0, "asr": 1.0, "t2t": 1.0})
    batch = [per_task["qa"][0], per_task["asr"][1], per_task["t2t"][0]]
    qs = to_queries(batch, fake_features, "Transcribe.")
    assert [q.task for q in qs] == ["qa", "asr", "t2t"]
    assert qs[0].transcript == ROWS[0].text and qs[1].transcript == ROWS[1].text and qs[2].transcript is None
    assert qs[2].text == ROWS[0].text and qs[0].text is None


# ------------------------------------------------------------------ the engine
def test_loss_terms_are_summed_with_weights_and_logged_with_per_task_losses(plugin, tiny_llm_dir, tiny_whisper_dir,
                                                                            tmp_path):
    seen = {"transcripts": set()}

    @plugin
    class TwoTerms(Strategy):
        name = "two_terms_test"
        terms = ("ce", "l2")

        def setup(self, model):
            return [self.adaptor_group(model)]

        def loss(self, model, queries):
            seen["transcripts"].update(q.transcript for q in queries if q.task == "qa")
            base = super().loss(model, queries)
            l2 = sum((p ** 2).sum() for p in model.adaptor.parameters())
            return LossTerms({"ce": base.terms["ce"], "l2": l2}, weights={"l2": 0.01}, n_tokens=base.n_tokens,
                             input_tokens=base.input_tokens, per_task=base.per_task)

    cfg = cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path, strategy="two_terms_test", max_steps=4, log_every=2,
                  **{"data.tasks": "{qa: 1.0, t2t: 1.0}", "data.group_by_length": "false"})
    train(cfg, rows=ROWS, features=fake_features, progress=False)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["step", "loss", "lr", "tokens_per_s", "elapsed_s", "loss_qa", "loss_t2t", "term_ce", "term_l2"]
    assert len(rows) == 2
    for r in rows:
        assert float(r["loss"]) == pytest.approx(float(r["term_ce"]) + 0.01 * float(r["term_l2"]), rel=1e-4)
        assert float(r["term_l2"]) > 0
    assert all(r["loss_qa"] and r["loss_t2t"] for r in rows)
    # every spoken query reached the loss with its transcript
    assert seen["transcripts"] and seen["transcripts"] <= {r.text for r in ROWS}


def test_per_task_loss_of_a_single_task_run_is_the_loss(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    train(cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path, strategy="adaptor", max_steps=2), rows=ROWS,
          features=fake_features, progress=False)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [float(r["loss_qa"]) for r in rows] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-4)
    assert [float(r["term_ce"]) for r in rows] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-4)


def test_frozen_modules_are_placed_after_prepare_in_eval_mode(plugin, tiny_llm_dir, tiny_whisper_dir, tmp_path,
                                                             monkeypatch):
    from accelerate import Accelerator

    log = []
    real_prepare = Accelerator.prepare

    def prepare(self, *a):
        log.append("prepare")
        return real_prepare(self, *a)

    monkeypatch.setattr(Accelerator, "prepare", prepare)

    class Teacher(torch.nn.Linear):
        def to(self, *a, **k):
            log.append(("to", str(a[0]) if a else str(k.get("device"))))
            return super().to(*a, **k)

    @plugin
    class WithTeacher(Strategy):
        name = "teacher_test"

        def setup(self, model):
            self.teacher = Teacher(2, 2)
            self.teacher.train()
            return [self.adaptor_group(model)]

        def frozen_modules(self):
            return {"teacher": self.teacher}

        def loss(self, model, queries):
            assert not self.teacher.training and not any(p.requires_grad for p in self.teacher.parameters())
            return super().loss(model, queries)

    train(cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path, strategy="teacher_test", max_steps=1), rows=ROWS,
          features=fake_features, progress=False)
    assert log == ["prepare", ("to", "cpu")]


def test_only_the_main_process_writes_metrics_and_logs(tiny_llm_dir, tiny_whisper_dir, tmp_path, monkeypatch):
    from accelerate import Accelerator

    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    train(cfg_for(tiny_llm_dir, tiny_whisper_dir, tmp_path, strategy="adaptor", max_steps=1), rows=ROWS,
          features=fake_features, progress=False)
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "tensorboard").exists()
    assert not (tmp_path / "train_config.json").exists() and not (tmp_path / "model").exists()


def test_the_default_loss_is_bit_identical_to_the_models_cross_entropy(tiny_speech_llm_factory, tone):
    """The named-sum loss changes nothing for today's strategies: same loss, same gradients."""
    from speechkeep.models.speech_llm import Query

    m = tiny_speech_llm_factory()
    qs = [Query(audio=tone, response="Paris is the capital.", task="qa"),
          Query(text="Who wrote Hamlet?", response="Shakespeare.", task="t2t")]
    results = []
    for use_strategy in (True, False):
        m.zero_grad(set_to_none=True)
        if use_strategy:
            terms = STRATEGIES["adaptor"](load_config(TrainConfig)).loss(m, qs)
            assert list(terms.terms) == ["ce"] and terms.n_tokens > 0 and set(terms.per_task) == {"qa", "t2t"}
            loss = terms.total()
        else:
            loss, _ = m.loss(m.prepare(qs))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in m.adaptor.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))
