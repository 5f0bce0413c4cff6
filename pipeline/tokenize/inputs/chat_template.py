"""Chat templates: jinja2 source text that renders a conversation, treated as untrusted input.

A template is refused before anything runs when it is too large, does not parse, or names a
private attribute (`__class__`, `_x`: the way out of every jinja sandbox escape) or uses
`import`/`include`/`extends`. It then renders in jinja2's immutable sandbox with:
- a deadline per render (checked on every attribute and item lookup, call, operator, loop step
  of `range` and piece of output), so a loop that never ends is stopped;
- a cap on the rendered size and on what `*`/`**` may build;
- no `strftime_now` or other clock: the same conversation always renders the same text.
`load_template` also renders a probe conversation, so a template that fails, times out or is
not incremental (see `pipeline.tokenize.inputs.chat`) is refused when the job starts."""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import Iterator
from typing import Any

from pipeline.errors import ConfigError

MAX_TEMPLATE_BYTES = 256 << 10
RENDER_SECONDS = 2.0  # a record's whole conversation (all its incremental renders)
MAX_RANGE = 100_000
MAX_BUILT = 1 << 20  # the largest string or list `*` may build, in items

# Built-in templates, selected by name (`--chat-template chatml|llama3`).
BUILTIN = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{% endif %}"
    ),
}

PROBE = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3 + 3?"},
    {"role": "assistant", "content": "6."},
]


class TemplateTimeout(Exception):
    """A render ran past its deadline."""


class TemplateTooLarge(Exception):
    """A render produced (or tried to build) more than allowed."""


class _Clock:
    """The deadline of the render in progress (one render at a time per template object)."""

    deadline = float("inf")

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateTimeout(f"rendering took over {RENDER_SECONDS:g} s")


def _environment(clock: _Clock) -> Any:
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def getattr(self, obj: Any, attribute: str) -> Any:
            clock.check()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            clock.check()
            return super().getitem(obj, argument)

        def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            clock.check()
            return super().call(__context, __obj, *args, **kwargs)

        def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
            clock.check()
            if op == "**" and isinstance(right, int) and abs(right) > 64:
                raise SecurityError("exponent too large")
            if op == "*":
                for seq, n in ((left, right), (right, left)):
                    sized = isinstance(seq, str | list | tuple) and isinstance(n, int)
                    if sized and len(seq) * n > MAX_BUILT:
                        raise SecurityError("'*' would build too large a value")
            return operator.mul(left, right) if op == "*" else operator.pow(left, right)

    def safe_range(*args: int) -> Iterator[int]:
        values = range(*args)
        if len(values) > MAX_RANGE:
            raise SecurityError(f"range of {len(values)} items (at most {MAX_RANGE})")
        for value in values:
            clock.check()
            yield value

    def raise_exception(message: str) -> None:
        from jinja2.exceptions import TemplateError

        raise TemplateError(str(message))

    env = Sandbox(  # (loop controls: `{% break %}` / `{% continue %}`, as HF renders templates)
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        extensions=["jinja2.ext.loopcontrols"],
    )
    env.globals.pop("lipsum", None)
    env.globals.update(range=safe_range, raise_exception=raise_exception)
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": False}
    return env


def _refuse_unsafe(env: Any, source: str, where: str) -> None:
    """Refuse, before anything runs, a template that names private attributes or loads others."""
    from jinja2 import nodes
    from jinja2.exceptions import TemplateSyntaxError

    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise ConfigError(
            f"chat template {where} does not parse: {exc.message} (line {exc.lineno})"
        ) from None
    private: dict[str, int] = {}
    for node in tree.find_all((nodes.Getattr, nodes.Const)):
        if isinstance(node, nodes.Getattr):
            name = node.attr if node.attr.startswith("_") else None
        else:  # a string such as "__class__" given to [] or to the attr filter
            value = node.value
            name = value if isinstance(value, str) and value.startswith("__") else None
        if name:
            private.setdefault(name, node.lineno)
    if private:
        names = ", ".join(f"{n!r} (line {line})" for n, line in private.items())
        raise ConfigError(
            f"chat template {where} refers to private attributes {names}: refused; "
            "nothing was rendered"
        )
    for kind in (nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends):
        found = next(iter(tree.find_all(kind)), None)
        if found is not None:
            raise ConfigError(
                f"chat template {where} uses {kind.__name__.lower()} (line {found.lineno}): "
                "a chat template must be one self-contained file"
            )


class ChatTemplate:
    """A checked template; `render` gives the text of a conversation within the limits."""

    def __init__(self, source: str, where: str = "(given)"):
        size = len(source.encode("utf-8"))
        if size > MAX_TEMPLATE_BYTES:
            raise ConfigError(
                f"chat template {where} is {size} bytes, over the {MAX_TEMPLATE_BYTES}-byte limit"
            )
        self.source = source
        self._clock = _Clock()
        env = _environment(self._clock)
        _refuse_unsafe(env, source, where)
        self._template = env.from_string(source)

    def start(self) -> None:
        """Start the deadline of one record's renders."""
        self._clock.deadline = time.monotonic() + RENDER_SECONDS

    def render(self, messages: list[dict[str, Any]], context: dict[str, Any], limit: int) -> str:
        """The text of `messages` (no generation prompt); raises TemplateTimeout, TemplateTooLarge
        or jinja2's errors."""
        out: list[str] = []
        size = 0
        for piece in self._template.generate(
            messages=messages, add_generation_prompt=False, **context
        ):
            self._clock.check()
            size += len(piece)
            if size > limit:
                raise TemplateTooLarge(f"rendered text is over {limit} characters")
            out.append(piece)
        return "".join(out)


