"""Test support shared by the services' tests: a service's gRPC server on a loopback port,
and outgoing calls made as a given principal."""

from parley_testkit.grpc import acting_as, grpc_server

__all__ = ["acting_as", "grpc_server"]
