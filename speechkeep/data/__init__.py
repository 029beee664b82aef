"""The spoken-data pipeline: text questions -> spoken questions, teacher responses and encoder features.

``speechkeep data build --questions FILE --out DIR`` (see :mod:`speechkeep.data.build`) runs

1. :mod:`speechkeep.data.questions` — read questions from a WebQuestions-style JSON array
   (``{qId, qText, answers}``), generic JSONL (``{id, text, [answers], [response], [audio]}`` per
   line) or a Hugging Face ``datasets`` directory written by ``save_to_disk`` (an audio column there
   means no TTS). Bad input is a :class:`~speechkeep.errors.DataError` naming ``file:line``.
2. :mod:`speechkeep.data.tts` — speak each question with a voice of the registry (piper and espeak,
   offline), resumable and in parallel, into ``DIR/audio/<voice>/<id>.wav`` (16 kHz mono).
3. :mod:`speechkeep.data.teacher` — optionally, the base LLM's own greedy response to each text
   question through its chat template (LLaMA-Omni stage-1 self-distillation targets), cached.
4. :mod:`speechkeep.data.manifest` — ``DIR/manifest.jsonl``, one line per utterance, written
   atomically. The same manifest serves speech -> response training, speech -> transcript (ASR:
   ``text`` is the transcript) and evaluation (``answers``).
5. :mod:`speechkeep.data.features` — optionally, the frozen encoder's output for each utterance,
   stored once as fp16 safetensors keyed by encoder identity + mode + audio content hash.

Every stage is resumable: re-running a build skips finished work. Nothing here imports torch at
module level, so TTS worker processes stay light.
"""
