"""How a turn's tool activity looks to clients: the ``tool_call`` and ``tool_result`` events
(SSE and WebSocket share them) and the ``tool_activity`` of a stored answer."""

from __future__ import annotations

from parley.conversation.v1 import conversation_pb2 as conv
from parley_gateway import views


def test_tool_events_carry_the_call_and_its_result() -> None:
    call = conv.TurnEvent(
        tool_call=conv.ToolCallEvent(
            call_id="call_1", name="calculator", arguments_json='{"expression": "6 * 7"}'
        )
    )
    assert views.turn_event(call, "req-1") == (
        "tool_call",
        {"call_id": "call_1", "name": "calculator", "arguments": '{"expression": "6 * 7"}'},
    )
    ok = conv.TurnEvent(
        tool_result=conv.ToolResultEvent(call_id="call_1", name="calculator", result="42")
    )
    assert views.turn_event(ok, "req-1") == (
        "tool_result",
        {
            "call_id": "call_1",
            "name": "calculator",
            "result": "42",
            "is_error": False,
            "error_code": None,
        },
    )
    failed = conv.TurnEvent(
        tool_result=conv.ToolResultEvent(
            call_id="call_2",
            name="current_time",
            result="'Mars' is not an IANA time zone",
            is_error=True,
            error_code="unknown_timezone",
        )
    )
    name, data = views.turn_event(failed, "req-1")
    assert (name, data["is_error"], data["error_code"]) == ("tool_result", True, "unknown_timezone")


def test_a_stored_answer_lists_its_tool_calls() -> None:
    answer = conv.Message(
        id="msg_a",
        role=conv.MESSAGE_ROLE_ASSISTANT,
        status=conv.MESSAGE_STATUS_COMPLETE,
        tool_activity=[
            conv.ToolActivity(
                call_id="call_1",
                name="calculator",
                arguments_json='{"expression": "6 * 7"}',
                result="42",
                step=1,
            ),
            conv.ToolActivity(
                call_id="call_2",
                name="slow",
                arguments_json="{}",
                result="the tool did not answer within 20 s",
                is_error=True,
                error_code="tool_timeout",
                step=2,
            ),
        ],
    )
    assert views.message(answer)["tool_activity"] == [
        {
            "call_id": "call_1",
            "name": "calculator",
            "arguments": '{"expression": "6 * 7"}',
            "result": "42",
            "is_error": False,
            "error_code": None,
            "step": 1,
        },
        {
            "call_id": "call_2",
            "name": "slow",
            "arguments": "{}",
            "result": "the tool did not answer within 20 s",
            "is_error": True,
            "error_code": "tool_timeout",
            "step": 2,
        },
    ]
    user = conv.Message(id="msg_u", role=conv.MESSAGE_ROLE_USER)
    assert "tool_activity" not in views.message(user)
