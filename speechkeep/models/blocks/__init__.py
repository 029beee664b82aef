"""Decoder blocks that can be inserted into a Hugging Face causal LM (see :mod:`speechkeep.models.upscaling`)."""
