"""What the OpenAI-compatible surface accepts, and the llm-router request each body becomes.

The bodies follow OpenAI's Chat Completions and Embeddings APIs as the ``openai`` SDK and
LangChain send them. Every string is checked as everywhere in the API (:data:`Text`: valid
Unicode without NUL) and numbers are strict, so bad input is a 400 naming its field before
llm-router sees it. Fields are treated three ways:

- mapped onto llm-router's ``ChatRequest`` or ``EmbedRequest``: ``model``, ``messages``
  (system, developer, user, assistant and tool roles; text and image parts), ``temperature``,
  ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``stop``, ``tools``, ``tool_choice``,
  ``stream``, ``stream_options.include_usage``; ``input``, ``encoding_format``,
  ``dimensions``;
- refused (:class:`Unsupported`) when they ask for what the router cannot do, accepted when
  they ask for the default: ``n`` other than 1, ``logprobs``, ``top_logprobs``,
  ``logit_bias``, non-zero penalties, a ``response_format`` other than text, audio output,
  ``prediction``, ``web_search_options``, the deprecated ``functions``; token arrays as
  embedding input;
- ignored: any other field (``user``, ``seed``, ``store``, ``metadata``, ``service_tier``,
  ``parallel_tool_calls``, ``reasoning_effort``...), which changes nothing a caller relies on
  here; the caller is always the authenticated principal, whatever ``user`` says.

Unlike Parley's own chat, a request may carry ``system`` (and ``developer``) messages: this
surface is raw, stateless access to a model, with no server-owned prompt, memory or retrieved
passages that a client's instructions could override; everything in the prompt is the
caller's own.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_gateway.inputs import Temperature, Text
from parley_gateway.openai_errors import Unsupported

ModelName = Annotated[Text, Field(min_length=1, max_length=200, description="A model alias.")]
StrictInt = Annotated[int, Field(strict=True)]
# What protobuf's int32 holds; llm-router then checks the alias's own limit.
TokenCount = Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
Fraction = Annotated[float, Field(ge=0, le=1, strict=True, allow_inf_nan=False)]
Penalty = Annotated[float, Field(ge=-2, le=2, strict=True, allow_inf_nan=False)]
ImageUrlText = Annotated[Text, Field(pattern=r"^(https?://|data:)", max_length=1_048_576)]


class _Body(BaseModel):
    # OpenAI's clients send fields of their own and of newer API versions: ignored.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: Text


class RefusalPart(_Body):
    """A refusal the model gave earlier, sent back as part of an assistant message."""

    type: Literal["refusal"]
    refusal: Text


class ImageUrl(_Body):
    url: ImageUrlText = Field(description="An https: or data: URL.")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Body):
    type: Literal["image_url"]
    image_url: ImageUrl


UserPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


class FunctionCall(_Body):
    name: Text
    arguments: Text = Field(description="The arguments as JSON text.")


class ToolCall(_Body):
    id: Text
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Body):
    """The caller's instructions to the model (allowed on this surface: see the module)."""

    role: Literal["system"]
    content: Text | list[TextPart]
    name: Text | None = None


class DeveloperMessage(_Body):
    """OpenAI's newer name for a system message; sent to the model as one."""

    role: Literal["developer"]
    content: Text | list[TextPart]
    name: Text | None = None


class UserMessage(_Body):
    role: Literal["user"]
    content: Text | list[UserPart]
    name: Text | None = None


class AssistantMessage(_Body):
    role: Literal["assistant"]
    content: Text | list[AssistantPart] | None = None
    tool_calls: list[ToolCall] | None = None
    name: Text | None = None


class ToolMessage(_Body):
    """The result of a tool call the model asked for."""

    role: Literal["tool"]
    content: Text | list[TextPart]
    tool_call_id: Annotated[Text, Field(min_length=1)]


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]


class FunctionDefinition(_Body):
    name: Text
    description: Text | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="JSON Schema of the arguments (an object schema)."
    )
    strict: bool | None = None


class ToolDefinition(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Body):
    name: Text


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Body):
    include_usage: bool | None = Field(
        None, description="Send the usage in a last chunk whose choices are empty."
    )


class ResponseFormat(_Body):
    type: str


