"""Alignment cost per step: CTC onto the LLM vocabulary vs cross-entropy transcription through the LLM.

Same cached variable-length Whisper tiny.en features, same transcripts, same adaptor shape. Times
one optimizer step (forward + backward + AdamW) of:

* ``ctc-corpus-vocab`` — speechkeep's alignment stage: CTC over the LLM tokens that occur in the
  corpus transcripts (adaptor output x their frozen embeddings + blank), no LLM forward;
* ``ctc-full-vocab`` — the same over SmolLM2's whole 49,152-token vocabulary;
* ``ce-through-llm`` — transcription by cross-entropy through the frozen LLM (adaptor trained), the
  usual first stage (LM head only on the transcript positions).

    python benchmarks/bench_align.py --data runs/align/corpus/manifest.jsonl --steps 5
"""

from __future__ import annotations

import argparse
import random
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the alignment corpus manifest (features cached beside it)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per method (after 1 warm-up)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--sample", type=int, default=2000, help="utterances drawn from the manifest")
    args = ap.parse_args()
    torch.set_num_threads(2)

    from pathlib import Path

    from speechkeep.align.ctc import ctc_loss, ctc_vocabulary, load_features
    from speechkeep.data.manifest import read_manifest
    from speechkeep.models.adaptor import AdaptorConfig
    from speechkeep.models.speech_llm import Query, SpeechLLM, SpeechLLMConfig

    rows = read_manifest(args.data)
    random.Random(0).shuffle(rows)
    rows = rows[: args.sample]
    feats = load_features(rows, Path(args.data).parent / "features", "bundled:whisper-tiny.en", progress=False)
    base = SpeechLLM.build(SpeechLLMConfig(adaptor=AdaptorConfig(hidden_size=1024), encode_mode="variable"))
    tok = base.tokenizer
    ids = [tok(r.text, add_special_tokens=False)["input_ids"] for r in rows]
    emb = base.llm.get_input_embeddings()
    d_enc, d_llm = base.adaptor.d_encoder, base.adaptor.d_llm
    from speechkeep.models.adaptor import FrameStackAdaptor

    def batches():
        rng = random.Random(1)
        while True:
            yield rng.sample(range(len(rows)), args.batch_size)

    results = {}
    for name in ("ctc-corpus-vocab", "ctc-full-vocab", "ce-through-llm"):
        if name.startswith("ctc"):
            vocab = ctc_vocabulary(ids) if name == "ctc-corpus-vocab" else torch.arange(emb.weight.shape[0])
            ad = FrameStackAdaptor(d_enc, d_llm, AdaptorConfig(hidden_size=1024, output="ctc", ctc_vocab_size=len(vocab)))
            ad.ctc_vocab.copy_(vocab)
            index = {int(t): i + 1 for i, t in enumerate(vocab.tolist())}
            with torch.no_grad():
                vemb = ad.vocab_embeddings(emb).float()

            def step(b, ad=ad, index=index, vemb=vemb):
                return ctc_loss(ad, [feats[i].float() for i in b], [[index[t] for t in ids[i]] for i in b], vemb)
            params = list(ad.parameters())
        else:
            ad = base.adaptor

            def step(b):
                qs = [Query(speech_features=feats[i].float(), response=rows[i].text, instruction="Transcribe the audio.")
                      for i in b]
                return base.loss(base.prepare(qs))[0]
            params = list(ad.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4)
        it = batches()
        times = []
        for k in range(args.steps + 1):
            t = time.perf_counter()
            loss = step(next(it))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if k:
                times.append(time.perf_counter() - t)
        s = sum(times) / len(times)
        results[name] = s
        print(f"{name:18s} {s:6.2f} s/step  {args.batch_size / s:7.1f} utt/s", flush=True)
    print(f"corpus vocabulary: {len(ctc_vocabulary(ids))} tokens (of {emb.weight.shape[0]}); "
          f"ctc-corpus-vocab is {results['ce-through-llm'] / results['ctc-corpus-vocab']:.1f}x faster per utterance "
          f"than ce-through-llm")


if __name__ == "__main__":
    main()
