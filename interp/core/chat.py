"""Chat formatting with token spans.

The same user prompt is rendered with or without a system prompt through the model's own chat
template, and the token spans analyses need are computed from character offsets: the system
prompt's content, the last user message, the whole prompt (everything up to where the assistant
would start), and an assistant response when one is given (teacher forcing).

Base models without a chat template (Gemma 3 270M) use the documented plain format::

    {system}\\n\\nUser: {user}\\nAssistant:{ response}

where the `{system}\\n\\n` part is left out when there is no system prompt, and the tokenizer adds
its BOS token as it would for any plain text.

`fit_context` checks formatted prompts against the model's context (`LoadedModel.context_length`)
before any forward pass: call it wherever formatted prompts are run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from interp.core.errors import SublensError

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

    def keep_last(self, n: int, text: str) -> FormattedPrompt:
        """The last `n` tokens only (spans shifted and clipped; a span cut away becomes empty).

        `text` is what the kept tokens render to (the caller decodes them), so hashes and saved
        prompts describe what actually ran.
        """
        cut = max(len(self.input_ids) - n, 0)

        def shift(span: tuple[int, int] | None) -> tuple[int, int] | None:
            return None if span is None else (max(span[0] - cut, 0), max(span[1] - cut, 0))

        return replace(
            self,
            text=text,
            input_ids=self.input_ids[cut:],
            prompt_len=max(self.prompt_len - cut, 0),
            system_span=shift(self.system_span),
            user_span=shift(self.user_span),  # type: ignore[arg-type]
            response_span=shift(self.response_span),
        )


def fit_context(
    formatted: list[FormattedPrompt],
    limit: int | None,
    model: str,
    labels: Sequence[str],
    tokenizer: Any = None,
    truncate: bool = False,
    reserve: int = 0,
    fix: str | None = None,
) -> list[FormattedPrompt]:
    """Refuse prompts longer than the model's context, or keep their last tokens (`truncate`).

    Run it right after formatting, before any forward pass: past its context a model runs on
    positions it never saw (silently wrong numbers), and eager attention memory grows with the
    square of the length (a 15k-token prompt on the 512-token tiny model reached 15 GB).
    `reserve` tokens stay free for generation; `labels[i]` names prompt i in the error (its
    file line); `tokenizer` is needed only to truncate (the kept tokens' text).
    """
    if limit is None:
        return list(formatted)
    room = limit - reserve
    if room < 1:
        raise SublensError(
            f"{reserve} new tokens do not fit in {model}'s context of {limit}: ask for fewer"
        )
    out = []
    for fp, label in zip(formatted, labels, strict=True):
        n = len(fp.input_ids)
        if n <= room:
            out.append(fp)
            continue
        if not truncate:
            budget = f"{room} tokens ({limit} minus {reserve} new)" if reserve else f"{limit}"
            hint = fix or f"shorten it, or pass --truncate to keep its last {room} tokens"
            raise SublensError(
                f"{label}: the formatted prompt has {n} tokens, more than {model}'s context of "
                f"{budget}: {hint}"
            )
        if tokenizer is None:
            raise ValueError("fit_context needs the tokenizer to truncate")
        if fp.prompt_len - (n - room) < 1:
            raise SublensError(
                f"{label}: its assistant response alone fills {model}'s context of {room} "
                "tokens, so --truncate would keep no prompt token: shorten the response"
            )
        kept = fp.input_ids[n - room :]
        text = tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        out.append(fp.keep_last(room, text))
    return out


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
