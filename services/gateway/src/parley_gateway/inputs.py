"""What the API accepts in a string, a number, an id or a header, checked once per request.

Every check here runs while FastAPI validates the request, so input that breaks one is a 422
naming the field before anything reaches a peer:

- text (:data:`Text`): valid Unicode without NUL. JSON may carry a lone UTF-16 surrogate
  (``"\\ud800"``), which no peer, database or protobuf can encode;
- numbers (:data:`Temperature`): strict, so ``true`` or ``"1"`` is not a number;
- ids and knowledge-base names in paths (:data:`ResourceId`, :data:`KnowledgeBaseName`): 1 to
  128 characters of :data:`NAME_PATTERN`, the alphabet of every id Parley issues;
- headers and query strings: the ``Idempotency-Key`` is printable ASCII, a ``Last-Event-ID``
  an event id the API sent, a page token is the URL-safe base64 the services issue.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Header, Path, Query
from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
PAGE_TOKEN_PATTERN = r"^[A-Za-z0-9_=-]{0,500}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]{1,200}$"

_SURROGATE = re.compile("[\ud800-\udfff]")


def checked_text(value: Any) -> Any:
    """``value`` if it is not a string, or valid Unicode without NUL; else a validation error
    for its field. Before the type's own check, so a surrogate always reads the same."""
    if not isinstance(value, str):
        return value
    if "\x00" in value:
        raise PydanticCustomError("text_nul", "must not contain a NUL character")
    # ASCII text cannot hold a surrogate; the scan runs only on the rest.
    if not value.isascii() and _SURROGATE.search(value):
        raise PydanticCustomError(
            "text_surrogate", "must be valid Unicode (a lone surrogate such as \\ud800 is not)"
        )
    return value


Text = Annotated[str, BeforeValidator(checked_text)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Temperature = Annotated[float, Field(ge=0, le=2, strict=True, allow_inf_nan=False)]

ResourceId = Annotated[str, Path(pattern=NAME_PATTERN, description="An id Parley issued.")]
KnowledgeBaseName = Annotated[
    str, Path(pattern=NAME_PATTERN, description="A knowledge base's name.")
]
PageToken = Annotated[
    str, Query(pattern=PAGE_TOKEN_PATTERN, description="next_page_token of the previous page.")
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Printable ASCII, at most 200 characters: a retry with it replays the turn.",
    ),
]
# What a turn's event id is (sse.py): ``<assistant_message_id>:<n>``.
LAST_EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}:[0-9]{1,9}$"
LastEventId = Annotated[
    str | None,
    Header(
        pattern=LAST_EVENT_ID_PATTERN,
        description="The id of the last event a stream delivered: the answer it names is read "
        "back from the store, and no new message is sent (see the README: a lost connection).",
    ),
]
