"""Speech alignment: teach the adaptor to turn speech into what the LLM reads (issue 6).

* :mod:`speechkeep.align.corpus` — a large multi-voice transcription corpus synthesized offline;
* :mod:`speechkeep.align.ctc` — the CTC stage onto the LLM's own vocabulary (no LLM forward);
* :mod:`speechkeep.align.recipe` — ``speechkeep align``: corpus -> CTC training -> evaluation -> card.
"""
