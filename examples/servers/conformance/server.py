"""The MCP conformance suite's server fixture, written with the official Python SDK.

`@modelcontextprotocol/conformance server --url …` drives a server that implements the
suite's fixture specification: the `test_*` tools, `test://` resources and `test_*`
prompts each scenario names, plus completion, logging, resource subscriptions and the
2026-07-28 multi-round-trip (`InputRequiredResult`) flows. This file implements that
specification from the scenario descriptions; it serves both protocol eras:

* legacy (2025-06-18 / 2025-11-25): sessions, server-to-client requests (sampling,
  elicitation) on the tool call's stream, `logging/setLevel`, `resources/subscribe`;
* modern (2026-07-28): stateless requests, `InputRequiredResult` instead of
  server-to-client requests, `subscriptions/listen`, caching hints.

Two extensions live in sibling modules, wired in below:

* `tasks.py`: `io.modelcontextprotocol/tasks` (SEP-2663): task-capable tools answer
  with a `CreateTaskResult`, followed by `tasks/get` / `tasks/update` / `tasks/cancel`;
  `task_tools.py` holds the scenarios' tools (`greet`, `slow_compute`,
  `confirm_delete`, …) and `task_listen.py` the `notifications/tasks` that
  `subscriptions/listen` streams carry for the task ids they name;
* `skills.py`: `io.modelcontextprotocol/skills` (SEP-2640): `skill://` resources,
  `skills/list`, `skills/get` and `resources/directory/read`.

`python server.py` speaks MCP on stdio (the SDK's stdio loop serves both eras: the
client's first message decides); SMCP runs it exactly so. tests/conformance/ also
imports `mcp` from here and serves it over Streamable HTTP for the direct baseline.
"""

import asyncio
import base64
import json
import warnings
from typing import Annotated, Any

from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import (
    AudioContent,
    CallToolResult,
    ClientCapabilities,
    Completion,
    CreateMessageRequest,
    CreateMessageRequestParams,
    ElicitRequest,
    ElicitRequestFormParams,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequiredResult,
    ListRootsRequest,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

# Sibling modules: `python server.py` puts this directory on sys.path; importers that
# load this file by path (tests/conformance/direct_server.py) add it themselves.
import skills
import task_listen
import task_tools
import tasks

# The logging capability is deprecated as of 2026-07-28, but the legacy-era scenarios
# still exercise it; the SDK warns on every use.
warnings.filterwarnings("ignore", message=".*deprecated as of 2026-07-28.*")

# A 1x1 PNG and a minimal WAV, base64.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_B64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

# SEP-1613 / SEP-2106: a tool whose inputSchema uses the wider JSON Schema 2020-12
# vocabulary ($schema, $defs with $anchor, $ref, allOf/anyOf, if/then/else,
# additionalProperties), which the server must advertise unchanged.
JSON_SCHEMA_2020_12_TOOL = "json_schema_2020_12_tool"
JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {
        "properties": {"contactMethod": {"const": "phone"}},
        "required": ["contactMethod"],
    },
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


class ConformanceServer(MCPServer):
    """MCPServer whose tools/list advertises the raw 2020-12 schema for one tool.

    The SDK derives every inputSchema from the function signature; SEP-1613 asks for
    keywords a signature cannot express, so that one schema is substituted verbatim.
    """

    async def list_tools(self):  # type: ignore[override]
        tools = await super().list_tools()
        return [
            t.model_copy(update={"input_schema": JSON_SCHEMA_2020_12})
            if t.name == JSON_SCHEMA_2020_12_TOOL
            else t
            for t in tools
        ]


# Cacheable results carry SEP-2549 hints (2026-07-28; ignored on the legacy wire).
_HINTS = {
    "server/discover": CacheHint(ttl_ms=0, scope="private"),
    "tools/list": CacheHint(ttl_ms=300_000, scope="public"),
    "prompts/list": CacheHint(ttl_ms=300_000, scope="public"),
    "resources/list": CacheHint(ttl_ms=300_000, scope="public"),
    "resources/templates/list": CacheHint(ttl_ms=300_000, scope="public"),
    "resources/read": CacheHint(ttl_ms=0, scope="private"),
}

# The tasks extension takes over subscriptions/listen (for `taskIds`), and needs the
# bus the SDK's own listen handler reads to keep serving the standard events.
_bus = InMemorySubscriptionBus()
_tasks = tasks.TasksExtension(task_tools.FIXTURE_TOOLS)

mcp = ConformanceServer(
    "smcp-conformance-fixture",
    version="1.0.0",
    description="The MCP conformance suite's server fixture (Python SDK)",
    cache_hints=_HINTS,  # type: ignore[arg-type]
    subscriptions=_bus,
    extensions=[_tasks, skills.SkillsExtension()],
)
task_listen.serve_task_notifications(mcp._lowlevel_server, _tasks.store, _bus)


def _modern(ctx: Context) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _text(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)])


