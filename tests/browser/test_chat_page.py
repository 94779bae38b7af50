"""The chat page in a real browser, against the five services: what a person does with it.

Each test signs in as a user of its own tenant, so tests see only their own data.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.async_playwright import Axe  # type: ignore[import-untyped]
from playwright.async_api import APIResponse, Page, Response, Route, expect

from parley_fakes import Behaviour

from .conftest import DESKTOP, PHONE, Stack, Tab, open_tab

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

HANDBOOK = (
    "# Leave\n\nEmployees have 25 days of paid leave a year. Unused days expire in March.\n\n"
    "# Travel\n\nBook trains for trips under 500 km.\n"
)
CITED = (
    "Employees have **25 days** of paid leave a year [1].\n\n"
    "| kind | days |\n|---|---|\n| paid | 25 |\n\n"
    "```python\ndays = 25\n```\n"
)


async def sign_in(page: Page, url: str, tenant: str, user: str = "ann") -> None:
    await page.goto(url + "/")
    await page.get_by_label("Tenant").fill(tenant)
    await page.get_by_label("User").fill(user)
    await page.get_by_role("button", name="Sign in").first.click()
    await expect(page.locator("#who")).to_contain_text(f"{user} · {tenant}")


async def api_of(page: Page, url: str) -> httpx.AsyncClient:
    """A client of the API acting with the page's own token."""
    token = await page.evaluate("sessionStorage.getItem('parley.token')")
    assert token, "the page keeps no token"
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def last_answer(page: Page):  # type: ignore[no-untyped-def]
    return page.locator(".message.assistant").last


async def ask(page: Page, question: str) -> None:
    await page.get_by_label("Message", exact=True).fill(question)
    await page.get_by_label("Message", exact=True).press("Enter")


async def answered(page: Page) -> None:
    """Waits until the last answer has ended (its actions show)."""
    await expect(last_answer(page).get_by_role("group", name="Answer actions")).to_be_visible()


async def upload(page: Page, path: Path, kb: str) -> None:
    await page.get_by_role("tab", name="Knowledge").click()
    await page.get_by_label("Knowledge base", exact=True).last.fill(kb)
    await page.get_by_label("Knowledge base", exact=True).last.press("Tab")
    await page.locator("#file-input").set_input_files(path)
    await expect(page.locator(".upload").first).to_contain_text("Ready", timeout=60_000)
    await expect(page.locator("#documents")).to_contain_text(path.stem)


