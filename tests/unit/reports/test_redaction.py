"""Redaction: quoted literals and credential-like tokens are masked, prose is kept."""

from __future__ import annotations

import pytest

from conveyor.plugins.reports import redact, redact_credentials
from tests.unit.reports.support import AWS_KEY_ID, AWS_SECRET_KEY, PASSWORD

GITHUB_TOKEN = "ghp_" + "R8mQ2vX7kLp3Zt9wYc4Nd6Hf1Jb5Gs0AeUo"  # random, not a real token
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Possible hardcoded password: '{PASSWORD}'", "Possible hardcoded password: '***'"),
        (f'password = "{PASSWORD}"', 'password = "***"'),
        ("Possible hardcoded password: 'it's a secret'", "Possible hardcoded password: '***'"),
        ("token b'c2VjcmV0' in bytes", "token '***' in bytes"),
        (r"escaped 'a\'b' quote", "escaped '***' quote"),
        ("empty '' and \"\" stay", "empty '' and \"\" stay"),
        ("two 'a' and 'b'", "two '***' and '***'"),
    ],
)
def test_quoted_literals(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "secret",
    [
        AWS_KEY_ID,
        "ASIA" + AWS_KEY_ID[4:],
        AWS_SECRET_KEY,
        GITHUB_TOKEN,
        "xoxb-" + "2051862417023-6183954072816-kP3vQ9zR7mT2xW8yL4nB6cD1",  # slack-like, random
        "d41d8cd98f00b204e9800998ecf8427e",  # 32 hex
        "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",  # 40 hex, upper case
        "ZXhhbXBsZXNlY3JldHZhbHVl",  # base64, low entropy but mixed classes
        "kTvQmXrLpZsNcBwYhGfDjEaUoIqW",  # no digits, random mixed case
    ],
)
def test_credentials(secret: str) -> None:
    for text in (f"found {secret} in config", f"key={secret};", f"({secret})"):
        masked = redact_credentials(text)
        assert secret not in masked
        assert "***" in masked
        assert redact(text) == masked


def test_jwt_parts_are_masked() -> None:
    masked = redact(f"Authorization: Bearer {JWT}")
    assert masked == "Authorization: Bearer ***.***.***"


@pytest.mark.parametrize(
    "text",
    [
        "Use of possibly insecure function - consider using safer ast.literal_eval.",
        "Use of assert detected. The enclosed code will be removed when compiling to "
        "optimised byte code.",
        "`json` imported but unused",
        "Don't use the users' data; it's fine, isn't it?",
        "Line too long (106 > 100)",
        "see /usr/lib/python3/dist-packages/foo/bar_baz.py line 12",
        "function test_hardcoded_password_string_in_module is too complex",
        "class AbstractSingletonProxyFactoryBean has no attribute",
        "ThisIsAVeryLongCamelCaseIdentifierName is undefined",
        "commit 3f2a9c1 broke it",
        "request 123e4567-e89b-12d3-a456-426614174000 failed",
        "https://bandit.readthedocs.io/en/1.9.4/plugins/b105_hardcoded_password_string.html",
        "expected: <90.00> but was: <100.00>",
    ],
)
def test_prose_is_kept(text: str) -> None:
    assert redact(text) == text
    assert redact_credentials(text) == text


def test_redact_credentials_keeps_quoted_names() -> None:
    text = f"Undefined name 'foo' near {AWS_KEY_ID}"
    assert redact_credentials(text) == "Undefined name 'foo' near ***"
    assert redact(text) == "Undefined name '***' near ***"
