"""Identifiers: sortable by creation time, safe in URLs."""

from __future__ import annotations

import os
import time


def new_id(prefix: str) -> str:
    """``prefix_`` + 12 hex digits of milliseconds + 12 random hex digits (sorts by time)."""
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(6).hex()}"
