"""The load-time probe set of the exactness gate: tokenmill's multilingual probe texts, adversarial
strings where encoders are known to diverge (regex engines, Unicode versions, long runs), and
strings built from the tokenizer's own added tokens."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from tokenizers_impl.files import probe_texts

MAX_ADDED_TOKEN_PROBES = 256
MAX_PLAIN_TOKEN_PROBES = 4096

_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re")
_SPACES = (
    " ",
    "\t",
    "\n",
    "\r\n",
    "\u00a0",
    "\u3000",
    "\u2009",
    "\u180e",
    "\u200b",
    "\x0b",
    "\x0c",
)

ADVERSARIAL: tuple[str, ...] = (
    # contractions after whitespace other than " ", after letters, digits, punctuation
    *(f"x{space}{c} y" for space in _SPACES for c in _CONTRACTIONS[:7]),
    "don't can't I'M YOU'RE we'Ve they'lL it'S'S ''s 's",
    "1's 2'll ?'re 's's'd",
    # U+180E (a space before Unicode 6.3) and other format/space characters
    "a\u180eb",
    "\u180e",
    " \u180e\u180e x \u180e",
    "\u180e's",
    "\u2028\u2029\x85 \u200d\u200c\ufeff\u2060",
    "\x00\x01\x1f\x7f",
    # characters added in Unicode 17 (a letter, digits, a mark): letters to a library with
    # Unicode 17 tables, unassigned to `tokenizers` and tiktoken, so pre-tokens differ around them
    "\u088f's \ua7ce's x\U00010940's \u1acf's",
    "1\U00011de023 \U00011de0\U00011de1 9\u0c5c9",
    # \r\n runs and whitespace runs
    "a\r\n\r\n\r\nb",
    "\r\n \r\n\t\r\n  x",
    "\r\r\n\n\r",
    "  leading",
    "trailing   ",
    " \t \n \t\n\n  \n",
    "x  \n  y\t\t\tz",
    # digits
    "1234567890 12,345.6789 1e10 0x1F x2y3z4",
    "0000000000000000000000000000",
    "\u0663\u0664\u0665 \u0967\u0968 \u2460\u2461 \uff11\uff12\uff13 \u00b2\u00b3",
    "$1,000,000.00 -42 +3.14159 2024-01-01T12:00:00Z",
    # emoji and pictographs
    "\U0001f600\U0001f603\U0001f604 \U0001f44d\U0001f3fd \u2764\ufe0f",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f1e9\U0001f1ea\U0001f1eb\U0001f1f7",
    # mixed scripts, combining marks, case oddities
    "Hello \u043c\u0438\u0440 \u4e16\u754c \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd "
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 "
    "\uc548\ub155 \u3053\u3093\u306b\u3061\u306f",
    "e\u0301 a\u0308 \u01c5emal \u0130stanbul stra\u00dfe \ufb01ne \u017f \u1e9e",
    "abc\u043c\u0438\u0440123\u4e16\u754c!?\u00bfcaf\u00e9",
    # code and markup
    "def f(x):\n    return x**2  # c\n\n\tif(a&&b){y=[1,2];}\n",
    '{"key": "value", "n": [1, 2.5, null]} <a href="https://x.org/a?b=c&d=e">t</a>',
    # special-token strings inside text are plain text
    "<|endoftext|>",
    "a<|endoftext|>b <|endoftext|><|endoftext|>",
    "<|begin_of_text|>hi<|end_of_text|><|eot_id|>",
    "<s>x</s> <|im_start|>user\nhi<|im_end|> [CLS] [SEP] <pad> <unk> <mask>",
    # long runs of one character (pieces far longer than any token)
    "a" * 5000,
    " " * 3000,
    "\n" * 2000,
    "!" * 2000,
    "ab" * 2000,
    "\U0001f600" * 1000,
    "1" * 3000,
    "\t" * 1000,
    "\u00a0" * 500,
    "-" * 4000,
    "\u4e2d" * 2000,
    " a" * 2000,
    "x" * 3000 + " " * 100 + "y",
)


def added_token_probes(contents: Iterable[str], plain: Iterable[str] = ()) -> list[str]:
    """Probes that contain each added token's text, alone and inside words: every `plain` one
    (non-special added tokens, matched inside text; backends differ most on them: single_word,
    lstrip, rstrip) up to MAX_PLAIN_TOKEN_PROBES, then the others up to MAX_ADDED_TOKEN_PROBES
    (a Llama-3 file's 256 reserved specials came first and left its plain ones out)."""
    out: list[str] = []
    plain = list(dict.fromkeys(plain))[:MAX_PLAIN_TOKEN_PROBES]
    probed = set(plain)
    others = [c for c in dict.fromkeys(contents) if c not in probed]
    for content in plain + others[:MAX_ADDED_TOKEN_PROBES]:
        if content:
            out += [content, f"x{content}y {content} {content}{content}\n"]
    return out


def probe_set(added_tokens: Iterable[str] = (), plain: Iterable[str] = ()) -> list[str]:
    """The gate's probe texts: `probe_texts()` first (so callers may slice them off), then the
    adversarial strings, then strings built from the added tokens (`plain`: the non-special
    ones, all probed)."""
    return [*probe_texts(), *ADVERSARIAL, *added_token_probes(added_tokens, plain)]


def first_difference(
    texts: Sequence[str],
    got: tuple[np.ndarray, np.ndarray],
    want: tuple[np.ndarray, np.ndarray],
) -> str | None:
    """None when two flat encodings are equal, else where they first differ (text and token)."""
    (got_flat, got_off), (want_flat, want_off) = got, want
    if np.array_equal(got_off, want_off) and np.array_equal(got_flat, want_flat):
        return None
    if len(got_off) != len(want_off):
        return f"returned {len(got_off) - 1} encodings for {len(texts)} texts"
    for i, text in enumerate(texts):
        a = got_flat[got_off[i] : got_off[i + 1]]
        b = want_flat[want_off[i] : want_off[i + 1]]
        if not np.array_equal(a, b):
            k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
            shown = text if len(text) <= 60 else f"{text[:60]}... ({len(text)} chars)"
            return (
                f"probe {i} {shown!r}: token {k}: {_ids(a, k)} instead of {_ids(b, k)} "
                f"({len(a)} vs {len(b)} tokens)"
            )
    return "encodings differ"  # unreachable when offsets and texts agree


def _ids(ids: np.ndarray, k: int) -> str:
    return str(ids[k : k + 4].tolist()) if k < len(ids) else "end of text"
