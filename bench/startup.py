"""Each service's time from spawn to ready, and its memory once idle.

    uv run python bench/startup.py                 # 5 runs, one service at a time
    uv run python bench/startup.py --together      # all five spawned at once, as make run does
    uv run python bench/startup.py --own-envs      # each from its own environment, as its image

A run starts the five services on fresh embedded defaults (SQLite, embedded Qdrant, the
local models) in the order of their dependencies, each waiting until the previous one is
ready (gRPC health SERVING; the gateway's /readyz), so no start competes with another for the
two cores unless ``--together`` says so. ``--own-envs`` starts each service from an
environment of its own package's locked dependencies (``uv sync --package``, under
``.bench/envs/``), as its image does; otherwise from the workspace's, which holds every
package (a library may import an optional dependency merely because it is there). Once all
are ready and have idled for ``--idle`` seconds, each process's resident memory (VmRSS) is
read from /proc. Every process is stopped with SIGTERM at the end of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from parley_devstack.platform import SERVICES, Platform


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


ROOT = Path(__file__).resolve().parent.parent


def own_environments() -> dict[str, Path]:
    """Each service's own environment, made as its Dockerfile makes it; its bin folder."""
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    folders = {}
    for name in SERVICES:
        folder = ROOT / ".bench" / "envs" / name
        subprocess.run(
            [uv, "sync", "--frozen", "--no-dev", "--package", f"parley-{name}", "--quiet"],
            cwd=ROOT,
            env={**env, "UV_PROJECT_ENVIRONMENT": str(folder)},
            check=True,
        )
        folders[name] = folder / "bin"
    return folders


async def one_run(
    together: bool, idle: float, bin_dirs: dict[str, Path]
) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="parley-startup-") as data:
        platform = Platform(Path(data), bin_dirs=bin_dirs)
        try:
            ready = await platform.start(one_at_a_time=not together)
            await asyncio.sleep(idle)
            return {
                name: (ready[name], rss_mib(process.pid))
                for name, process in platform.processes.items()
            }
        finally:
            await platform.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before RSS")
    parser.add_argument("--together", action="store_true", help="spawn all five at once")
    parser.add_argument("--own-envs", action="store_true", help="each from its own environment")
    args = parser.parse_args()
    bin_dirs = own_environments() if args.own_envs else {}
    runs = [await one_run(args.together, args.idle, bin_dirs) for _ in range(args.runs)]
    how = "together" if args.together else "one at a time"
    where = "own environments" if args.own_envs else "the workspace environment"
    print(f"{args.runs} runs, {how}, from {where}")
    print(f"{'service':<14}{'ready p50 s':>12}{'ready max s':>12}{'idle RSS p50 MiB':>18}")
    for name in SERVICES:
        ready = [run[name][0] for run in runs]
        rss = [run[name][1] for run in runs]
        print(
            f"{name:<14}{statistics.median(ready):>12.2f}{max(ready):>12.2f}"
            f"{statistics.median(rss):>18.0f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
