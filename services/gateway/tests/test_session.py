"""Who the caller is, and the development sign-in: on only when asked for, never in
production or with OIDC."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from parley_gateway.auth import issue_token, verify_token
from parley_gateway.settings import Settings

from .conftest import Serve


async def test_the_dev_sign_in_is_off_unless_turned_on(serve_gateway: Serve) -> None:
    async with serve_gateway(Settings()) as client:
        refused = await client.post("/v1/dev/sign-in", json={"tenant": "acme", "user": "ann"})
        page = (await client.get("/")).text
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "dev_sign_in_off"
    assert "DEV_SIGN_IN" in refused.json()["error"]["message"]
    assert 'content="off"' in page


async def test_the_dev_sign_in_hands_out_a_token_the_api_accepts(serve_gateway: Serve) -> None:
    settings = Settings(dev_sign_in=True)
    async with serve_gateway(settings) as client:
        signed = await client.post("/v1/dev/sign-in", json={"tenant": "acme", "user": "bob"})
        assert signed.status_code == 200
        body = signed.json()
        me = await client.get("/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
        page = (await client.get("/")).text
    principal = verify_token(body["token"], settings.auth_secret, settings.auth_issuer)
    assert (principal.tenant_id, principal.user_id) == ("acme", "bob")
    assert "admin" not in principal.scopes
    assert body["expires_in"] == 3600
    assert me.status_code == 200
    assert me.json() == {
        "tenant_id": "acme",
        "user_id": "bob",
        "scopes": ["chat", "documents", "read", "usage"],
        "credential": "token",
    }
    assert 'content="on"' in page


@pytest.mark.parametrize(
    "body",
    [
        {"tenant": "acme"},
        {"tenant": "acme", "user": "has space"},
        {"tenant": "", "user": "ann"},
        {"tenant": "acme", "user": "ann", "scopes": "admin"},
    ],
)
async def test_the_dev_sign_in_refuses_what_is_not_a_tenant_and_user(
    serve_gateway: Serve, body: dict[str, str]
) -> None:
    async with serve_gateway(Settings(dev_sign_in=True)) as client:
        refused = await client.post("/v1/dev/sign-in", json=body)
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_request"


def test_production_and_oidc_refuse_the_dev_sign_in() -> None:
    with pytest.raises(ValidationError, match="DEV_SIGN_IN needs PARLEY_ENV=development"):
        Settings(dev_sign_in=True, parley_env="production", auth_secret="s" * 40)
    with pytest.raises(ValidationError, match="DEV_SIGN_IN needs"):
        Settings(
            dev_sign_in=True,
            auth_mode="oidc",
            oidc_issuer="https://id.example",
            oidc_audience="parley",
        )


async def test_me_needs_a_credential(serve_gateway: Serve) -> None:
    settings = Settings()
    async with serve_gateway(settings) as client:
        anonymous = await client.get("/v1/me")
        token = issue_token(settings.auth_secret, settings.auth_issuer, tenant="t", user="u")
        known = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert anonymous.status_code == 401
    assert known.json()["tenant_id"] == "t"