@functools.lru_cache(maxsize=8)
def compiled(source: str) -> ChatTemplate:
    """The checked template of `source`, compiled once per process."""
    return ChatTemplate(source)


def template_source(spec: str, storage_options: dict | None = None) -> tuple[str, str]:
    """(source text, where it came from) of `--chat-template`: a built-in name or a file/URL
    holding either the template itself or a tokenizer_config.json with a `chat_template`."""
    if spec in BUILTIN:
        return BUILTIN[spec], f"built-in {spec!r}"
    from pipeline.output.storage import url_to_fs

    fs, path = url_to_fs(spec, storage_options)
    try:
        with fs.open(path, "rb") as handle:
            data = handle.read(MAX_TEMPLATE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"chat template {spec!r} is neither a built-in ({', '.join(BUILTIN)}) nor a file"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"chat template file {spec!r} is not UTF-8: {exc}") from None
    if path.endswith(".json"):
        import json

        from tokenizers_impl.special_tokens import chat_template_of

        try:
            config = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"chat template file {spec!r} is not valid JSON: {exc}") from None
        text = chat_template_of(config if isinstance(config, dict) else None)
        if text is None:
            raise ConfigError(f"chat template file {spec!r} has no chat_template string")
    return text, repr(spec)


def resolve_chat(
    fmt: str,
    spec: str | None,
    tokenizer_template: str | None,
    bos_token: str | None,
    eos_token: str | None,
    storage_options: dict | None = None,
) -> dict[str, str]:
    """The chat fields of a job's read options: the template's text (from `--chat-template`, else
    the tokenizer's own) and the BOS/EOS text it may print. Empty when the job reads no chats.
    The template is checked and rendered once on a probe conversation, so a hostile or broken
    one stops the job before any record is read."""
    if spec:
        source, where = template_source(spec, storage_options)
    elif tokenizer_template:
        source, where = tokenizer_template, "of the tokenizer (tokenizer_config.json)"
    elif fmt == "chat":
        raise ConfigError(
            "format chat needs a chat template: the tokenizer has none (no chat_template in a "
            f"tokenizer_config.json beside it); give --chat-template {'|'.join(BUILTIN)}|FILE"
        )
    else:
        return {}
    chat = {
        "chat_template": source,
        "chat_bos_token": bos_token or "",
        "chat_eos_token": eos_token or "",
    }
    _probe(source, where, chat)
    return chat


def _check_turn_end(
    where: str, full: str, prefix: str, message: dict[str, str], following: dict[str, str]
) -> None:
    """Refuse a template that prints nothing after an assistant reply rendered last, but text
    once another message follows: a turn's text is what the render up to it holds, so that text
    (an end-of-turn token, e.g. printed unless `loop.last`) would be the next message's, and no
    reply would train an end of turn (found: `<|im_end|>` untrained after every reply). Two
    templates that print the same text (an end after each reply but the last, or a separator
    before each message but the first) cannot be told apart; both leave replies without an end.
    Whitespace alone between turns is accepted."""
    if message["role"] != "assistant" or not prefix.endswith(message["content"]):
        return
    between = full[len(prefix) : full.find(following["content"], len(prefix))]
    if between.strip():
        raise ConfigError(
            f"chat template {where} prints nothing after an assistant reply that is the last "
            f"message, and {between!r} once another message follows (e.g. an end-of-turn "
            "printed unless `loop.last`, or separators printed before messages): that text "
            "would belong to the next message, so no reply would train an end of turn; print "
            "the end of turn after every reply"
        )


def _probe(source: str, where: str, chat: dict[str, str]) -> None:
    from jinja2.exceptions import TemplateError

    template = ChatTemplate(source, where)
    context = {"bos_token": chat["chat_bos_token"], "eos_token": chat["chat_eos_token"]}
    template.start()
    probe = PROBE
    try:
        try:
            full = template.render(probe, context, 1 << 20)
        except TemplateError:  # a template without a system role (Gemma's, Mistral's) refused
            # the whole job; its records with a system message are its rejects
            probe = PROBE[1:]
            full = template.render(probe, context, 1 << 20)
        for i in range(len(probe) - 1):
            prefix = template.render(probe[: i + 1], context, 1 << 20)
            if not full.startswith(prefix):
                raise ConfigError(
                    f"chat template {where} is not incremental: it renders the first {i + 1} "
                    "messages of a conversation differently once later messages follow, so "
                    "turns cannot be told apart for the loss mask"
                )
            _check_turn_end(where, full, prefix, probe[i], probe[i + 1])
    except (TemplateError, TemplateTimeout, TemplateTooLarge, RecursionError) as exc:
        raise ConfigError(
            f"chat template {where} failed on a probe conversation: {type(exc).__name__}: {exc}"
        ) from None
    for message in probe:
        if message["content"] not in full:
            raise ConfigError(
                f"chat template {where} does not print the messages' content "
                f"(rendered a probe conversation as {full[:200]!r})"
            )
