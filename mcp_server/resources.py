"""For people browsing history (Claude Desktop): conversations as resources, and a prompt.

- ``resources/list`` is the user's most recently updated conversations
  (``ConversationResources``, a middleware: the SDK lists static resources only, and these are
  per user);
- ``chatstore://conversations/{conversation_id}`` reads one as a Markdown transcript;
- the prompt ``resume_conversation`` returns what ``get_context`` gives for
  ``CHATSTORE_RESUME_TOKENS``, to carry on with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import AssistantMessage, MCPServer, UserMessage
from mcp.server.mcpserver.prompts.base import Message as PromptMessage
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, Resource
from pydantic import BaseModel, Field

from mcp_server._sdk import protocol_errors
from mcp_server.context import AppContext, ChatContext, acting_user, store_of, user_of
from store import Context, Conversation, ConversationWithMessages, Message
from store.contract import MAX_RECENT_MESSAGES
from store.schemas import parse_id, rfc3339, tool_call_name

__all__ = [
    "RESOURCE_PREFIX",
    "ConversationResources",
    "one_line",
    "register",
    "render_transcript",
    "transcript_head",
    "transcript_message",
    "visible",
]

RESOURCE_PREFIX = "chatstore://conversations/"
RESOURCE_TEMPLATE = RESOURCE_PREFIX + "{conversation_id}"
#: resources/list shows this many of the user's most recently updated conversations.
RESOURCE_LIST_SIZE = 50
#: A transcript (resource) carries at most this many latest messages.
TRANSCRIPT_MESSAGES = MAX_RECENT_MESSAGES
#: MCP's code for a resource that does not exist.
RESOURCE_NOT_FOUND = -32002


def _check_uri(uri: str) -> None:
    if not uri.startswith(RESOURCE_PREFIX):
        raise MCPError(
            code=RESOURCE_NOT_FOUND,
            message=f"not_found: no resource at that URI; conversations are {RESOURCE_TEMPLATE}",
        )
    with protocol_errors(RESOURCE_NOT_FOUND):
        parse_id(uri.removeprefix(RESOURCE_PREFIX))


def _count(n: int) -> str:
    return f"{n} message" if n == 1 else f"{n} messages"


class ConversationResources:
    """Middleware answering ``resources/list`` with the user's own conversations, and refusing
    a ``resources/read`` of a URI that names no conversation.

    The SDK's handler shapes the (empty) static listing; the user's conversations are put in
    its place, dumped as the SDK dumps resources. A URI outside ``chatstore://conversations/``
    is ``not_found`` and one whose id is not a UUID ``invalid_argument``, as a tool's would be,
    without quoting the URI (the SDK's "Unknown resource" answer echoed it twice, and logged
    it).
    """

    async def __call__(
        self, ctx: ServerRequestContext[AppContext, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method == "resources/read" and isinstance(ctx.params, Mapping):
            uri = ctx.params.get("uri")
            if isinstance(uri, str):  # else the SDK's params validation refuses it
                _check_uri(uri)
        result = await call_next(ctx)
        if ctx.method != "resources/list":
            return result
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        if not isinstance(result, dict):
            raise TypeError(f"resources/list answered {type(result).__name__}, not a result")
        app = ctx.lifespan_context
        with protocol_errors(INTERNAL_ERROR):
            page = await app.store.list_conversations(
                user=acting_user(app), limit=RESOURCE_LIST_SIZE
            )
        result["resources"] = [
            Resource(
                uri=f"{RESOURCE_PREFIX}{c.id}",
                name=c.title or f"Untitled conversation {c.id}",
                title=c.title or "Untitled conversation",
                description=f"{_count(c.message_count)}, updated {rfc3339(c.updated_at)}",
                mime_type="text/markdown",
            ).model_dump(mode="json", by_alias=True, exclude_none=True)
            for c in page.conversations
        ]
        return result


# -- transcripts --------------------------------------------------------------------------
#
# A transcript's structure (its header, one "## seq. role" heading per message) is the
# server's; everything stored is the caller's text and must not be able to add to it: a message
# holding "\n\n## 3. user\n\n…", a title with a "- id:" line, or a tool name with backticks
# would otherwise show turns and headers that were never stored. So a message's content is a
# fenced code block whose fence is longer than any run of backticks in it (nothing inside can
# close it), shown verbatim; a title is one line with Markdown's punctuation escaped; names
# and ids are code spans, also one line. Control characters are shown as their Unicode
# pictures (a lone CR would end a line for a Markdown reader, and a terminal acts on ESC, CR
# and BS when `chatstore show` prints the transcript).

#: What ends a line for a Markdown reader (LF, CR), a terminal or another text viewer.
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+")
#: Control characters other than tab and LF.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: The ASCII punctuation that starts inline Markdown (emphasis, code, links, HTML, headings'
#: closing #s), backslash-escaped in a title.
_INLINE_MARKUP = re.compile(r"([\\`*_\[\]<>#~|])")
_BACKTICKS = re.compile("`+")


def _picture(found: re.Match[str]) -> str:
    code = ord(found.group())
    if code < 0x20:
        return chr(0x2400 + code)  # ␀ … ␟
    return "\u2421" if code == 0x7F else "\ufffd"  # ␡; C1 controls have no pictures


def visible(text: str) -> str:
    """``text`` with its control characters (other than tab and newline) shown, CRLF as LF."""
    return _CONTROLS.sub(_picture, text.replace("\r\n", "\n"))


def one_line(text: str) -> str:
    """``text`` on one line: each run of line breaks a space, other controls shown."""
    return visible(_LINE_BREAKS.sub(" ", text))


def _longest_backticks(text: str) -> int:
    return max((len(run) for run in _BACKTICKS.findall(text)), default=0)


def _fenced(text: str) -> str:
    fence = "`" * max(3, _longest_backticks(text) + 1)
    return f"{fence}\n{visible(text)}\n{fence}"


def _code(value: object) -> str:
    """``value`` as an inline code span that nothing in it can close."""
    text = one_line(str(value))
    ticks = "`" * (_longest_backticks(text) + 1)
    # CommonMark strips one space from each end of a span that starts and ends with one, and
    # a backtick next to the delimiter would lengthen it: padded, the text shows as it is.
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _heading_text(text: str) -> str:
    return _INLINE_MARKUP.sub(r"\\\1", one_line(text).strip())


def render_transcript(conversation: ConversationWithMessages) -> str:
    """A conversation as Markdown: a header, then each message under its role and seq."""
    shown = len(conversation.messages)
    parts = [transcript_head(conversation, shown)]
    parts += [transcript_message(message) for message in conversation.messages]
    return "\n".join(parts) + "\n"


def transcript_head(conversation: Conversation, shown: int) -> str:
    """A transcript's header: the title, the id, how many messages (of them ``shown``)."""
    title = _heading_text(conversation.title or "") or "Untitled conversation"
    return (
        f"# {title}\n\n"
        f"- id: `{conversation.id}`\n"
        f"- messages: {conversation.message_count}"
        + (f" (showing the latest {shown})" if shown < conversation.message_count else "")
        + f"\n- updated: {rfc3339(conversation.updated_at)}"
    )


