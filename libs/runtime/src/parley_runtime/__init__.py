"""Parley's shared service runtime.

Modules, one job each: ``settings`` (typed configuration), ``logs`` (JSON logs), ``telemetry``
(OpenTelemetry), ``context`` (principal, request id, deadline), ``errors`` (domain errors and
gRPC status), ``grpc_server`` and ``grpc_client`` (bootstrap), ``metrics``, ``db`` and
``migrations`` (SQLAlchemy and Alembic), ``ids``, ``timestamps`` and ``pagination``.
"""
