"""Chat formatting with token spans.

The same user prompt is rendered with or without a system prompt through the model's own chat
template, and the token spans analyses need are computed from character offsets: the system
prompt's content, the last user message, the whole prompt (everything up to where the assistant
would start), and an assistant response when one is given (teacher forcing).

Base models without a chat template (Gemma 3 270M) use the documented plain format::

    {system}\\n\\nUser: {user}\\nAssistant:{ response}

where the `{system}\\n\\n` part is left out when there is no system prompt, and the tokenizer adds
its BOS token as it would for any plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import SublensError

Message = dict[str, str]

PLAIN_FORMAT = "plain"
TEMPLATE_FORMAT = "template"


@dataclass(frozen=True)
class FormattedPrompt:
    """A rendered conversation and where its parts sit, as token index ranges [start, end)."""

    text: str
    input_ids: list[int]
    prompt_len: int
    system_span: tuple[int, int] | None
    user_span: tuple[int, int]
    response_span: tuple[int, int] | None

    def positions(self, mode: str) -> list[int]:
        """Token indices for a position mode (see `POSITION_MODES`)."""
        if mode == "last":
            return [self.prompt_len - 1]
        if mode in ("all", "mean"):
            return list(range(self.prompt_len))
        if mode == "user":
            return list(range(*self.user_span))
        if mode == "system":
            if self.system_span is None:
                raise SublensError("positions 'system' need a system prompt: pass --system-prompt")
            return list(range(*self.system_span))
        if mode == "response":
            if self.response_span is None:
                raise SublensError(
                    "positions 'response' need assistant responses: give prompts as "
                    '{"messages": [...]} rows that end with an assistant message'
                )
            return list(range(*self.response_span))
        raise SublensError(
            f"unknown positions mode {mode!r}: use one of {', '.join(POSITION_MODES)}"
        )


# Modes that give one vector per prompt, and modes that give one per token.
SINGLE_POSITION_MODES = ("last", "mean")
TOKEN_POSITION_MODES = ("all", "user", "system", "response")
POSITION_MODES = SINGLE_POSITION_MODES + TOKEN_POSITION_MODES


def check_positions(mode: str) -> str:
    if mode not in POSITION_MODES:
        raise SublensError(
            f"unknown positions mode {mode!r}: use one of {', '.join(POSITION_MODES)}"
        )
    return mode


class ChatFormat:
    """Renders conversations for one tokenizer, through its chat template or the plain format."""

    def __init__(self, tokenizer: Any, style: str = "auto") -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise SublensError("sublens needs a fast (Rust) tokenizer to compute token spans")
        self.tokenizer = tokenizer
        if style == "auto":
            style = TEMPLATE_FORMAT if getattr(tokenizer, "chat_template", None) else PLAIN_FORMAT
        if style not in (TEMPLATE_FORMAT, PLAIN_FORMAT):
            raise SublensError(f"unknown chat style {style!r}: use auto, template or plain")
        self.style = style

    # -- rendering --------------------------------------------------------------------------------

    def _render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        if self.style == TEMPLATE_FORMAT:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        parts = []
        for msg in messages:
            if msg["role"] == "system":
                parts.append(f"{msg['content']}\n\n")
            elif msg["role"] == "user":
                parts.append(f"User: {msg['content']}\n")
            else:
                parts.append(f"Assistant: {msg['content']}\n")
        text = "".join(parts)
        return text + "Assistant:" if add_generation_prompt else text

    def build_messages(
        self, prompt: str | list[Message], system: str | None = None
    ) -> list[Message]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        messages = [dict(m) for m in messages]
        if system is not None:
            if messages and messages[0]["role"] == "system":
                raise SublensError(
                    "the prompt already has a system message: drop it or leave out --system-prompt"
                )
            messages = [{"role": "system", "content": system}, *messages]
        return messages

    def format(
        self,
        prompt: str | list[Message],
        system: str | None = None,
        response: str | None = None,
    ) -> FormattedPrompt:
        """Render `prompt` (a user string or a message list) with an optional system prompt.

        A message list that ends with an assistant turn is split: that turn becomes the response.
        """
        messages = self.build_messages(prompt, system)
        if messages[-1]["role"] == "assistant":
            if response is not None:
                raise SublensError("give the response either in the messages or separately")
            response = messages[-1]["content"]
            messages = messages[:-1]
        if not messages or messages[-1]["role"] != "user":
            raise SublensError("a prompt must end with a user message (then optionally assistant)")
        prompt_text = self._render(messages, add_generation_prompt=True)
        text = prompt_text
        if response is not None:
            if self.style == TEMPLATE_FORMAT:
                full = self._render(
                    [*messages, {"role": "assistant", "content": response}],
                    add_generation_prompt=False,
                )
                text = full if full.startswith(prompt_text) else prompt_text + response
            else:
                text = f"{prompt_text} {response}\n"
        return self._spans(text, prompt_text, messages, response)

    # -- spans ------------------------------------------------------------------------------------

    def _tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(
            text,
            add_special_tokens=self.style == PLAIN_FORMAT,
            return_offsets_mapping=True,
        )
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    @staticmethod
    def _char_to_tokens(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
        idx = [i for i, (a, b) in enumerate(offsets) if b > start and a < end and b > a]
        if not idx:
            raise SublensError("could not locate a message's tokens in the rendered prompt")
        return idx[0], idx[-1] + 1

    def _spans(
        self,
        text: str,
        prompt_text: str,
        messages: list[Message],
        response: str | None,
    ) -> FormattedPrompt:
        ids, offsets = self._tokenize(text)
        # Prompt tokens: those that end within the prompt text. Tokenizing the full text can merge
        # across the boundary, so count from the prompt-only tokenization instead.
        prompt_ids, _ = self._tokenize(prompt_text)
        prompt_len = len(prompt_ids)
        if ids[:prompt_len] != prompt_ids:
            raise SublensError("the response changed the prompt's tokenization; check the template")
        system_span = None
        search_from = 0
        if messages[0]["role"] == "system":
            content = messages[0]["content"]
            start = prompt_text.find(content) if content else -1
            if start < 0:
                raise SublensError("the chat template dropped the system prompt's text")
            system_span = self._char_to_tokens(offsets, start, start + len(content))
            search_from = start + len(content)
        user = messages[-1]["content"]
        ustart = prompt_text.rfind(user) if user else -1
        if ustart < search_from:
            raise SublensError("a user message is empty or missing from the rendered prompt")
        user_span = self._char_to_tokens(offsets, ustart, ustart + len(user))
        response_span = None
        if response is not None:
            if len(ids) <= prompt_len:
                raise SublensError("the assistant response is empty")
            response_span = (prompt_len, len(ids))
        return FormattedPrompt(text, ids, prompt_len, system_span, user_span, response_span)
