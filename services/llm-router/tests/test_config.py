"""The routes file: validated whole, with the path of the first fault."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from parley_llm_router.config import ConfigError, Strategy, from_environment, load, parse
from parley_llm_router.routing import LatencyTracker, RouteTable, order

GOOD = """
default_model: default
providers:
  openai: {type: openai, api_key_env: OPENAI_API_KEY}
  claude: {type: anthropic, api_key_env: ANTHROPIC_API_KEY}
  vllm: {type: openai_compatible, base_url: "http://127.0.0.1:8000/v1"}
models:
  default:
    strategy: weighted
    candidates:
      - {provider: openai, model: gpt-4o-mini, weight: 3, price: {input: 0.15, output: 0.6}}
      - {provider: claude, model: claude-haiku-4-5, weight: 1}
  fast:
    strategy: latency
    candidates:
      - {provider: vllm, model: llama}
      - {provider: openai, model: gpt-4o-mini}
"""


def test_a_good_file_builds_routes_with_prices_and_strategies() -> None:
    table = RouteTable.from_config(parse(GOOD))
    route = table.resolve("default")
    assert route.strategy == Strategy.WEIGHTED
    assert [c.label for c in route.candidates] == ["openai/gpt-4o-mini", "claude/claude-haiku-4-5"]
    assert route.candidates[0].cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table.resolve("") is route


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("default_model: x\nproviders: {}\nmodels: {}", "models"),
        (GOOD.replace("provider: claude,", "provider: nobody,"), "'nobody' is not under providers"),
        (GOOD.replace("weight: 3", "weight: -1"), "models.default.candidates.0.weight"),
        (GOOD.replace("type: anthropic", "type: cohere"), "providers.claude.type"),
        (GOOD.replace('base_url: "http://127.0.0.1:8000/v1"', "api_key_env: X"), "needs base_url"),
        (GOOD + "\nsurprise: 1\n", "surprise"),
        (
            GOOD.replace("type: openai,", "type: openai, api_version: '2024-10-21',"),
            "api_version is for providers of type azure_openai, not openai",
        ),
        (
            GOOD.replace(
                "vllm: {type: openai_compatible,",
                "vllm: {type: azure_openai, api_version: 2024-10-21,",
            ).replace("8000/v1", "8000/openai/"),
            "without /openai",
        ),
        ("models: [unclosed", "not valid YAML"),
        ("- a list", "expected a mapping"),
    ],
)
def test_a_broken_file_is_rejected_naming_the_fault(text: str, fault: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(text, "routes.yaml")
    assert fault in str(raised.value)
    assert str(raised.value).startswith("routes.yaml")


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")


def test_without_a_file_routes_follow_the_keys() -> None:
    local_only = from_environment({})
    assert [c.provider for c in local_only.models["default"].candidates] == ["local"]
    both = from_environment({"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"})
    assert [c.provider for c in both.models["default"].candidates] == ["openai", "anthropic"]
    compatible = from_environment({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"})
    assert compatible.providers["openai"].type == "openai_compatible"


def test_weighted_order_follows_the_weights() -> None:
    route = RouteTable.from_config(parse(GOOD)).resolve("default")
    rng = random.Random(7)
    firsts = [order(route, {}, rng)[0].provider for _ in range(4000)]
    share = firsts.count("openai") / len(firsts)
    assert 0.70 < share < 0.80  # weights 3:1
    assert all(len(order(route, {}, rng)) == 2 for _ in range(10))


def test_latency_order_puts_the_fastest_first_and_measures_the_unmeasured() -> None:
    route = RouteTable.from_config(parse(GOOD)).resolve("fast")
    tracker = LatencyTracker()
    tracker.observe("vllm/llama", 0.5)
    assert order(route, tracker.averages)[0].label == "openai/gpt-4o-mini"  # not measured yet
    tracker.observe("openai/gpt-4o-mini", 0.9)
    assert order(route, tracker.averages)[0].label == "vllm/llama"
    for _ in range(20):
        tracker.observe("vllm/llama", 2.0)
    assert order(route, tracker.averages)[0].label == "openai/gpt-4o-mini"


def test_an_unquoted_azure_api_version_is_read_as_the_version_text() -> None:
    text = GOOD.replace(
        "vllm: {type: openai_compatible,", "vllm: {type: azure_openai, api_version: 2024-10-21,"
    )
    assert parse(text, "routes.yaml").providers["vllm"].api_version == "2024-10-21"
