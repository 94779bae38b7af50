"""Fake LLM providers that speak the real wire protocols, for tests and benchmarks.

    with OpenAIFake(tokens=40, token_delay_ms=5) as fake:
        client = openai.OpenAI(base_url=f"{fake.base_url}/v1", api_key="k")
        fake.push(Behaviour(fail_status=429, retry_after=1))   # the next request fails
        ...
        fake.requests[-1].body, fake.requests[-1].outcome       # what it saw, how it ended

``python -m parley_fakes openai --port 8001 --ttft-ms 50`` runs one as a process.
"""

from parley_fakes.behaviour import Behaviour
from parley_fakes.recording import RecordedRequest
from parley_fakes.server import AnthropicFake, Fake, OpenAIFake

__all__ = ["AnthropicFake", "Behaviour", "Fake", "OpenAIFake", "RecordedRequest"]
