"""A ``redis-server`` of a test's own, for tests that stop, freeze and restart Redis."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A ``redis-server`` on a free loopback port, without persistence, that a test kills,
    freezes and starts again on the same port."""

    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        self.data_dir = data_dir
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.data_dir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(200):
            if await self._answers():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.readline(), 1)) == b"+PONG\r\n"
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def kill(self) -> None:
        """Gone at once, with everything it held (nothing when it is not running)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def freeze(self) -> None:
        """Still accepting connections (the kernel does), answering nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    async def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
