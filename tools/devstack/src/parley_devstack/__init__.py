"""Run the whole Parley platform on one machine (``make run``, e2e tests, benchmarks)."""

from parley_devstack.platform import Platform, ServiceSpec

__all__ = ["Platform", "ServiceSpec"]
