"""Redaction of secret values from instance logs.

A server that prints a secret (by mistake or because it is hostile to its operator)
must not put it into the platform's logs. Each instance gets one compiled regex that
matches every secret it was given in the forms a value usually takes on the way
out: raw, base64 (standard and URL-safe, with and without padding), hex (lower and
upper case), URL-encoded (quote and quote_plus, upper and lower case escapes) and
JSON-escaped. Longer forms are tried first so a match never leaves a tail behind.

Limits, by nature: a value split across two log lines, re-encoded differently (say
base64 of the value embedded at a non-zero offset of a longer base64 text), or
shorter than MIN_LENGTH bytes is not caught.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
# Below this, a "secret" would blank out ordinary words and numbers in every line.
MIN_LENGTH = 4


def encodings(value: bytes) -> set[str]:
    """The textual forms of one value that the redactor looks for."""
    forms: set[str] = set()
    text = value.decode("utf-8", "replace")
    forms.add(text)
    forms.add(json.dumps(text)[1:-1])
    forms.add(json.dumps(text, ensure_ascii=False)[1:-1])
    for encoded in (base64.b64encode(value), base64.urlsafe_b64encode(value)):
        b64 = encoded.decode()
        forms.add(b64)
        forms.add(b64.rstrip("="))
    forms.add(value.hex())
    forms.add(value.hex().upper())
    for quoted in (quote(value, safe=""), quote_plus(value, safe="")):
        forms.add(quoted)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted))
    return {f for f in forms if len(f) >= MIN_LENGTH}


class Redactor:
    def __init__(self, values: Iterable[bytes]) -> None:
        forms: set[str] = set()
        for value in values:
            if len(value) >= MIN_LENGTH:
                forms |= encodings(value)
        # Longest first: regex alternation takes the first branch that matches.
        ordered = sorted(forms, key=lambda f: (-len(f), f))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)
