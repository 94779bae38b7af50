"""Run a fake provider as a process: ``python -m parley_fakes openai|anthropic [options]``."""

from __future__ import annotations

import argparse
import contextlib

import uvloop

from parley_fakes.behaviour import Behaviour
from parley_fakes.server import AnthropicFake, OpenAIFake, serve_forever


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m parley_fakes", description=__doc__)
    parser.add_argument("protocol", choices=["openai", "anthropic"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=20)
    args = parser.parse_args()
    behaviour = Behaviour(
        ttft_ms=args.ttft_ms, token_delay_ms=args.token_delay_ms, tokens=args.tokens
    )
    fake = OpenAIFake(behaviour) if args.protocol == "openai" else AnthropicFake(behaviour)
    with contextlib.suppress(KeyboardInterrupt):
        # uvloop, as the services run: the fake shares a benchmark's cores with its load
        # generator, and on the standard loop it took a fifth more CPU per answer.
        uvloop.run(serve_forever(fake, args.host, args.port))


if __name__ == "__main__":
    main()