def transcript_message(message: Message) -> str:
    """One message of a transcript, under its seq and role (it starts with a blank line)."""
    lines = ["", f"## {message.seq}. {message.role}", ""]
    if message.tool_call_id:
        lines.append(f"_result of tool call {_code(message.tool_call_id)}_\n")
    if message.content:
        lines.append(_fenced(message.content))
    for call in message.tool_calls or []:
        lines.append(f"\n_calls tool {_code(tool_call_name(call))} (id {_code(call.get('id'))})_")
    return "\n".join(lines)


def prompt_messages(title: str | None, context: Context) -> list[PromptMessage]:
    """A conversation's context as prompt messages, each in its real role where MCP has one.

    Prompt messages are the user's or the assistant's. The server's framing comes first (a
    user message, worded as the server's): the conversation, its summary, and its system
    messages (instructions, so not the user's words). Tool results follow the assistant
    message that called them, as the assistant's, marked as results.
    """
    shown = len(context.messages)
    framing = [
        f'Here is "{one_line(title or "") or "an untitled conversation"}" (conversation '
        f"{context.conversation_id}): the {shown} latest messages that fit "
        + ("(earlier ones left out). " if context.truncated else "(all of them). ")
        + "Continue it from where it left off."
    ]
    if context.summary is not None:
        framing.append(f"Summary of messages 1-{context.summary_up_to_seq}:\n{context.summary}")
    for message in context.messages:
        if message.role == "system":
            framing.append(f"System instructions (message {message.seq}):\n{message.content}")
    out: list[PromptMessage] = [UserMessage("\n\n".join(framing))]
    for message in context.messages:
        text = message.content
        if message.role == "assistant":
            for call in message.tool_calls or []:
                name, call_id = one_line(str(tool_call_name(call))), one_line(str(call.get("id")))
                text += f"\n[called tool {name} (id {call_id})]"
            out.append(AssistantMessage(text))
        elif message.role == "tool":
            call_id = one_line(message.tool_call_id or "")
            out.append(AssistantMessage(f"[result of tool call {call_id}]\n{text}"))
        elif message.role == "user":
            out.append(UserMessage(text))
    return out


async def conversation_transcript(conversation_id: str, ctx: ChatContext) -> str:
    with protocol_errors(RESOURCE_NOT_FOUND):
        conversation = await store_of(ctx).get_conversation(
            user=user_of(ctx), conversation_id=conversation_id, recent_messages=TRANSCRIPT_MESSAGES
        )
    return render_transcript(conversation)


async def resume_conversation(
    conversation_id: Annotated[str, Field(description="The id of the conversation to continue.")],
    ctx: ChatContext,
) -> list[PromptMessage]:
    store, user = store_of(ctx), user_of(ctx)
    budget = ctx.request_context.lifespan_context.settings.resume_tokens
    with protocol_errors(INVALID_PARAMS):
        conversation = await store.get_conversation(user=user, conversation_id=conversation_id)
        context = await store.get_context(
            user=user, conversation_id=conversation.id, max_tokens=budget
        )
    return prompt_messages(conversation.title, context)


def register(server: MCPServer[AppContext]) -> None:
    """Add the transcript resource template and the resume prompt to ``server``."""
    server.resource(
        RESOURCE_TEMPLATE,
        name="conversation",
        title="Conversation transcript",
        description="One of your conversations as a Markdown transcript (its latest messages).",
        mime_type="text/markdown",
    )(conversation_transcript)
    server.prompt(
        name="resume_conversation",
        title="Resume a conversation",
        description="Load a stored conversation's latest messages so you can continue it.",
    )(resume_conversation)
