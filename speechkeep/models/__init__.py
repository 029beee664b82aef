"""Model builders: text LLMs, speech encoders, the adaptor, and the encoder-adaptor SpeechLLM."""
