"""A wrong setting stops a service at start with one line naming the variable."""

from __future__ import annotations

import pytest

from parley_runtime.settings import ServiceSettings, load_settings


def test_wrong_value_exits_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRPC_PORT", "not-a-port")
    with pytest.raises(SystemExit) as exited:
        load_settings(ServiceSettings, "conversation")
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("conversation: invalid setting GRPC_PORT='not-a-port'")


def test_defaults_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRPC_PORT", raising=False)
    assert load_settings(ServiceSettings, "x").grpc_port == 50051


def test_a_check_across_settings_names_its_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from parley_gateway.settings import Settings as GatewaySettings

    monkeypatch.setenv("PARLEY_ENV", "production")
    with pytest.raises(SystemExit):
        load_settings(GatewaySettings, "gateway")
    err = capsys.readouterr().err.strip()
    assert err == (
        "gateway: invalid settings: AUTH_SECRET must be set to 32 or more characters in production"
    )
