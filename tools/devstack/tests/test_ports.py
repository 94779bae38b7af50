"""The ports a platform hands its services: free, distinct, and out of the kernel's range for
outgoing connections, where a connection made while the services start could take one."""

from __future__ import annotations

import socket
from pathlib import Path

from parley_devstack.platform import free_port


def test_ports_are_free_distinct_and_below_the_outgoing_range() -> None:
    floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert all(port < floor for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if anything holds it