def _elicit(message: str, schema: dict[str, Any]) -> ElicitRequest:
    return ElicitRequest(
        params=ElicitRequestFormParams(message=message, requested_schema=schema)
    )


def _sample(prompt: str, max_tokens: int) -> CreateMessageRequest:
    return CreateMessageRequest(
        params=CreateMessageRequestParams(
            messages=[
                SamplingMessage(
                    role="user", content=TextContent(type="text", text=prompt)
                )
            ],
            max_tokens=max_tokens,
        )
    )


def _responses(ctx: Context) -> dict[str, dict[str, Any]]:
    """The client's inputResponses as plain dicts (wire field names)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in (ctx.input_responses or {}).items():
        if hasattr(value, "model_dump"):
            out[key] = value.model_dump(by_alias=True, mode="json", exclude_none=True)
        elif isinstance(value, dict):
            out[key] = value
    return out


def _field(response: dict[str, Any] | None, name: str) -> Any:
    content = (response or {}).get("content")
    return content.get(name) if isinstance(content, dict) else None


def _sampled_text(response: dict[str, Any] | None) -> str | None:
    content = (response or {}).get("content")
    if isinstance(content, list):
        content = next(
            (c for c in content if isinstance(c, dict) and c.get("type") == "text"),
            None,
        )
    return content.get("text") if isinstance(content, dict) else None


def _state(ctx: Context) -> dict[str, Any]:
    try:
        state = json.loads(ctx.request_state or "")
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


NAME_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}


# ---------------------------------------------------------------- content tools


@mcp.tool(description="Returns simple text content")
def test_simple_text() -> CallToolResult:
    return _text("This is a simple text response for testing.")


@mcp.tool(description="Returns image content (a 1x1 PNG)")
def test_image_content() -> CallToolResult:
    return CallToolResult(
        content=[ImageContent(type="image", data=PNG_B64, mime_type="image/png")]
    )


@mcp.tool(description="Returns audio content (a minimal WAV)")
def test_audio_content() -> CallToolResult:
    return CallToolResult(
        content=[AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")]
    )


@mcp.tool(description="Returns an embedded resource")
def test_embedded_resource() -> CallToolResult:
    resource = TextResourceContents(
        uri="test://embedded-resource",
        mime_type="text/plain",
        text="This is an embedded resource content.",
    )
    return CallToolResult(
        content=[EmbeddedResource(type="resource", resource=resource)]
    )


@mcp.tool(description="Returns text, image and embedded resource content together")
def test_multiple_content_types() -> CallToolResult:
    resource = TextResourceContents(
        uri="test://mixed-content-resource",
        mime_type="application/json",
        text=json.dumps({"test": "data", "value": 123}, separators=(",", ":")),
    )
    return CallToolResult(
        content=[
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=resource),
        ]
    )


@mcp.tool(description="Always fails: returns a tool error result")
def test_error_handling() -> CallToolResult:
    raise RuntimeError("This tool intentionally returns an error for testing")


@mcp.tool(
    description="Tool whose inputSchema uses JSON Schema 2020-12 keywords (SEP-1613)"
)
def json_schema_2020_12_tool(
    name: str | None = None, address: dict[str, str] | None = None
) -> CallToolResult:
    return _text(
        f"JSON Schema 2020-12 tool called with: {json.dumps({'name': name, 'address': address})}"
    )


# ------------------------------------------------------ notifications on the call


@mcp.tool(description="Sends three info log messages while it runs")
async def test_tool_with_logging(ctx: Context) -> CallToolResult:
    await ctx.info("Tool execution started")
    await asyncio.sleep(0.05)
    await ctx.info("Tool processing data")
    await asyncio.sleep(0.05)
    await ctx.info("Tool execution completed")
    return _text("Tool with logging executed successfully")


@mcp.tool(description="Reports progress 0/100, 50/100, 100/100")
async def test_tool_with_progress(ctx: Context) -> CallToolResult:
    for step in (0, 50, 100):
        if step:
            await asyncio.sleep(0.05)
        await ctx.report_progress(step, 100, f"Completed step {step} of 100")
    return _text("Progress test completed")


@mcp.tool(
    description="Closes its SSE stream mid-call; the result arrives after the client reconnects (SEP-1699)"
)
async def test_reconnection(ctx: Context) -> CallToolResult:
    await ctx.close_sse_stream()
    await asyncio.sleep(0.1)
    return _text(
        "Reconnection test completed successfully. If you received this, "
        "the client properly reconnected after stream closure."
    )


@mcp.tool(
    description="2026-07-28 diagnostic: logs only when the request set a log level"
)
async def test_logging_tool(ctx: Context) -> CallToolResult:
    await ctx.info("Diagnostic trace logging activated")
    return _text("Logging evaluated")


@mcp.tool(
    description="2026-07-28 diagnostic: streams progress, then completes (no independent requests)"
)
async def test_streaming_elicitation(ctx: Context) -> CallToolResult:
    await ctx.report_progress(50, 100, "halfway")
    await asyncio.sleep(0.05)
    return _text("Streaming complete")


@mcp.tool(description="Announces a tools list change to subscriptions/listen streams")
async def test_trigger_tool_change(ctx: Context) -> CallToolResult:
    await ctx.notify_tools_changed()
    return _text("Mutation triggered")


@mcp.tool(description="Announces a prompts list change to subscriptions/listen streams")
async def test_trigger_prompt_change(ctx: Context) -> CallToolResult:
    await ctx.notify_prompts_changed()
    return _text("Mutation triggered")


@mcp.tool(
    description="Echoes a parameter that 2026-07-28 clients also send as the Mcp-Param-Region header"
)
def test_custom_header(
    region: Annotated[
        str, Field(description="A region", json_schema_extra={"x-mcp-header": "Region"})
    ],
) -> CallToolResult:
    return _text(f"region={region}")


# ---------------------------------------------------- sampling and elicitation
# Legacy era: a server-to-client request on the call's stream. Modern era: the same
# question as an InputRequiredResult, answered by the client's retry.


@mcp.tool(description="Asks the client's LLM to answer a prompt (sampling)")
async def test_sampling(
    prompt: Annotated[str, Field(description="The prompt to send to the LLM")],
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    if _modern(ctx):
        answer = _sampled_text(_responses(ctx).get("llm"))
        if answer is None:
            return InputRequiredResult(input_requests={"llm": _sample(prompt, 100)})
        return _text(f"LLM response: {answer}")
    result = await ctx.session.create_message(
        [SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=100,
        related_request_id=ctx.request_context.request_id,
    )
    content = result.content
    text = content.text if isinstance(content, TextContent) else str(content)
    return _text(f"LLM response: {text}")


ELICITATION_SCHEMA = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

SEP1034_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {
            "type": "boolean",
            "description": "Verification status",
            "default": True,
        },
    },
    "required": [],
}

SEP1330_SCHEMA = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Select one option",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Select one option with titles",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Select multiple options",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Select multiple options with titles",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}


async def _ask(
    ctx: Context, message: str, schema: dict[str, Any], prefix: str
) -> CallToolResult | InputRequiredResult:
    if _modern(ctx):
        answer = _responses(ctx).get("form")
        if answer is None:
            return InputRequiredResult(
                input_requests={"form": _elicit(message, schema)}
            )
        return _text(
            f"{prefix}action={answer.get('action')}, content={json.dumps(answer.get('content') or {})}"
        )
    result = await ctx.session.elicit_form(
        message, schema, related_request_id=ctx.request_context.request_id
    )
    return _text(
        f"{prefix}action={result.action}, content={json.dumps(result.content or {})}"
    )


@mcp.tool(description="Asks the user for input (elicitation)")
async def test_elicitation(
    message: Annotated[str, Field(description="The message to show the user")],
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    return await _ask(ctx, message, ELICITATION_SCHEMA, "User response: ")


@mcp.tool(
    description="Elicitation whose schema has defaults for every primitive type (SEP-1034)"
)
async def test_elicitation_sep1034_defaults(
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    return await _ask(
        ctx,
        "Please review and update the form fields with defaults",
        SEP1034_SCHEMA,
        "Elicitation completed: ",
    )


@mcp.tool(description="Elicitation with all five enum schema variants (SEP-1330)")
async def test_elicitation_sep1330_enums(
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    return await _ask(
        ctx,
        "Please select options from the enum fields",
        SEP1330_SCHEMA,
        "Elicitation completed: ",
    )


# ------------------------------------------- 2026-07-28 multi-round-trip (SEP-2322)
# Each tool asks on round one and completes when the retry carries the answers. The
# SDK seals `request_state` (integrity + expiry), so a tampered state never reaches
# the tool: the SDK rejects it with -32602.


@mcp.tool(
    description="2026-07-28: needs the client's sampling capability (-32021 otherwise)"
)
def test_missing_capability(ctx: Context) -> CallToolResult:
    caps = ctx.client_capabilities
    if caps is None or caps.sampling is None:
        raise MCPError(
            code=-32021,
            message="Missing required client capability: sampling",
            data={
                "requiredCapabilities": ClientCapabilities(sampling={}).model_dump(  # type: ignore[arg-type]
                    by_alias=True, mode="json", exclude_none=True
                )
            },
        )
    return _text("Success")


@mcp.tool(description="MRTR: asks the user's name with an elicitation input request")
def test_input_required_result_elicitation(
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    name = _field(_responses(ctx).get("user_name"), "name")
    if not isinstance(name, str):
        return InputRequiredResult(
            input_requests={"user_name": _elicit("What is your name?", NAME_SCHEMA)}
        )
    return _text(f"Hello, {name}!")


@mcp.tool(description="MRTR: asks the client's LLM with a sampling input request")
def test_input_required_result_sampling(
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    answer = _sampled_text(_responses(ctx).get("capital_question"))
    if answer is None:
        return InputRequiredResult(
            input_requests={
                "capital_question": _sample("What is the capital of France?", 100)
            }
        )
    return _text(f"Sampling result: {answer}")


@mcp.tool(
    description="MRTR: asks for the client's roots with a roots/list input request"
)
def test_input_required_result_list_roots(
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    roots = (_responses(ctx).get("client_roots") or {}).get("roots")
    if not isinstance(roots, list):
        return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})
    uris = ", ".join(str(r.get("uri")) for r in roots if isinstance(r, dict))
    return _text(f"Found {len(roots)} root(s): {uris}")


@mcp.tool(description="MRTR: round-trips requestState")
def test_input_required_result_request_state(
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    ok = _field(_responses(ctx).get("confirm"), "ok")
    if _state(ctx).get("kind") == "request-state" and ok is not None:
        return _text("state-ok: requestState validated")
    return InputRequiredResult(
        input_requests={
            "confirm": _elicit(
                "Please confirm",
                {
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}},
                    "required": ["ok"],
                },
            )
        },
        request_state=json.dumps({"kind": "request-state"}),
    )


@mcp.tool(
    description="MRTR: elicitation, sampling and roots/list input requests at once"
)
def test_input_required_result_multiple_inputs(
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    answers = _responses(ctx)
    if (
        _state(ctx).get("kind") == "multiple-inputs"
        and {"user_name", "greeting", "client_roots"} <= answers.keys()
    ):
        name = _field(answers["user_name"], "name")
        greeting = _sampled_text(answers["greeting"])
        roots = answers["client_roots"].get("roots") or []
        return _text(f"Name: {name}; Greeting: {greeting}; Roots: {len(roots)}")
    return InputRequiredResult(
        input_requests={
            "user_name": _elicit("What is your name?", NAME_SCHEMA),
            "greeting": _sample("Generate a greeting", 50),
            "client_roots": ListRootsRequest(),
        },
        request_state=json.dumps({"kind": "multiple-inputs"}),
    )


@mcp.tool(description="MRTR: three rounds, requestState evolving between them")
def test_input_required_result_multi_round(
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    state, answers = _state(ctx), _responses(ctx)
    if state.get("round") == 1 and "step1" in answers:
        name = _field(answers["step1"], "name")
        return InputRequiredResult(
            input_requests={
                "step2": _elicit(
                    "Step 2: What is your favorite color?",
                    {
                        "type": "object",
                        "properties": {"color": {"type": "string"}},
                        "required": ["color"],
                    },
                )
            },
            request_state=json.dumps({"round": 2, "name": name}),
        )
    if state.get("round") == 2 and "step2" in answers:
        color = _field(answers["step2"], "color")
        return _text(f"Multi-round complete for {state.get('name')} who likes {color}")
    return InputRequiredResult(
        input_requests={"step1": _elicit("Step 1: What is your name?", NAME_SCHEMA)},
        request_state=json.dumps({"round": 1}),
    )


@mcp.tool(
    description="MRTR: integrity-protected requestState; a tampered one is rejected"
)
def test_input_required_result_tampered_state(
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    if _state(ctx).get("kind") == "tamper-test" and "confirm" in _responses(ctx):
        return _text("integrity-ok: state verified")
    return InputRequiredResult(
        input_requests={
            "confirm": _elicit(
                "Please confirm",
                {
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}},
                    "required": ["ok"],
                },
            )
        },
        request_state=json.dumps({"kind": "tamper-test"}),
    )


@mcp.tool(description="MRTR: only asks for what the client declared it can do")
def test_input_required_result_capabilities(
    ctx: Context,
) -> CallToolResult | InputRequiredResult:
    answers = _responses(ctx)
    if answers:
        return _text(f"capabilities-ok: received {','.join(sorted(answers))}")
    caps = ctx.client_capabilities
    requests: dict[str, Any] = {}
    if caps is not None and caps.elicitation is not None:
        requests["elicit_input"] = _elicit(
            "Elicitation input",
            {
                "type": "object",
                "properties": {"value": {"type": "string"}},
                "required": ["value"],
            },
        )
    if caps is not None and caps.sampling is not None:
        requests["sample_input"] = _sample("Sample request", 50)
    if not requests:
        return _text(
            "capabilities-ok: client declared neither elicitation nor sampling"
        )
    return InputRequiredResult(
        input_requests=requests, request_state=json.dumps({"kind": "capabilities-test"})
    )


# ------------------------------------------------------------------- resources


@mcp.resource(
    "test://static-text",
    name="static-text",
    description="A static text resource",
    mime_type="text/plain",
)
def static_text() -> str:
    return "This is the content of the static text resource."


@mcp.resource(
    "test://static-binary",
    name="static-binary",
    description="A static binary resource (PNG)",
    mime_type="image/png",
)
def static_binary() -> bytes:
    return base64.b64decode(PNG_B64)


@mcp.resource(
    "test://template/{id}/data",
    name="template",
    description="A resource template with parameter substitution",
    mime_type="application/json",
)
def template_data(id: str) -> str:
    return json.dumps(
        {"id": id, "templateTest": True, "data": f"Data for ID: {id}"},
        separators=(",", ":"),
    )


@mcp.resource(
    "test://watched-resource",
    name="watched-resource",
    description="A subscribable resource",
    mime_type="text/plain",
)
def watched_resource() -> str:
    return "Watched resource content"


_subscriptions: set[str] = set()


async def _subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
    _subscriptions.add(str(params.uri))
    return EmptyResult()


async def _unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
    _subscriptions.discard(str(params.uri))
    return EmptyResult()


async def _set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
    return EmptyResult()


# Legacy-era methods MCPServer has no decorator for; the SDK answers them -32601 on
# the 2026-07-28 wire by itself.
mcp._lowlevel_server.add_request_handler(
    "resources/subscribe", SubscribeRequestParams, _subscribe
)
mcp._lowlevel_server.add_request_handler(
    "resources/unsubscribe", UnsubscribeRequestParams, _unsubscribe
)
mcp._lowlevel_server.add_request_handler(
    "logging/setLevel", SetLevelRequestParams, _set_level
)


# --------------------------------------------------------------------- prompts


@mcp.prompt(description="A simple prompt without arguments")
def test_simple_prompt() -> list[Message]:
    return [UserMessage("This is a simple prompt for testing.")]


@mcp.prompt(description="A prompt with required arguments")
def test_prompt_with_arguments(
    arg1: Annotated[str, Field(description="First test argument")],
    arg2: Annotated[str, Field(description="Second test argument")],
) -> list[Message]:
    return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


@mcp.prompt(description="A prompt that embeds a resource")
def test_prompt_with_embedded_resource(
    resourceUri: Annotated[
        str, Field(description="URI of the resource to embed")
    ],  # the suite's wire name
) -> list[Message]:
    resource = TextResourceContents(
        uri=resourceUri,
        mime_type="text/plain",
        text="Embedded resource content for testing.",
    )
    return [
        UserMessage(EmbeddedResource(type="resource", resource=resource)),
        UserMessage("Please process the embedded resource above."),
    ]


@mcp.prompt(description="A prompt with image content")
def test_prompt_with_image() -> list[Message]:
    return [
        UserMessage(ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
        UserMessage("Please analyze the image above."),
    ]


@mcp.prompt(description="MRTR: a prompt that needs elicited context first")
def test_input_required_result_prompt(
    ctx: Context,
) -> InputRequiredResult | list[Message]:
    context = _field(_responses(ctx).get("user_context"), "context")
    if not isinstance(context, str):
        return InputRequiredResult(
            input_requests={
                "user_context": _elicit(
                    "What context should the prompt use?",
                    {
                        "type": "object",
                        "properties": {"context": {"type": "string"}},
                        "required": ["context"],
                    },
                )
            }
        )
    return [UserMessage(f"Prompt with context: {context}")]


# ------------------------------------------------------------------ completion


@mcp.completion()
async def complete(ref: Any, argument: Any, context: Any) -> Completion:
    candidates = ["paris", "park", "party"] if argument.name == "arg1" else []
    values = [v for v in candidates if v.startswith(argument.value or "")]
    return Completion(values=values, total=len(values), has_more=False)


if __name__ == "__main__":
    mcp.run()
