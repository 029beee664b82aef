"""Chat-template plumbing: where a spoken query goes, and which token ends the assistant turn.

A spoken query is spliced LLaVA-style: the user turn of the LLM's own chat template holds a
placeholder string; the rendered prompt is split there and the adaptor outputs go in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

SPEECH_PLACEHOLDER = "<|speech|>"


@dataclass
class ChatFormat:
    """Renders prompts for one tokenizer/chat template."""

    tokenizer: object
    system_prompt: str | None = None
    """None keeps the template's own default system prompt (if it has one)."""

    def __post_init__(self) -> None:
        self._speech_prompt_cache: dict[str, tuple[list[int], list[int]]] = {}
        self._text_prompt_cache: dict[str, list[int]] = {}

    def messages(self, user_content: str) -> list[dict]:
        msgs = []
        if self.system_prompt is not None:
            msgs.append({"role": "system", "content": self.system_prompt})
        msgs.append({"role": "user", "content": user_content})
        return msgs

    def render(self, user_content: str) -> str:
        """The prompt text up to and including the assistant's generation prompt."""
        return self.tokenizer.apply_chat_template(
            self.messages(user_content), tokenize=False, add_generation_prompt=True
        )

    def encode(self, text: str) -> list[int]:
        """Tokenize rendered template text (special tokens are literal in the template)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_prompt_ids(self, question: str) -> list[int]:
        """Prompt token ids of a text question (memoized: training and evaluation ask again and again)."""
        if question not in self._text_prompt_cache:
            if len(self._text_prompt_cache) > 100_000:
                self._text_prompt_cache.clear()
            self._text_prompt_cache[question] = self.encode(self.render(question))
        return list(self._text_prompt_cache[question])

    def speech_prompt_ids(self, instruction: str | None = None) -> tuple[list[int], list[int]]:
        """Token ids before and after the speech segment in a spoken-query prompt.

        With an ``instruction`` (e.g. "Transcribe the audio."), the user turn is the speech followed
        by a newline and the instruction."""
        key = instruction or ""
        if key not in self._speech_prompt_cache:
            content = SPEECH_PLACEHOLDER + (f"\n{instruction}" if instruction else "")
            text = self.render(content)
            if text.count(SPEECH_PLACEHOLDER) != 1:
                raise ValueError("the chat template must place the user content exactly once")
            before, after = text.split(SPEECH_PLACEHOLDER)
            self._speech_prompt_cache[key] = (self.encode(before), self.encode(after))
        return self._speech_prompt_cache[key]

    @cached_property
    def end_of_turn_id(self) -> int:
        """The token that closes an assistant turn (e.g. ``<|im_end|>``, ``<end_of_turn>``, EOS)."""
        sentinel = "SPEECHKEEP_SENTINEL"
        text = self.tokenizer.apply_chat_template(
            self.messages("hi") + [{"role": "assistant", "content": sentinel}], tokenize=False
        )
        tail = text.split(sentinel, 1)[1]
        ids = self.encode(tail)
        if ids:
            return ids[0]
        return self.tokenizer.eos_token_id

    def response_ids(self, response: str) -> list[int]:
        """Target tokens of a response: its tokens followed by the end-of-turn token."""
        return self.encode(response) + [self.end_of_turn_id]

    @cached_property
    def stop_ids(self) -> list[int]:
        ids = {self.end_of_turn_id}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(ids)
