"""Redaction: secrets never reach logs, results or the API.

:func:`redact` is for messages of security tools, which quote what they
found (bandit: ``Possible hardcoded password: 'hunter2'``): every quoted
string literal is masked, and so is anything that looks like a credential.
:func:`redact_credentials` masks only credential-like tokens; it is applied
to lint messages and test failure messages, where quoted names are useful.
"""

from __future__ import annotations

import math
import re
from collections import Counter

MASK = "***"

# A quoted literal: an opening quote not glued to a word (so the apostrophes
# of "don't" and "users'" are not quotes), optionally with a Python string
# prefix, up to a closing quote not followed by a word character. A quote
# followed by a word character is part of the literal ('it's').
_QUOTED = re.compile(
    r"""(?<![\w'"])(?:[bBrRuUfF]{1,2})?(?P<q>['"])"""
    r"""(?P<body>(?:\\.|(?!(?P=q))[^\\\n]|(?P=q)(?=\w))*)(?P=q)(?!\w)"""
)
_AWS_KEY_ID = re.compile(
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA)[A-Z0-9]{16}(?![A-Za-z0-9])"
)
_HEX = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])")
_TOKEN_CHARS = "A-Za-z0-9+/=_-"
_TOKEN = re.compile(rf"(?<![{_TOKEN_CHARS}])[{_TOKEN_CHARS}]{{20,}}(?![{_TOKEN_CHARS}])")
_SEPARATORS = re.compile(r"[+/=_-]+")


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``."""
    if not text:
        return 0.0
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in Counter(text).values())


def looks_like_credential(token: str) -> bool:
    """Whether a run of 20+ token characters looks like a key or token rather
    than a word, identifier or path.

    Identifiers and paths are made of short or single-class pieces
    (``hardcoded_password_string``, ``usr/lib/python3``); keys and tokens mix
    upper case, lower case and digits in long random runs.
    """
    has_lower = any(c.islower() for c in token)
    has_upper = any(c.isupper() for c in token)
    has_digit = any(c.isdigit() for c in token)
    longest = max((len(piece) for piece in _SEPARATORS.split(token)), default=0)
    if has_lower and has_upper and has_digit and longest >= 16:
        return True
    if has_digit and (has_lower or has_upper) and longest >= 20:
        return True
    return has_lower and has_upper and len(token) >= 24 and shannon_entropy(token) >= 4.5


def _mask_token(match: re.Match[str]) -> str:
    token = match.group(0)
    return MASK if looks_like_credential(token) else token


def redact_credentials(text: str) -> str:
    """``text`` with credential-like tokens replaced by ``***``: AWS key ids,
    hex runs of 32+ digits and long random-looking runs of base64/url-safe
    characters. Quoted literals and ordinary prose are kept."""
    text = _AWS_KEY_ID.sub(MASK, text)
    text = _HEX.sub(MASK, text)
    return _TOKEN.sub(_mask_token, text)


def _mask_quoted(match: re.Match[str]) -> str:
    quote = match.group("q")
    if not match.group("body"):
        return match.group(0)
    return f"{quote}{MASK}{quote}"


def redact(text: str) -> str:
    """``text`` with quoted string literals (``'...'``, ``"..."``) replaced by
    ``'***'`` (the quote kept) and credential-like tokens by ``***``.

    >>> redact("Possible hardcoded password: 'hunter2'")
    "Possible hardcoded password: '***'"
    """
    return redact_credentials(_QUOTED.sub(_mask_quoted, text))
