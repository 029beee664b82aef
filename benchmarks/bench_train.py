"""Training throughput: speechkeep vs a plain Hugging Face ``Trainer`` loop, per strategy.

Same model (SmolLM2-135M + Whisper tiny.en + k=5 adaptor), same spoken questions and targets, same
batch size. The plain loop is what encoder-adaptor code usually does: run the Whisper encoder on the
30-s padded window at every step, build full-vocabulary logits for every position and let
``LlamaForCausalLM`` compute the loss, batches in random order (LoRA through peft in both).
speechkeep reads cached variable-length encoder features, applies the LM head only where a label is,
groups batches by length, runs the prompt prefix shared by a batch (system prompt) once, flushes fp32
denormals to zero on CPU, and uses fused AdamW (both sides
use LoRA r=8 with lora.dropout=0, speechkeep's default).

    python benchmarks/bench_train.py --data runs/demo/data/train/manifest.jsonl --steps 6
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a spoken manifest with teacher responses")
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps per measurement (after 1 warm-up)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--strategies", nargs="+", default=["adaptor", "full", "lora"])
    args = ap.parse_args()
    torch.set_num_threads(2)

    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from speechkeep.audio import load_audio
    from speechkeep.config import load_config
    from speechkeep.data.features import FeatureCache
    from speechkeep.data.manifest import read_manifest
    from speechkeep.models.speech_llm import Query, SpeechLLM, SpeechLLMConfig
    from speechkeep.strategies import get_strategy
    from speechkeep.train.config import TrainConfig
    from speechkeep.train.data import epoch_batches, examples_from_rows, to_queries
    from speechkeep.train.loop import make_optimizer

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rows = [r for r in read_manifest(args.data) if r.response][: args.batch_size * (args.steps + 1)]
    n_items = len(rows)
    base = SpeechLLM.build(SpeechLLMConfig(encode_mode="variable"))
    audios = {r.audio: load_audio(r.audio) for r in rows}
    from pathlib import Path

    cache = FeatureCache(Path(args.data).parent / "features", base.encoder, "variable")
    cache.get([r.audio for r in rows])  # warm the cache: speechkeep reads it, never recomputes

    results = {}
    for strat in args.strategies:
        cfg = load_config(TrainConfig, None, [f"strategy={strat}", "lora.r=8", "lora.dropout=0", "optim.lr=1e-4"])

        # ---------------- speechkeep (its loop flushes denormals on CPU; the plain loop does not)
        torch.set_flush_denormal(True)
        model = copy.deepcopy(base)
        groups = get_strategy(strat, cfg).setup(model)
        opt = make_optimizer([{"params": g["params"], "lr": g["lr"]} for g in groups], cfg)
        per_task = examples_from_rows(rows, {"qa": 1.0})
        batches = epoch_batches(per_task, {"qa": 1.0}, args.batch_size, seed=0, epoch=0)
        tokens, t0 = 0, None
        for i, b in enumerate(batches[: args.steps + 1]):
            if i == 1:
                t0, tokens = time.perf_counter(), 0
            qs = to_queries(b, cache.get, "")
            batch = model.prepare(qs)
            loss, _ = model.loss(batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(batch.attention_mask.sum())
        sk = tokens / (time.perf_counter() - t0)
        del model, opt

        # ---------------- plain HF Trainer loop
        torch.set_flush_denormal(False)
        model = copy.deepcopy(base)
        model.config.encode_mode = "padded"
        get_strategy(strat, cfg).setup(model)

        class Plain(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m
                self.tokens = 0

            def forward(self, idx):
                qs = [Query(audio=audios[rows[i].audio], response=rows[i].response) for i in idx.tolist()]
                b = self.m.prepare(qs)
                self.tokens += int(b.attention_mask.sum())
                out = self.m.llm(inputs_embeds=b.inputs_embeds, attention_mask=b.attention_mask,
                                 position_ids=b.position_ids, labels=b.labels)
                return {"loss": out.loss}

        plain = Plain(model)

        class Timer:
            def __init__(self):
                self.t0 = None

        from transformers import TrainerCallback

        timer = Timer()

        class Cb(TrainerCallback):
            def on_step_end(self, a, state, control, **kw):
                if state.global_step == 1:
                    timer.t0, plain.tokens = time.perf_counter(), 0

        ds = [{"idx": i} for i in range(n_items)]
        targs = TrainingArguments(output_dir="/tmp/bench_trainer", per_device_train_batch_size=args.batch_size,
                                  max_steps=args.steps + 1, learning_rate=1e-4, report_to=[], use_cpu=True,
                                  save_strategy="no", logging_strategy="no", dataloader_num_workers=0,
                                  disable_tqdm=True, remove_unused_columns=False, seed=0)
        trainer = Trainer(model=plain, args=targs, train_dataset=ds, callbacks=[Cb()],
                          data_collator=lambda feats: {"idx": torch.tensor([f["idx"] for f in feats])})
        trainer.train()
        hf = plain.tokens / (time.perf_counter() - timer.t0)
        results[strat] = (sk, hf)
        print(f"{strat:8s} speechkeep {sk:7.1f} tokens/s   plain HF Trainer {hf:7.1f} tokens/s   ratio {sk / hf:5.2f}x",
              flush=True)
        del model, plain, trainer


if __name__ == "__main__":
    main()
