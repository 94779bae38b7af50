"""Opaque cursor tokens for list RPCs (keyset pagination, not offsets)."""

from __future__ import annotations

import base64
import json
from typing import Any

from parley_runtime.errors import InvalidArgument


def encode_cursor(*values: Any) -> str:
    raw = json.dumps(list(values), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, arity: int) -> list[Any]:
    """The values a token was made of; INVALID_ARGUMENT when it was not made by us."""
    try:
        padded = token + "=" * (-len(token) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not valid", code="invalid_page_token") from None
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidArgument("page_token is not valid", code="invalid_page_token")
    return values


def page_size(requested: int, default: int, maximum: int) -> int:
    if requested < 0 or requested > maximum:
        raise InvalidArgument(
            f"page_size must be between 1 and {maximum}", code="invalid_page_size"
        )
    return requested or default
