"""Can the bundled LLM copy text on request? The control for the LLM-written transcription WER.

Gives SmolLM2-135M-Instruct the *text* of the first N WebQuestions trainmodel questions with the asr
task's instruction after it (as the spoken query gets it) and with copy instructions before it,
and prints the corpus WER of what it writes against the question itself.

    python benchmarks/check_llm_copy.py --n 24
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24, help="questions (first N of trainmodel.json)")
    ap.add_argument("--llm", default="bundled:smollm2-135m")
    args = ap.parse_args()

    from speechkeep.metrics import corpus_wer
    from speechkeep.models.llm import load_llm
    from speechkeep.models.speech_llm import Query, SpeechLLM, SpeechLLMConfig
    from speechkeep.data.webquestions import webquestions_file

    loaded = load_llm(args.llm)
    model = SpeechLLM(loaded.model, loaded.tokenizer, None, None, SpeechLLMConfig(llm=args.llm))  # text only
    qs = [d["qText"] for d in json.loads(webquestions_file("trainmodel").read_text())[: args.n]]
    prompts = {"<question>\\nTranscribe the audio.": lambda q: f"{q}\nTranscribe the audio.",
               "Repeat this text exactly:\\n<question>": lambda q: f"Repeat this text exactly:\n{q}",
               "Copy the following sentence:\\n<question>": lambda q: f"Copy the following sentence:\n{q}"}
    for name, make in prompts.items():
        outs = model.generate([Query(text=make(q)) for q in qs], max_new_tokens=32)
        print(f"WER {100 * corpus_wer(qs, outs):6.1f}%  {name}   e.g. {outs[1]!r}", flush=True)


if __name__ == "__main__":
    main()
