"""The commands for a person at a terminal: ``chatstore conversations``, ``chatstore show ID``
and ``chatstore info``, each with ``--json`` for scripts.

They are scoped like the tools: a user's conversations are listed and shown for that user only
(``--user``, else ``CHATSTORE_USER``, else the OS login name, as the stdio server serves), and
another user's conversation is "not found". Tables are drawn with rich on a terminal and as
plain aligned text in a pipe.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from mcp_server.resources import one_line, transcript_head, transcript_message
from store import BadImportLine, ConversationStore, Imported, Settings, _export
from store.contract import MAX_CONVERSATION_PAGE, MAX_MESSAGE_PAGE
from store.schemas import Conversation, Message, rfc3339

__all__ = ["run_conversations", "run_export", "run_import", "run_info", "run_show"]

log = logging.getLogger("chatstore")


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _console() -> Console:
    # In a pipe rich would assume 80 columns and cut ids short: there, as wide as it takes.
    width = None if sys.stdout.isatty() else 1_000
    return Console(highlight=False, soft_wrap=True, width=width)


async def run_conversations(settings: Settings, user: str, limit: int, as_json: bool) -> int:
    """The user's ``limit`` most recently updated conversations."""
    async with ConversationStore(settings) as store:
        found: list[Conversation] = []
        cursor = None
        while len(found) < limit:
            page = await store.list_conversations(
                user=user, limit=min(MAX_CONVERSATION_PAGE, limit - len(found)), cursor=cursor
            )
            found += page.conversations
            cursor = page.next_cursor
            if cursor is None:
                break
    if as_json:
        _print_json([c.model_dump(mode="json") for c in found])
        return 0
    if not found:
        print(f"{user} has no conversations")
        return 0
    table = Table("id", "title", "messages", "updated", "key", box=None, pad_edge=False)
    for c in found:
        # Text, not markup: a title's "[bold]" or "[link=…]" is shown as typed; one line,
        # controls shown, so that a title cannot add rows or drive the terminal.
        table.add_row(
            str(c.id),
            Text(one_line(c.title or "")),
            str(c.message_count),
            rfc3339(c.updated_at),
            Text(one_line(c.key or "")),
        )
    _console().print(table)
    return 0


async def run_show(settings: Settings, user: str, conversation_id: str, as_json: bool) -> int:
    """A conversation as a Markdown transcript (or JSON), every message, read a page at a time
    so that a long conversation streams out."""
    async with ConversationStore(settings) as store:
        conversation = await store.get_conversation(user=user, conversation_id=conversation_id)
        if as_json:
            print("{")
            print(f'  "conversation": {conversation.model_dump_json()},')
            print('  "messages": [')
        else:
            print(transcript_head(conversation, conversation.message_count))
        after, first = 0, True
        while True:
            page = await store.list_messages(
                user=user, conversation_id=conversation.id, after_seq=after, limit=MAX_MESSAGE_PAGE
            )
            for message in page.messages:
                if as_json:
                    print(("" if first else ",\n") + "    " + message.model_dump_json(), end="")
                else:
                    print(transcript_message(message))
                first = False
            if not page.has_more or not page.messages:
                break
            after = page.messages[-1].seq
        if as_json:
            print("\n  ]\n}")
    return 0


async def run_info(settings: Settings, as_json: bool) -> int:
    """The backend, where the database is, the schema version and what is stored."""
    async with ConversationStore(settings) as store:
        info = await store.info()
    if as_json:
        _print_json(info.model_dump(mode="json"))
        return 0
    table = Table(box=None, show_header=False, pad_edge=False)
    rows = {
        "database": info.database + (" (embedded default)" if settings.is_embedded_default else ""),
        "location": info.location,
        "schema": f"{info.schema_version} (at head)",
        "users": f"{info.users:,}",
        "conversations": f"{info.conversations:,}",
        "messages": f"{info.messages:,}",
    }
    for name, value in rows.items():
        table.add_row(name, value)
    _console().print(table)
    sys.stdout.flush()
    return 0


