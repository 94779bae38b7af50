"""Conversions between datetimes and protobuf Timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_timestamp(value: datetime | None) -> Timestamp:
    stamp = Timestamp()
    if value is not None:
        if value.tzinfo is None:  # SQLite returns naive datetimes; they were stored as UTC.
            value = value.replace(tzinfo=UTC)
        stamp.FromDatetime(value)
    return stamp
