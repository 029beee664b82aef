"""Two processes on CPU (gloo), launched the way the README says: ``accelerate launch --multi_gpu
--num_processes 2 -m speechkeep ...`` (issue 18).

- `train`: 2 processes with micro-batches of 2 end with the weights and loss of 1 process with
  ``optim.grad_accum=2`` (the same global batch), and a checkpoint written by 2 processes resumes
  with 1 and the other way round, to the same weights;
- `train` under FSDP2 (configs/accelerate/fsdp.yaml, fp32 on CPU): the same, with the LLM trained and
  sharded, and the saved model loads;
- `eval`: batches shared out and gathered back in order: the same predictions and metrics;
- `importance`: batches shared out, scores summed over the processes: the same scores.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import torch

from test_kill_resume import REPO, _env, _same_weights, _weights, work  # noqa: F401  (work: the shared fixture)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(root, args, processes: int = 1, config: str | None = None, launch: tuple = ()) -> str:
    """``speechkeep ARGS`` in 1 process, or through ``accelerate launch`` in several (with the flags, or
    with an accelerate config file of configs/accelerate/ and the flags ``launch``); returns stderr."""
    if processes == 1:
        cmd = [sys.executable, "-m", "speechkeep"]
    elif config:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs" / "accelerate" / config),
               "--num_processes", str(processes), "--main_process_port", str(_port()), *launch, "-m", "speechkeep"]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_port()), "-m", "speechkeep"]
    p = subprocess.run(cmd + [str(a) for a in args], env=_env(root, None), cwd=root, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return p.stderr


def _train_args(work, out, steps, processes):
    # constant learning rate: a run of 2 steps and its continuation to 4 follow the same schedule as 4 steps
    return ["train", f"model.llm={work['llm']}", f"model.speech_encoder={work['wh']}", "model.adaptor.hidden_size=16",
            "init_from=none", f"data.train={work['data']}", "data.batch_size=2", f"optim.grad_accum={2 // processes}",
            "optim.schedule=constant", "optim.warmup_steps=0", "optim.adaptor_lr=1e-2", f"max_steps={steps}",
            "save_every=2", "log_every=1", "resume=true", f"output_dir={out}"]


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _losses(out):
    return [float(line.split(",")[1]) for line in (out / "metrics.csv").read_text().splitlines()[1:]]


def test_two_processes_train_like_one_with_the_same_global_batch_and_checkpoints_cross_resume(work):
    root = work["root"]
    one_then_two, two_then_one, straight = root / "mp_12", root / "mp_21", root / "mp_1"
    run(root, _train_args(work, one_then_two, 2, 1))
    run(root, _train_args(work, two_then_one, 2, 2), processes=2)
    # after 2 steps: 2 processes (a micro-batch each) = 1 process (2 micro-batches accumulated)
    _same_weights(one_then_two / "model", two_then_one / "model")
    assert abs(_summary(one_then_two)["final_loss"] - _summary(two_then_one)["final_loss"]) <= 1e-6
    a = _weights(one_then_two / "model")
    # each checkpoint resumed by the other process count, to step 4
    run(root, _train_args(work, one_then_two, 4, 2), processes=2, config="ddp.yaml")  # the shipped config
    run(root, _train_args(work, two_then_one, 4, 1))
    run(root, _train_args(work, straight, 4, 1))
    for out in (one_then_two, two_then_one):
        _same_weights(straight / "model", out / "model")
        assert _summary(out)["steps"] == 4
        assert abs(_summary(out)["final_loss"] - _summary(straight)["final_loss"]) <= 1e-6
        assert len(_losses(out)) == 4
        for x, y in zip(_losses(out), _losses(straight)):
            assert abs(x - y) <= 2e-5  # metrics.csv rounds to 5 decimals
    before = _weights(root / "mp_1" / "model")
    assert any(not torch.equal(v, w) for v, w in zip(before.values(), a.values()))  # steps 3-4 changed something


def test_fsdp_two_processes_train_like_one_and_checkpoints_cross_resume(work):
    """The shipped FSDP2 config (one shard unit per decoder layer, the rest in the root unit), in fp32:
    strategy=full, so the LLM's weights, gradients and Adam moments are sharded and gathered for the
    checkpoints and the export."""
    from speechkeep.models.speech_llm import SpeechLLM

    root = work["root"]
    sharded_then_one, one_then_sharded, straight = root / "fsdp_21", root / "fsdp_12", root / "fsdp_1"

    def fsdp(args):
        err = run(root, args, processes=2, config="fsdp.yaml", launch=("--mixed_precision", "no"))
        assert "FSDP2: 3 shard units over 2 processes (cpu)" in err  # 2 decoder layers + the root
        return err

    def args(out, steps, processes):
        return _train_args(work, out, steps, processes) + ["strategy=full"]

    fsdp(args(sharded_then_one, 2, 2))
    run(root, args(one_then_sharded, 2, 1))
    _same_weights(one_then_sharded / "model", sharded_then_one / "model")
    assert abs(_summary(one_then_sharded)["final_loss"] - _summary(sharded_then_one)["final_loss"]) <= 1e-5
    assert (sharded_then_one / "model" / "llm").is_dir()  # the trained LLM, gathered whole
    # each checkpoint resumed by the other kind of run, to step 4
    run(root, args(sharded_then_one, 4, 1))
    fsdp(args(one_then_sharded, 4, 2))
    run(root, args(straight, 4, 1))
    for out in (sharded_then_one, one_then_sharded):
        _same_weights(straight / "model", out / "model")
        assert _summary(out)["steps"] == 4
        assert abs(_summary(out)["final_loss"] - _summary(straight)["final_loss"]) <= 1e-5
        for x, y in zip(_losses(out), _losses(straight), strict=True):
            assert abs(x - y) <= 2e-5
    # the model saved by the FSDP run loads as one process's does
    a, b = (SpeechLLM.from_pretrained(d / "model") for d in (one_then_sharded, straight))
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-6, rtol=0, msg=k)


def test_eval_shares_batches_across_two_processes_and_gathers_them_in_order(work):
    root = work["root"]
    args = ["eval", "--model", work["model"], "--data", work["data"], "--tasks", "t2t", "s2t", "ppl",
            "--max-new-tokens", "3", "--batch-size", "2", "--out"]
    run(root, args + [root / "mp_eval1"])
    err = run(root, args + [root / "mp_eval2"], processes=2)
    # 3 batches of 2 per task (t2t, s2t, ppl text, ppl speech): 2 + 1 each
    assert "process 0 of 2 computed 8 batches" in err and "process 1 of 2 computed 4 batches" in err
    one, two = root / "mp_eval1", root / "mp_eval2"
    assert (two / "predictions.jsonl").read_text() == (one / "predictions.jsonl").read_text()
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    m1.pop("seconds"), m2.pop("seconds"), m1.pop("seconds_per_task"), m2.pop("seconds_per_task")
    assert m1 == m2
    assert not (two / "partial").exists()


def test_importance_shares_batches_across_two_processes_and_sums_the_scores(work):
    root = work["root"]
    for conv in ("abs_sum", "signed_sum"):
        args = ["importance", "--model", work["model"], "--data", work["data"], "--fraction", "1", "--input", "speech",
                "--batch-size", "2", "--convention", conv, "--out"]
        run(root, args + [root / f"mp_imp1_{conv}"])
        err = run(root, args + [root / f"mp_imp2_{conv}"], processes=2)
        assert "process 0 of 2 scored 2 batches" in err and "process 1 of 2 scored 1 batches" in err
        one, two = _weights(root / f"mp_imp1_{conv}"), _weights(root / f"mp_imp2_{conv}")
        assert set(one) == set(two)
        for k in one:  # the same sums in another order
            torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-9, msg=k)
        meta = json.loads((root / f"mp_imp2_{conv}" / "summary.json").read_text())["meta"]
        assert meta["processes"] == 2 and meta["n_batches"] == 3
