"""The moderation hook: an external classifier, asked over HTTP whether a text may pass.

The gateway POSTs ``{"input": <text>, "tenant_id": <tenant>}`` as JSON to
``MODERATION_URL`` (with ``Authorization: Bearer <MODERATION_TOKEN>`` when one is set) and
reads either ``{"flagged": true, "categories": ["hate", ...]}`` or OpenAI's moderation shape,
``{"results": [{"flagged": true, "categories": {"hate": true, ...}}]}``. A classifier that
does not answer within ``MODERATION_TIMEOUT_SECONDS``, answers with an error status, or in
another shape raises :class:`ClassifierUnavailable`; what then happens is the edge guard's
``MODERATION_FAIL`` setting (open or closed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the classifier said: whether it flags the text, and under which categories."""

    flagged: bool
    categories: tuple[str, ...] = ()


class ClassifierUnavailable(Exception):
    """The classifier gave no usable answer; the message says what happened."""


def _verdict(body: Any) -> Verdict:
    if isinstance(body, dict) and isinstance(body.get("results"), list) and body["results"]:
        body = body["results"][0]
    if not isinstance(body, dict) or not isinstance(body.get("flagged"), bool):
        raise ClassifierUnavailable("the classifier's answer has no boolean 'flagged'")
    categories = body.get("categories") or ()
    if isinstance(categories, dict):
        names = tuple(str(name) for name, on in categories.items() if on is True)
    elif isinstance(categories, list):
        names = tuple(str(name) for name in categories)
    else:
        names = ()
    return Verdict(body["flagged"], names)


class Classifier:
    """The HTTP client of one classifier endpoint (see the module docstring)."""

    def __init__(self, url: str, timeout: float, token: str = "") -> None:
        # Imported here: only a deployment that sets MODERATION_URL needs an HTTP client.
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.timeout = timeout
        self._client: httpx.AsyncClient = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), headers=headers, follow_redirects=False
        )
        self._errors: tuple[type[Exception], ...] = (httpx.HTTPError, ValueError, TimeoutError)

    async def classify(self, text: str, tenant: str) -> Verdict:
        """The classifier's verdict on ``text``, or :class:`ClassifierUnavailable`."""
        try:
            # httpx's timeout bounds each read; this bounds the whole exchange.
            async with asyncio.timeout(self.timeout):
                response = await self._client.post(
                    self.url, json={"input": text, "tenant_id": tenant}
                )
            if response.status_code != 200:
                raise ClassifierUnavailable(f"the classifier answered {response.status_code}")
            return _verdict(response.json())
        except self._errors as error:
            raise ClassifierUnavailable(f"the classifier failed: {type(error).__name__}") from None

    async def aclose(self) -> None:
        await self._client.aclose()
