"""For people browsing history (Claude Desktop): conversations as resources, and a prompt.

- ``resources/list`` is the user's most recently updated conversations (``ConversationList``,
  a middleware: the SDK lists static resources only, and these are per user);
- ``chatstore://conversations/{conversation_id}`` reads one as a Markdown transcript;
- the prompt ``resume_conversation`` returns what ``get_context`` gives for
  ``CHATSTORE_RESUME_TOKENS``, to carry on with.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import AssistantMessage, MCPServer, UserMessage
from mcp.server.mcpserver.prompts.base import Message as PromptMessage
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, Resource
from pydantic import BaseModel, Field

from mcp_server._sdk import protocol_errors
from mcp_server.context import AppContext, ChatContext, acting_user, store_of, user_of
from store import Context, Conversation, ConversationWithMessages, Message
from store.contract import MAX_RECENT_MESSAGES
from store.schemas import rfc3339, tool_call_name

__all__ = [
    "RESOURCE_PREFIX",
    "ConversationList",
    "register",
    "render_transcript",
]

RESOURCE_PREFIX = "chatstore://conversations/"
RESOURCE_TEMPLATE = RESOURCE_PREFIX + "{conversation_id}"
#: resources/list shows this many of the user's most recently updated conversations.
RESOURCE_LIST_SIZE = 50
#: A transcript (resource) carries at most this many latest messages.
TRANSCRIPT_MESSAGES = MAX_RECENT_MESSAGES
#: MCP's code for a resource that does not exist.
RESOURCE_NOT_FOUND = -32002


def _count(n: int) -> str:
    return f"{n} message" if n == 1 else f"{n} messages"


class ConversationList:
    """Middleware answering ``resources/list`` with the user's own conversations.

    The SDK's handler shapes the (empty) static listing; the user's conversations are put in
    its place, dumped as the SDK dumps resources.
    """

    async def __call__(
        self, ctx: ServerRequestContext[AppContext, Any], call_next: CallNext
    ) -> HandlerResult:
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


def render_transcript(conversation: ConversationWithMessages) -> str:
    """A conversation as Markdown: a header, then each message under its role and seq."""
    shown = len(conversation.messages)
    parts = [transcript_head(conversation, shown)]
    parts += [transcript_message(message) for message in conversation.messages]
    return "\n".join(parts) + "\n"


def transcript_head(conversation: Conversation, shown: int) -> str:
    """A transcript's header: the title, the id, how many messages (of them ``shown``)."""
    title = conversation.title or "Untitled conversation"
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
        lines.append(f"_result of tool call `{message.tool_call_id}`_\n")
    if message.content:
        lines.append(message.content)
    for call in message.tool_calls or []:
        lines.append(f"\n_calls tool `{tool_call_name(call)}` (id `{call.get('id')}`)_")
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
        f'Here is "{title or "an untitled conversation"}" (conversation '
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
                text += f"\n[called tool {tool_call_name(call)} (id {call.get('id')})]"
            out.append(AssistantMessage(text))
        elif message.role == "tool":
            out.append(AssistantMessage(f"[result of tool call {message.tool_call_id}]\n{text}"))
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
