"""Evaluation: text ability (T2T), spoken ability (S2T, ASR), perplexity, the cascade baseline,
the modality gap and retention against the untouched base model."""