class ChatCompletionBody(_Body):
    """A Chat Completions request, as OpenAI's clients send it."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model": "default",
                    "messages": [
                        {"role": "system", "content": "Answer in one sentence."},
                        {"role": "user", "content": "What is a vector database?"},
                    ],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            ]
        },
    )

    model: ModelName
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Fraction | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    stop: Text | Annotated[list[Text], Field(max_length=4)] | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    # Accepted with their default value only (see the module).
    n: StrictInt | None = None
    logprobs: bool | None = None
    top_logprobs: StrictInt | None = None
    logit_bias: dict[str, float] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    response_format: ResponseFormat | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[Any] | None = None
    function_call: Any = None


class EmbeddingsBody(_Body):
    """An Embeddings request, as OpenAI's clients send it."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"model": "local", "input": ["first text", "second text"]}]
        },
    )

    model: ModelName
    input: Text | list[Text] | list[StrictInt] | list[list[StrictInt]] = Field(
        description="A text or a list of texts (token arrays are not accepted)."
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None


def _refuse_unsupported(body: ChatCompletionBody) -> None:
    """Refuse, naming it, a field that asks for what llm-router cannot do."""
    if body.n is not None and body.n != 1:
        raise Unsupported("n", "n must be 1: one choice per request")
    if body.logprobs or body.top_logprobs:
        raise Unsupported("logprobs", "logprobs are not available")
    if body.logit_bias:
        raise Unsupported("logit_bias", "logit_bias is not supported")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise Unsupported(name, f"{name} is not supported; send 0 or leave it out")
    if body.response_format is not None and body.response_format.type != "text":
        raise Unsupported(
            "response_format",
            f"response_format {body.response_format.type!r} is not supported; "
            "use tools for structured output",
        )
    if body.modalities is not None and body.modalities != ["text"]:
        raise Unsupported("modalities", "only text output is available")
    for name in ("audio", "prediction", "web_search_options"):
        if getattr(body, name) is not None:
            raise Unsupported(name, f"{name} is not supported")
    if body.functions is not None or body.function_call is not None:
        raise Unsupported("functions", "functions and function_call are not supported; use tools")


_ROLES = {
    "system": llm.ROLE_SYSTEM,
    "developer": llm.ROLE_SYSTEM,
    "user": llm.ROLE_USER,
    "assistant": llm.ROLE_ASSISTANT,
    "tool": llm.ROLE_TOOL,
}


def _parts(content: str | list[Any] | None) -> list[llm.ContentPart]:
    if content is None:
        return []
    if isinstance(content, str):
        return [llm.ContentPart(text=content)]
    parts = []
    for part in content:
        if isinstance(part, ImagePart):
            parts.append(llm.ContentPart(image_url=part.image_url.url))
        elif isinstance(part, RefusalPart):
            parts.append(llm.ContentPart(text=part.refusal))
        else:
            parts.append(llm.ContentPart(text=part.text))
    return parts


def _message(message: Message) -> llm.ChatMessage:
    converted = llm.ChatMessage(role=_ROLES[message.role], content=_parts(message.content))
    if isinstance(message, ToolMessage):
        converted.tool_call_id = message.tool_call_id
    elif message.name:
        converted.name = message.name
    if isinstance(message, AssistantMessage) and message.tool_calls:
        converted.tool_calls.extend(
            llm.ToolCall(id=c.id, name=c.function.name, arguments_json=c.function.arguments)
            for c in message.tool_calls
        )
    return converted


def _tool(tool: ToolDefinition) -> llm.Tool:
    function = tool.function
    parameters = function.parameters if function.parameters is not None else {"type": "object"}
    # ASCII-escaped: a key or value may hold a lone surrogate, which protobuf cannot carry.
    return llm.Tool(
        name=function.name,
        description=function.description or "",
        parameters_json=json.dumps(parameters),
    )


def chat_request(body: ChatCompletionBody) -> llm.ChatRequest:
    """The llm-router request of a Chat Completions body; :class:`Unsupported` if it asks
    for what the router cannot do."""
    _refuse_unsupported(body)
    request = llm.ChatRequest(
        model=body.model,
        messages=[_message(m) for m in body.messages],
        tools=[_tool(t) for t in body.tools or ()],
    )
    if isinstance(body.tool_choice, NamedToolChoice):
        request.tool_choice = body.tool_choice.function.name
    elif body.tool_choice is not None:
        request.tool_choice = body.tool_choice
    if body.temperature is not None:
        request.temperature = body.temperature
    if body.top_p is not None:
        request.top_p = body.top_p
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None:
        request.max_tokens = max_tokens
    if isinstance(body.stop, str):
        request.stop.append(body.stop)
    elif body.stop:
        request.stop.extend(body.stop)
    return request


def embed_request(body: EmbeddingsBody) -> llm.EmbedRequest:
    """The llm-router request of an Embeddings body; token arrays are refused."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    if any(not isinstance(text, str) for text in texts):
        raise Unsupported("input", "input must be a text or a list of texts, not token arrays")
    return llm.EmbedRequest(model=body.model, inputs=[t for t in texts if isinstance(t, str)])