async def run_export(
    settings: Settings, user: str | None, conversation_id: str | None, form: str, out: TextIO
) -> int:
    """History out as JSONL (``store._export``'s format) or Markdown transcripts, streamed to
    ``out``, with a progress bar on stderr when it is a terminal (of every message stored, for
    a whole export; a running count otherwise)."""
    conversations = messages = 0
    bar = _progress("exporting", "{task.completed:,} messages")
    async with ConversationStore(settings) as store:
        total = None
        if user is None and conversation_id is None:
            total = (await store.info()).messages
        task = bar.add_task("export", total=total) if bar is not None else None
        async for record in store.export(user=user, conversation_id=conversation_id):
            kind = record.get("type")
            if form == "jsonl":
                out.write(_export.line(record) + "\n")
            elif kind == "conversation":
                head = transcript_head(Conversation.model_validate(record), record["message_count"])
                out.write(("\n---\n\n" if conversations else "") + head + "\n")
            elif kind == "message":
                out.write(transcript_message(Message.model_validate(record)) + "\n")
            if kind == "conversation":
                conversations += 1
            elif kind == "message":
                messages += 1
                if bar is not None and task is not None and messages % 1000 == 0:
                    bar.update(task, completed=messages)
    if bar is not None:
        bar.stop()
    print(f"exported {conversations:,} conversations, {messages:,} messages", file=sys.stderr)
    return 0


def _progress(what: str, counts: str, *columns: ProgressColumn) -> Progress | None:
    """A progress bar on stderr, or None when stderr is not a terminal (counts only, at the
    end)."""
    if not sys.stderr.isatty():
        return None
    bar = Progress(
        TextColumn(what),
        BarColumn(),
        *columns,
        TextColumn(counts),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    bar.start()
    return bar


def _imported(done: Imported) -> str:
    text = f"imported {done.conversations_imported:,} conversations, "
    text += f"{done.messages_imported:,} messages"
    if done.conversations_skipped:
        text += (
            f"; skipped {done.conversations_skipped:,} conversations already there "
            f"({done.messages_skipped:,} messages)"
        )
    if done.forks_linked:
        text += f"; linked {done.forks_linked:,} forks to their parents"
    return text


async def run_import(settings: Settings, source: BinaryIO, size: int | None) -> int:
    """An export (JSONL) loaded back (``ConversationStore.import_lines``), with a progress bar
    on stderr when it is a terminal (``size``: the file's bytes, when known); the counts at
    the end. A bad line stops it: the line is named and what came before it stays in."""
    bar = _progress("importing", "{task.fields[counts]}", DownloadColumn())
    task = bar.add_task("import", total=size, counts="") if bar is not None else None
    last = Imported(
        conversations_imported=0,
        messages_imported=0,
        conversations_skipped=0,
        messages_skipped=0,
        forks_linked=0,
    )

    def lines(source: Iterable[bytes]) -> Iterator[bytes]:
        read = 0
        for number, text in enumerate(source, 1):
            read += len(text)
            if bar is not None and task is not None and number % 1000 == 0:
                bar.update(task, completed=read)
            yield text
        if bar is not None and task is not None:
            bar.update(task, completed=read)

    def progress(done: Imported) -> None:
        nonlocal last
        last = done
        if bar is not None and task is not None:
            total = done.messages_imported + done.messages_skipped
            bar.update(task, counts=f"{total:,} messages")

    try:
        async with ConversationStore(settings) as store:
            done = await store.import_lines(lines(source), progress=progress)
    except BadImportLine as exc:
        if bar is not None:
            bar.stop()
        log.error("%s", exc)
        print(
            f"{_imported(last)} before that line; fix it and run the import again "
            "(what is in is skipped)",
            file=sys.stderr,
        )
        return 1
    finally:
        if bar is not None:
            bar.stop()
    print(_imported(done))
    return 0
