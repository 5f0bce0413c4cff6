"""Chat records: a list of {role, content} messages rendered with the job's chat template into
segments that say which text is the template's (its special tokens become special ids), which is
a message's content (always plain text: a user cannot inject special tokens) and which tokens the
model trains on (`train_on`).

Where each message's text lies in the rendered conversation is found without trusting the
template: the conversation is rendered whole, rendered again with every content replaced by a
unique sentinel (which places the contents between the template's own text), and rendered one
prefix at a time (message i's text ends where the render of messages[:i + 1] ends). A template
that renders a content conditionally, or renders earlier messages differently once later ones
follow, is refused for that record with its reason. The tokens trained on for an assistant
message are its content plus the template text after it up to the message's end, trailing
whitespace excluded (the end-of-turn token: `<|im_end|>`, `<|eot_id|>`)."""

from __future__ import annotations

from typing import Any

from pipeline.tokenize.inputs.chat_template import ChatTemplate, compiled
from pipeline.tokenize.inputs.types import ReadOptions

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "ipython", "function"})
TRAIN_ON = ("all", "assistant", "last-assistant")
# (text, is template text, trained on): template text may hold special tokens; content never does
Segment = tuple[str, bool, bool]


class ChatError(ValueError):
    """Why a conversation cannot become a document (the reject's reason)."""


def _sentinel(i: int) -> str:
    return f"\ue000tokenmill-content-{i}\ue001"


class ChatRenderer:
    """Renders one unit's chat records (a template compiled once per process)."""

    def __init__(self, opts: ReadOptions):
        self.template: ChatTemplate = compiled(opts.chat_template)
        self.train_on = opts.train_on
        self.context = {"bos_token": opts.chat_bos_token, "eos_token": opts.chat_eos_token}
        self.limit = opts.max_doc_bytes

    def segments(self, messages: Any) -> list[Segment]:
        """The segments of one conversation, or ChatError with the reason."""
        trained = self._check(messages)
        self.template.start()
        try:
            full = self._render(messages)
            shape = self._render([{**m, "content": _sentinel(i)} for i, m in enumerate(messages)])
            prefixes = [self._render(messages[: i + 1]) for i in range(len(messages) - 1)]
        except Exception as exc:  # the template's own failure, whatever it raised
            raise ChatError(f"chat template error: {type(exc).__name__}: {exc}") from None
        for i, prefix in enumerate(prefixes):
            if not full.startswith(prefix):
                raise ChatError(
                    f"chat template renders messages 0..{i} differently once later messages "
                    "follow; the loss mask cannot be placed"
                )
        spans = _content_spans(full, shape, messages)
        ends = [len(p) for p in prefixes] + [len(full)]
        return _build(full, spans, ends, trained, self.train_on == "all")

    def _render(self, messages: list[dict[str, Any]]) -> str:
        return self.template.render(messages, self.context, self.limit)

    def _check(self, messages: Any) -> list[bool]:
        """Validate the conversation; returns which messages are trained on."""
        if not isinstance(messages, list):
            raise ChatError(f"messages is {type(messages).__name__}, expected a list")
        if not messages:
            raise ChatError("empty conversation")
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise ChatError(f"message {i} is {type(message).__name__}, expected an object")
            role, content = message.get("role"), message.get("content")
            if role is None:
                raise ChatError(f"message {i} has no role")
            if not isinstance(role, str) or role not in ROLES:
                raise ChatError(f"message {i} has unknown role {role!r}")
            if not isinstance(content, str):
                raise ChatError(
                    f"content of message {i} is {type(content).__name__}, expected string"
                )
            if "\ue000tokenmill-content-" in content:
                raise ChatError(f"content of message {i} holds tokenmill's sentinel text")
        assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if self.train_on == "all":
            return [True] * len(messages)
        if not assistant:
            raise ChatError(f"no assistant message to train on (train_on {self.train_on})")
        keep = set(assistant[-1:] if self.train_on == "last-assistant" else assistant)
        return [i in keep for i in range(len(messages))]


def _content_spans(full: str, shape: str, messages: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """[start, end) of each message's content in `full`, aligning it with `shape` (the render
    with sentinels). A template may trim contents; anything else it does to them is refused."""
    spans: list[tuple[int, int]] = []
    pos = shape_pos = 0
    for i, message in enumerate(messages):
        mark = _sentinel(i)
        at = shape.find(mark, shape_pos)
        if at < 0 or shape.find(mark, at + len(mark)) >= 0:
            raise ChatError(f"chat template does not render the content of message {i} once")
        between = shape[shape_pos:at]
        if full[pos : pos + len(between)] != between:
            raise ChatError(f"chat template renders message {i} depending on its content")
        pos += len(between)
        shape_pos = at + len(mark)
        following = shape[shape_pos : _next_mark(shape, shape_pos)]
        content = message["content"]
        for candidate in (content, content.strip()):
            end = pos + len(candidate)
            if full[pos:end] == candidate and full[end : end + len(following)] == following:
                break
        else:
            raise ChatError(f"chat template changes the content of message {i} beyond trimming")
        spans.append((pos, end))
        pos = end
    if full[pos:] != shape[shape_pos:]:
        raise ChatError("chat template renders the conversation depending on its contents")
    return spans


def _next_mark(shape: str, start: int) -> int:
    at = shape.find("\ue000tokenmill-content-", start)
    return len(shape) if at < 0 else at


def _build(
    full: str,
    spans: list[tuple[int, int]],
    ends: list[int],
    trained: list[bool],
    train_all: bool,
) -> list[Segment]:
    out: list[Segment] = []
    start = 0
    for (a, b), end, train in zip(spans, ends, trained, strict=True):
        if not start <= a <= b <= end:
            raise ChatError("chat template renders a message's content outside its turn")
        tail = full[b:end]
        core = tail.rstrip()
        for text, template, flag in (
            (full[start:a], True, train_all),
            (full[a:b], False, train),
            (core, True, train),
            (tail[len(core) :], True, train_all),
        ):
            if text:
                out.append((text, template, flag))
        start = end
    if start < len(full):
        out.append((full[start:], True, train_all))
    return out
