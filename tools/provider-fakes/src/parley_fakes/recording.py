"""What a fake received and how each stream ended."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

CREDENTIAL_HEADERS = ("api-key", "x-api-key", "authorization")


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)
    # How the answer ended: "complete", "failed", "dropped", "error" (an error event in the
    # stream), "disconnected" or "" while open.
    outcome: str = ""
    ended_at: float | None = None
    tokens_sent: int = 0
    # The ``api-version`` query parameter, as Azure OpenAI clients send it.
    api_version: str | None = None
    # The client's "host:port": two requests with the same one shared a connection.
    client: str = ""

    @property
    def credential_header(self) -> str | None:
        """The header that carried the credential: ``api-key``, ``x-api-key`` or
        ``authorization``; None without one."""
        return next((h for h in CREDENTIAL_HEADERS if h in self.headers), None)

    def end(self, outcome: str) -> None:
        if not self.outcome:
            self.outcome = outcome
            self.ended_at = time.monotonic()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "outcome": self.outcome,
            "tokens_sent": self.tokens_sent,
            "api_version": self.api_version,
            "credential_header": self.credential_header,
            "client": self.client,
        }


@dataclass
class Recording:
    requests: list[RecordedRequest] = field(default_factory=list)
    in_flight: int = 0

    def add(self, request: RecordedRequest) -> RecordedRequest:
        self.requests.append(request)
        return request
