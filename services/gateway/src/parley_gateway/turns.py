"""Turns as their clients live them: the time to the first answer text and to the end.

A :class:`TurnMeter` rides on a turn's watched call (``limits.limiter.WatchedCall``), which
sees every event of the turn's stream as the gateway relays it, and its end:

- ``parley_gateway_time_to_first_token_seconds``: from the request's arrival (an HTTP
  request's, as the middleware saw it; a WebSocket turn's admission) to the first answer text
  passed on to the client;
- ``parley_gateway_turn_seconds{outcome}``: from the same start to the stream's end, with its
  outcome: ``complete`` (done), ``failed`` (an error event, a broken stream), ``cancelled``
  (stopped on request, or the client went away).

Both conversation turns and the OpenAI-compatible surface's chats are measured. Observations
made inside a sampled trace carry its id as an exemplar.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Histogram

from parley_runtime import telemetry

# Where the middleware keeps when an HTTP request arrived (a key of the ASGI scope's state).
RECEIVED_AT = "parley.received_at"

OUTCOMES = ("complete", "failed", "cancelled")
TIME_TO_FIRST_TOKEN = Histogram(
    "parley_gateway_time_to_first_token_seconds",
    "From a chat request's arrival to the first answer text sent to the client.",
    buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
)
TURN_SECONDS = Histogram(
    "parley_gateway_turn_seconds",
    "From a chat request's arrival to its stream's end, by outcome (complete, failed, cancelled).",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
_TURN_SECONDS = {outcome: TURN_SECONDS.labels(outcome) for outcome in OUTCOMES}

# The oneof names of a conversation turn's events (TurnEvent) and of a llm-router chat's
# (ChatEvent).
_TEXT = frozenset(("delta", "text_delta"))
_DONE = frozenset(("done", "finish"))


class TurnMeter:
    """One turn's clock, from ``received`` (``time.perf_counter()``) to its end."""

    __slots__ = ("_ended", "_outcome", "_texted", "received")

    def __init__(self, received: float) -> None:
        self.received = received
        self._texted = False
        self._outcome: str | None = None
        self._ended = False

    def seen(self, event: Any) -> None:
        """An event of the turn's stream, about to be relayed."""
        kind = event.WhichOneof("event")
        if kind in _TEXT:
            if not self._texted:
                self._texted = True
                TIME_TO_FIRST_TOKEN.observe(
                    time.perf_counter() - self.received, telemetry.exemplar()
                )
        elif kind in _DONE:
            self._outcome = "complete"
        elif kind == "error":
            self._outcome = "cancelled" if event.error.error.code == "cancelled" else "failed"

    def end(self, otherwise: str) -> None:
        """The stream ended: its outcome is its terminal event's, or ``otherwise`` when it
        had none. Once; what follows is a no-op."""
        if self._ended:
            return
        self._ended = True
        outcome = self._outcome or otherwise
        _TURN_SECONDS[outcome].observe(time.perf_counter() - self.received, telemetry.exemplar())