async def whole_flow(stack: Stack, tab: Tab, tenant: str, shots: Path, tmp: Path) -> None:
    """Sign in, upload, ask with citations, open one, stop an answer, regenerate, delete."""
    page = tab.page
    phone = page.viewport_size == PHONE
    await sign_in(page, stack.url, tenant)
    await page.screenshot(path=shots / "signed-in.png")
    # Nothing is wider than the screen.
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0

    # A knowledge base, from a dropped file followed to the end of its job.
    if phone:
        await page.get_by_role("button", name="Sources, knowledge and account").click()
    handbook = tmp / "handbook.md"
    handbook.write_text(HANDBOOK)
    await upload(page, handbook, "handbook")
    await page.screenshot(path=shots / "knowledge.png")
    if phone:
        await page.get_by_role("button", name="Sources, knowledge and account").click()

    # A conversation that searches it.
    if phone:
        await page.get_by_role("button", name="Conversations").click()
    await page.get_by_role("button", name="New conversation").click()
    await expect(page.locator("[aria-current=page]")).to_have_text(re.compile("New conversation"))
    await page.get_by_label("Knowledge base", exact=True).first.fill("handbook")
    await page.get_by_label("Knowledge base", exact=True).first.press("Tab")
    await expect(page.locator("#announcer")).to_contain_text("Knowledge base: handbook")

    # A streamed answer with a citation, rendered as Markdown.
    stack.answer(CITED, delay_ms=20)
    await ask(page, "How many days of paid leave?")
    answer = last_answer(page)
    await expect(answer.locator(".markdown")).to_contain_text("Employees have")
    await answered(page)
    await expect(answer.locator("strong")).to_have_text("25 days")
    await expect(answer.locator("table td").first).to_have_text("paid")
    await expect(answer.locator("pre code .hljs-number")).to_have_text("25")
    # The citation's marker opens its passage, title and file beside the answer.
    await answer.get_by_role("button", name=re.compile(r"^Source 1: handbook")).click()
    source = page.locator("#source-1")
    await expect(source).to_be_visible()
    await expect(source).to_contain_text("25 days of paid leave")
    await expect(source).to_contain_text("handbook.md")
    await expect(source).to_be_focused()
    await page.screenshot(path=shots / "answer-with-source.png")
    if phone:
        await page.get_by_role("button", name="Sources, knowledge and account").click()

    # Usage of the turn, on demand.
    await answer.get_by_role("button", name="Usage").click()
    await expect(answer.locator(".usage")).to_contain_text(re.compile(r"\d+ tokens in, \d+ out"))
    # Feedback.
    await answer.get_by_role("button", name="Helpful", exact=True).click()
    await expect(answer.get_by_role("button", name="Helpful", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )

    # An answer stopped mid-stream is stored cancelled, with its text so far.
    stack.answer(tokens=400, delay_ms=50)
    await ask(page, "Tell me everything about travel.")
    answer = last_answer(page)
    await expect(answer.locator(".markdown")).to_contain_text("Parley answers")
    await page.get_by_role("button", name="Stop").click()
    await expect(answer.locator(".status")).to_contain_text("Stopped")
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    shown = await answer.locator(".markdown").inner_text()
    async with await api_of(page, stack.url) as api:
        conversations = (await api.get("/v1/conversations")).json()["conversations"]
        conversation = conversations[0]
        stored = (await api.get(f"/v1/conversations/{conversation['id']}/messages")).json()
        last = stored["messages"][-1]
        assert last["role"] == "assistant"
        assert last["status"] == "cancelled"
        assert last["content"].split()[:3] == shown.split()[:3]
        assert len(last["content"].split()) < 400
    await page.screenshot(path=shots / "stopped.png")

    # Regenerate replaces the stopped answer with a complete one.
    stack.answer("A second answer.")
    await answer.get_by_role("button", name="Regenerate").click()
    await expect(last_answer(page).locator(".markdown")).to_have_text("A second answer.")
    await answered(page)
    await expect(page.locator(".message.assistant")).to_have_count(2)
    async with await api_of(page, stack.url) as api:
        stored = (await api.get(f"/v1/conversations/{conversation['id']}/messages")).json()
        assert [m["content"] for m in stored["messages"] if m["role"] == "assistant"][-1] == (
            "A second answer."
        )

    # Rename, search by title, delete.
    await page.get_by_role("button", name="Rename").click()
    await page.get_by_label("Conversation title").fill("Leave questions")
    await page.get_by_label("Conversation title").press("Enter")
    await expect(page.locator("#conversation-title")).to_have_text("Leave questions")
    if phone:
        await page.get_by_role("button", name="Conversations").click()
    await page.get_by_label("Search conversations by title").fill("leave q")
    await expect(page.locator("#conversation-list li")).to_have_count(1)
    await page.get_by_label("Search conversations by title").fill("no such title")
    await expect(page.locator("#conversation-list li")).to_have_count(0)
    await page.get_by_label("Search conversations by title").fill("")
    await page.screenshot(path=shots / "conversations.png")
    if phone:
        await page.get_by_role("button", name="Conversations").click()
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete", exact=True).first.click()
    await expect(page.locator("#announcer")).to_contain_text("Conversation deleted")
    await expect(page.locator("#conversation-list")).not_to_contain_text("Leave questions")
    async with await api_of(page, stack.url) as api:
        gone = await api.get(f"/v1/conversations/{conversation['id']}")
        assert gone.status_code == 404
    assert tab.errors == []


async def test_the_whole_flow_on_a_desktop(stack: Stack, artifacts: Path, tmp_path: Path) -> None:
    shots = artifacts / "desktop"
    shots.mkdir()
    tab = await open_tab(stack, DESKTOP)
    try:
        await whole_flow(stack, tab, "desk", shots, tmp_path)
    finally:
        await tab.page.screenshot(path=shots / "last.png")
        await tab.close()


async def test_the_whole_flow_on_a_phone(stack: Stack, artifacts: Path, tmp_path: Path) -> None:
    shots = artifacts / "phone"
    shots.mkdir()
    tab = await open_tab(stack, PHONE)
    try:
        await whole_flow(stack, tab, "phone", shots, tmp_path)
    finally:
        await tab.page.screenshot(path=shots / "last.png")
        await tab.close()


async def test_model_output_with_html_and_script_is_shown_inert(stack: Stack) -> None:
    tab = await open_tab(stack, DESKTOP)
    page = tab.page
    try:
        await sign_in(page, stack.url, "inert")
        hostile = (
            "Look: <script>window.__pwned = 1</script> and "
            '<img src=x onerror="window.__pwned = 2"> '
            "[click](javascript:window.__pwned=3) "
            '<a href="#" onclick="window.__pwned=4">here</a>'
        )
        stack.answer(hostile)
        await ask(page, "Say something dangerous.")
        await answered(page)
        body = last_answer(page).locator(".markdown")
        # The HTML is shown as the text it is, and nothing of it became an element.
        await expect(body).to_contain_text("<script>window.__pwned = 1</script>")
        assert await body.locator("script, img, [onerror], [onclick]").count() == 0
        hrefs = await body.locator("a").evaluate_all("links => links.map(a => a.href)")
        assert not [href for href in hrefs if href.startswith("javascript:")]
        await body.get_by_text("click").click()
        assert await page.evaluate("window.__pwned") is None
        assert tab.errors == []
    finally:
        await tab.close()


async def test_a_provider_failing_mid_answer_says_the_part_shown_is_stored(
    stack: Stack,
) -> None:
    tab = await open_tab(stack, DESKTOP)
    page = tab.page
    try:
        await sign_in(page, stack.url, "outage")
        stack.fake.set_behaviour(Behaviour(tokens=20, token_delay_ms=20, drop_after_tokens=5))
        await ask(page, "Answer, then fail.")
        await answered(page)
        answer = last_answer(page)
        await expect(answer.locator(".status")).to_contain_text(
            "The model's provider failed before the answer was finished. The part above is stored"
        )
        async with await api_of(page, stack.url) as api:
            conversation = (await api.get("/v1/conversations")).json()["conversations"][0]
            stored = (await api.get(f"/v1/conversations/{conversation['id']}/messages")).json()
        last = stored["messages"][-1]
        assert last["status"] == "failed"
        assert last["content"]
        shown = await answer.locator(".markdown").inner_text()
        assert shown.split() == last["content"].split()
        assert tab.errors == []
    finally:
        stack.answer()
        await tab.close()


async def test_no_serious_accessibility_violations_in_either_theme(
    stack: Stack, artifacts: Path
) -> None:
    tab = await open_tab(stack, DESKTOP)
    page = tab.page
    axe = Axe()
    try:
        await page.goto(stack.url + "/")
        await expect(page.get_by_role("heading", name="Sign in to Parley")).to_be_visible()
        found = {"sign-in": await axe.run(page)}
        await sign_in(page, stack.url, "axe")
        stack.answer(CITED)
        await ask(page, "How many days?")
        await answered(page)
        await page.get_by_role("tab", name="Account").click()
        found["light"] = await axe.run(page)
        await page.screenshot(path=artifacts / "account-light.png")
        await page.get_by_role("button", name="Dark theme").click()
        await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        await page.get_by_role("tab", name="Knowledge").click()
        found["dark"] = await axe.run(page)
        await page.screenshot(path=artifacts / "knowledge-dark.png")
        serious = {
            view: [
                f"{v['id']}: {v['help']} ({len(v['nodes'])})"
                for v in result.response["violations"]
                if v["impact"] in ("serious", "critical")
            ]
            for view, result in found.items()
        }
        assert serious == {"sign-in": [], "light": [], "dark": []}
    finally:
        await tab.close()


async def test_the_first_load_is_under_200_kb_compressed(stack: Stack) -> None:
    tab = await open_tab(stack, DESKTOP)
    page = tab.page
    responses: list[Response] = []
    page.on("response", lambda response: responses.append(response))
    try:
        await page.goto(stack.url + "/", wait_until="networkidle")
        await expect(page.get_by_role("heading", name="Sign in to Parley")).to_be_visible()
        transferred = 0
        for response in responses:
            sizes = await response.request.sizes()
            transferred += sizes["responseBodySize"] + sizes["responseHeadersSize"]
        names = [r.url.rsplit("/", 1)[-1] for r in responses]
        assert {"app.js", "vendor.js", "markdown.js", "app.css"} <= set(names)
        assert 20_000 < transferred < 200_000, (transferred, names)
    finally:
        await tab.close()


async def test_an_answer_cut_off_mid_stream_is_read_back_whole(stack: Stack) -> None:
    """The connection ends after a few events, as a dropped network or a proxy's timeout
    ends it: the page reads the rest of the answer back from where it stopped."""
    tab = await open_tab(stack, DESKTOP)
    page = tab.page
    read_back: list[str] = []
    page.on("request", lambda r: read_back.append(r.url) if r.url.endswith("/events") else None)

    async def cut_off(route: Route) -> None:
        if route.request.method != "POST":
            await route.fallback()
            return
        whole = await route.fetch()
        events = (await whole.text()).split("\r\n\r\n")
        assert [e for e in events if "event: done" in e], "the answer did not end"
        await route.fulfill(
            status=200,
            content_type="text/event-stream",
            body="\r\n\r\n".join(events[:4]) + "\r\n\r\n",
        )

    try:
        await sign_in(page, stack.url, "offline")
        stack.answer(tokens=30, delay_ms=10)
        await page.route(re.compile(r".*/v1/conversations/[^/]+/messages$"), cut_off, times=1)
        await ask(page, "A long answer, please.")
        await answered(page)
        answer = last_answer(page)
        shown = await answer.locator(".markdown").inner_text()
        async with await api_of(page, stack.url) as api:
            conversation = (await api.get("/v1/conversations")).json()["conversations"][0]
            stored = (await api.get(f"/v1/conversations/{conversation['id']}/messages")).json()
        last = stored["messages"][-1]
        assert last["status"] == "complete"
        assert len(last["content"].split()) == 30
        assert shown.split() == last["content"].split()
        assert len(read_back) == 1
        assert tab.errors == []
    finally:
        await tab.close()


async def test_a_question_sent_while_the_page_still_loads_stays_shown(stack: Stack) -> None:
    """Someone quick types before the list of conversations has arrived: when it arrives, the
    conversation they started stays open with its question and answer."""
    tab = await open_tab(stack, DESKTOP)
    page = tab.page
    held: list[tuple[Route, APIResponse]] = []
    read = asyncio.Event()

    async def hold(route: Route) -> None:
        if route.request.method == "GET" and not held:
            # Read now, while the tenant has no conversation; delivered later.
            held.append((route, await route.fetch()))
            read.set()
            return
        await route.fallback()

    try:
        await page.route(re.compile(r".*/v1/conversations\?.*"), hold)
        await sign_in(page, stack.url, "quick")
        # The list is read before the question is sent (else the read could come after the
        # question's conversation exists); only its delivery is late.
        await asyncio.wait_for(read.wait(), 10)
        stack.answer("Twenty-five days.")
        await ask(page, "How many days?")
        await answered(page)
        assert len(held) == 1, "the list of conversations was not held back"
        route, response = held[0]
        assert (await response.json())["conversations"] == []
        async with page.expect_response(re.compile(r".*/v1/conversations\?.*")):
            await route.fulfill(response=response)
        await expect(page.locator(".message")).to_have_count(2)
        await expect(last_answer(page).locator(".markdown")).to_have_text("Twenty-five days.")
        await expect(page.locator("#conversation-list .conversation")).to_have_count(1)
        assert tab.errors == []
    finally:
        await tab.close()


async def test_typing_right_after_new_conversation_stays_where_it_is_typed(stack: Stack) -> None:
    """Someone clicks New conversation and types a knowledge base at once: the conversation's
    messages arriving afterwards do not move the focus, so no keystroke lands in the prompt."""
    tab = await open_tab(stack, DESKTOP)
    page = tab.page
    held: list[Route] = []

    async def hold(route: Route) -> None:
        if route.request.method == "GET" and not held:
            held.append(route)
            return
        await route.fallback()

    try:
        await sign_in(page, stack.url, "typist")
        await page.route(re.compile(r".*/v1/conversations/[^/?]+/messages.*"), hold)
        await page.get_by_role("button", name="New conversation").click()
        opened = page.locator("[aria-current=page]")
        await expect(opened).to_have_text(re.compile("New conversation"))
        field = page.get_by_label("Knowledge base", exact=True).first
        await field.click()
        await page.keyboard.type("hand")
        assert len(held) == 1, "the new conversation's messages were not held back"
        async with page.expect_response(re.compile(r".*/messages.*")):
            await held[0].continue_()
        await page.keyboard.type("book")
        await page.keyboard.press("Tab")
        await expect(page.locator("#announcer")).to_contain_text("Knowledge base: handbook")
        await expect(field).to_have_value("handbook")
        await expect(page.get_by_label("Message", exact=True)).to_have_value("")
        assert tab.errors == []
    finally:
        await tab.close()
