"""Import (``ConversationStore.import_lines``, ``chatstore import``): an export loaded back with
every id, key, count and timestamp; the same bytes when exported again, across backends; what
exists skipped; each conversation all or nothing; the first bad line named; forks linked to a
parent that comes later; a re-run after kill -9 adds only what is missing."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from store import BadImportLine, ConversationStore, Settings, contract, migrate
from store._export import line
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.mcp_server.helpers import run_command, run_main
from tests.rawdb import RawDB
from tests.store.test_export import _everything
from tests.support import CHATSTORE, REPO_ROOT, server_env

#: The chunk size these tests import with: small, so that several chunks stay quick to build.
IMPORT_CHUNK = 100


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contract, "IMPORT_CHUNK", IMPORT_CHUNK)


async def _lines(store: ConversationStore, **scope: Any) -> list[str]:
    return [line(record) async for record in store.export(**scope)]


def _file(lines: list[str]) -> list[str]:
    return [text + "\n" for text in lines]


@asynccontextmanager
async def _empty(kind: str, folder: Path) -> AsyncIterator[ConversationStore]:
    """A store on an empty database of its own (export then reads only what a test put in)."""
    if kind == "sqlite":
        settings = Settings(database_url=f"sqlite://{folder / (uuid.uuid4().hex + '.sqlite3')}")
        async with ConversationStore(settings) as store:
            yield store
        return
    url = await create_postgres_database("chatstore_import")
    try:
        settings = Settings(database_url=url)
        await migrate.upgrade(settings)
        async with ConversationStore(settings) as store:
            yield store
    finally:
        await drop_postgres_database(url)


async def _rich(store: ConversationStore) -> None:
    """Two users with every feature in use, and a fork listed before its parent."""
    await _everything(store, "alice")
    await _everything(store, "bob ünï")
    odd = await store.create_conversation(
        user="alice", title="مرحبا\u200f 🚆", metadata={"deep": {"list": [1, 2.5, None, True]}}
    )
    await store.append_message(
        user="alice",
        conversation_id=odd.id,
        role="user",
        content='line\r\nbreaks, "quotes" and \\ back\u2028slashes',
        raw={"z": 1, "a": [{"nested": "kept"}], "big": 2**70, "small": 1.5e-7},
    )


@pytest.mark.slow
@pytest.mark.parametrize("source, target", [("sqlite", "postgres"), ("postgres", "sqlite")])
async def test_a_round_trip_across_backends_gives_the_same_bytes(
    source: str, target: str, postgres_url: str, tmp_path: Path
) -> None:
    async with _empty(source, tmp_path) as a:
        await _rich(a)
        exported = await _lines(a)
    async with _empty(target, tmp_path) as b:
        done = await b.import_lines(_file(exported))
        assert done.conversations_imported == 7 and done.forks_linked >= 0
        assert await _lines(b) == exported
        again = await b.import_lines(_file(exported))
        assert again.conversations_imported == 0 and again.conversations_skipped == 7
        assert again.messages_skipped == done.messages_imported
        assert await _lines(b) == exported
        # What was imported works like anything stored: search, context, appends.
        hits = await b.search_messages(user="alice", query="trains")
        assert hits.results
        trip = next(json.loads(t) for t in exported if '"key":"trip"' in t and "alice" in t)
        appended = await b.append_message(
            user="alice", conversation_id=trip["id"], role="user", content="and back?"
        )
        assert appended.seq == trip["last_seq"] + 1
        ctx = await b.get_context(user="alice", conversation_id=trip["id"], max_tokens=10_000)
        assert ctx.summary == "Lyon by train."


def _conversation_lines(lines: list[str]) -> list[int]:
    return [n for n, text in enumerate(lines, 1) if '"type":"conversation"' in text]


async def test_a_bad_line_stops_the_import_keeping_what_came_before(
    store: ConversationStore, user: str, tmp_path: Path, backend: str
) -> None:
    async with _empty("sqlite", tmp_path) as source:
        for n in range(3):
            conversation = await source.create_conversation(user=user, title=f"c{n}")
            await source.append_messages(
                user=user,
                conversation_id=conversation.id,
                messages=[{"role": "user", "content": f"m{k}"} for k in range(IMPORT_CHUNK + 10)],
            )
        lines = await _lines(source)
    starts = _conversation_lines(lines)
    # The second conversation's last message is broken: its first chunk was written already.
    bad = starts[2] - 1
    record = json.loads(lines[bad - 1])
    record["content"] = "nul\x00here"
    broken = [*lines[: bad - 1], line(record), *lines[bad:]]
    seen: list[int] = []
    with pytest.raises(BadImportLine) as caught:
        await store.import_lines(
            _file(broken), progress=lambda d: seen.append(d.conversations_imported)
        )
    assert caught.value.line == bad
    assert str(caught.value).startswith(f"invalid_argument: line {bad}: content: content must")
    assert seen == [1]
    ids = [json.loads(lines[n - 1])["id"] for n in starts]
    first = await store.get_conversation(user=user, conversation_id=ids[0])
    assert first.message_count == IMPORT_CHUNK + 10
    for missing in ids[1:]:
        with pytest.raises(Exception, match="not_found"):
            await store.get_conversation(user=user, conversation_id=missing)
    # Fixed, the same file goes in: the first conversation is skipped, the rest added.
    done = await store.import_lines(_file(lines))
    assert (done.conversations_imported, done.conversations_skipped) == (2, 1)
    page = await store.list_conversations(user=user)
    assert len(page.conversations) == 3


@pytest.mark.parametrize(
    "change, line_of, reason",
    [
        (lambda ls: ["{}", *ls[1:]], 1, "not the header"),
        (lambda ls: ['{"format":"chatstore","version":2}', *ls[1:]], 1, "version 2"),
        (lambda ls: [], 1, "missing"),
        (lambda ls: [ls[0], ls[2], *ls[1:]], 2, "a conversation record was expected"),
        (lambda ls: [*ls[:3], "", *ls[3:]], 4, "empty"),
        (lambda ls: [*ls[:3], '{"type":"message", "cut', *ls[3:]], 4, "not a JSON object"),
        (lambda ls: [*ls[:3], "[1, 2]", *ls[3:]], 4, "not a JSON object"),
        (lambda ls: [*ls[:2], *ls[3:]], 3, "seq: 2 where 1 comes next"),
        (lambda ls: _set(ls, 5, id=json.loads(ls[3])["id"]), 5, "id: an earlier message"),
        (lambda ls: ls[:-1], 5, "has message_count 4 but 3 messages follow"),
        (lambda ls: _set(ls, 3, role="robot"), 3, "role: must be one of"),
        (lambda ls: _set(ls, 3, colour="red"), 3, "colour: is not a known argument"),
        (lambda ls: _set(ls, 3, seq="1"), 3, "seq: Input should be a valid integer"),
        (lambda ls: _set(ls, 3, created_at="yesterday"), 3, "created_at"),
        (lambda ls: _set(ls, 3, conversation_id=str(uuid.uuid4())), 3, "conversation_id"),
        (lambda ls: _set(ls, 4, idempotency_key="k1"), 4, "already used in this conversation"),
        (lambda ls: _set(ls, 5, tool_call_id=None), 5, "a tool message needs tool_call_id"),
        (lambda ls: _set(ls, 2, message_count=9), 2, "message_count (9) and last_seq (4)"),
        (lambda ls: _set(ls, 2, user=""), 2, "user: user must be a non-empty string"),
        (lambda ls: _set(ls, 2, key=" "), 2, "key: key must not be empty"),
        (lambda ls: _set(ls, 2, summary_up_to_seq=None), 2, "summary and summary_up_to_seq"),
        (lambda ls: _set(ls, 2, title="t\udc00"), 2, "unpaired surrogate"),
        (lambda ls: ['{"format":"chatstore","version":true}', *ls[1:]], 1, "version True"),
        (lambda ls: _set(ls, 3, created_at=0), 3, "created_at: must be an RFC 3339"),
        (lambda ls: _set(ls, 2, created_at="0001-01-01T00:00:00Z"), 2, "outside the years"),
        (lambda ls: _set(ls, 3, created_at="9999-12-31T23:59:59-01:00"), 3, "outside the years"),
        (lambda ls: _set(ls, 3, created_at="2026-01-02T03:04:05"), 3, "its UTC offset"),
        (lambda ls: _set(ls, 3, limits=1), 3, "limits: is not a known argument"),
        (lambda ls: _set(ls, 2, forked_from=_self(ls)), 2, "names the conversation itself"),
    ],
)
async def test_each_rule_names_its_line_and_writes_nothing_of_that_conversation(
    store: ConversationStore,
    user: str,
    change: Callable[[list[str]], list[str]],
    line_of: int,
    reason: str,
) -> None:
    cid = str(uuid.uuid4())
    conversation: dict[str, Any] = {
        "type": "conversation",
        "id": cid,
        "user": user,
        "title": "t",
        "metadata": {},
        "key": None,
        "created_at": "2026-01-02T03:04:05.000006Z",
        "updated_at": "2026-01-02T03:04:07.000000Z",
        "message_count": 4,
        "last_seq": 4,
        "summary": "s",
        "summary_up_to_seq": 2,
        "forked_from": None,
    }

    def message(seq: int, **fields: Any) -> str:
        record = {
            "type": "message",
            "id": str(uuid.uuid4()),
            "conversation_id": cid,
            "seq": seq,
            "created_at": f"2026-01-02T03:04:0{seq}.000000Z",
            "role": "user",
            "content": f"m{seq}",
            "idempotency_key": f"k{seq}",
            **fields,
        }
        return line(record)

    lines = [
        '{"format":"chatstore","version":1}',
        line(conversation),
        message(1),
        message(2, role="assistant", tool_calls=[{"id": "c", "name": "f"}], content=""),
        message(3, role="tool", tool_call_id="c", content="ok"),
        message(4),
    ]
    done = await store.import_lines(_file(lines))
    assert done.conversations_imported == 1  # the base case is valid
    await store.purge_user(user=user)
    with pytest.raises(BadImportLine) as caught:
        await store.import_lines(_file(change(lines)))
    assert caught.value.line == line_of, str(caught.value)
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"invalid_argument: line {line_of}: ")
    assert (await store.list_conversations(user=user)).conversations == []


def _self(lines: list[str]) -> dict[str, Any]:
    return {"conversation_id": json.loads(lines[1])["id"], "seq": 1}


def _set(lines: list[str], number: int, **fields: Any) -> list[str]:
    record = json.loads(lines[number - 1])
    record.update(fields)
    changed = list(lines)
    changed[number - 1] = json.dumps(record)
    return changed


@pytest.mark.parametrize(
    "bad", ["", '{"type":"conversation","id":"', '{"n": ' + "9" * 4_400 + "}", "surplus"]
)
async def test_a_bad_line_right_after_a_whole_conversation_keeps_it(
    store: ConversationStore, user: str, tmp_path: Path, bad: str
) -> None:
    async with _empty("sqlite", tmp_path) as source:
        kept = await source.create_conversation(user=user)
        await source.append_message(user=user, conversation_id=kept.id, role="user", content="a")
        lines = await _lines(source)
    if bad == "surplus":  # one message more than its conversation's message_count
        bad = lines[-1].replace('"seq":1', '"seq":2')
    with pytest.raises(BadImportLine) as caught:
        await store.import_lines(_file([*lines, bad]))
    assert caught.value.line == 4
    assert (await store.get_conversation(user=user, conversation_id=kept.id)).message_count == 1


async def test_an_id_twice_in_a_file_is_written_once_and_counted_so(
    store: ConversationStore, user: str, tmp_path: Path
) -> None:
    async with _empty("sqlite", tmp_path) as source:
        twice = await source.create_conversation(user=user)
        await source.append_message(user=user, conversation_id=twice.id, role="user", content="a")
        lines = await _lines(source)
    done = await store.import_lines(_file([*lines, *lines[1:]]))
    assert (done.conversations_imported, done.conversations_skipped) == (1, 1)
    assert (done.messages_imported, done.messages_skipped) == (1, 1)


async def test_an_export_taken_while_appends_land_imports(
    store: ConversationStore, user: str, tmp_path: Path
) -> None:
    busy = await store.create_conversation(user=user)
    await store.append_message(user=user, conversation_id=busy.id, role="user", content="a")
    records = []
    async for record in store.export(user=user):
        records.append(record)
        if record.get("type") == "conversation":  # an append lands as the export reads on
            await store.append_message(
                user=user, conversation_id=busy.id, role="user", content="late"
            )
    assert [r["seq"] for r in records if r.get("type") == "message"] == [1]
    async with _empty("sqlite", tmp_path) as target:
        done = await target.import_lines(_file([line(r) for r in records]))
        assert done.messages_imported == 1


async def test_a_cancelled_import_leaves_nothing_open(
    store: ConversationStore, user: str, tmp_path: Path
) -> None:
    async with _empty("sqlite", tmp_path) as source:
        long = await source.create_conversation(user=user)
        await source.append_messages(
            user=user,
            conversation_id=long.id,
            messages=[{"role": "user", "content": f"m{n}"} for n in range(3 * IMPORT_CHUNK)],
        )
        lines = await _lines(source)
    stalled = threading.Event()
    release = threading.Event()

    def slow() -> Iterator[str]:
        for number, text in enumerate(_file(lines), 1):
            if number == 2 * IMPORT_CHUNK:  # the long conversation's transaction is open
                stalled.set()
                release.wait(30)
            yield text

    task = asyncio.ensure_future(store.import_lines(slow()))
    try:
        assert await asyncio.to_thread(stalled.wait, 30)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The transaction it had open rolled back: the store answers, nothing was written.
        async with asyncio.timeout(10):
            with pytest.raises(Exception, match="not_found"):
                await store.get_conversation(user=user, conversation_id=long.id)
            await store.create_conversation(user=user, title="after")
    finally:
        release.set()


async def test_clashes_with_what_is_stored_are_named(
    store: ConversationStore, user: str, tmp_path: Path
) -> None:
    async with _empty("sqlite", tmp_path) as source:
        keyed = await source.create_conversation(user=user, key="session-1")
        await source.append_message(user=user, conversation_id=keyed.id, role="user", content="a")
        lines = await _lines(source)
    # The same key, held by another conversation of the user: that line, nothing written.
    mine = await store.create_conversation(user=user, key="session-1")
    with pytest.raises(BadImportLine, match=r"line 2: key: user .* has another conversation"):
        await store.import_lines(_file(lines))
    assert [c.id for c in (await store.list_conversations(user=user)).conversations] == [mine.id]
    await store.purge_user(user=user)
    # A message id stored already, in another conversation: its line.
    await store.import_lines(_file(lines))
    record = json.loads(lines[1])
    record.update(id=str(uuid.uuid4()), key=None)
    copy = [lines[0], line(record), lines[2].replace(str(keyed.id), record["id"])]
    with pytest.raises(BadImportLine, match="line 3: id: a message with this id is stored"):
        await store.import_lines(_file(copy))
    with pytest.raises(Exception, match="not_found"):
        await store.get_conversation(user=user, conversation_id=record["id"])


async def test_a_clash_inside_a_group_keeps_the_conversations_before_it(
    store: ConversationStore, user: str, tmp_path: Path
) -> None:
    async with _empty("sqlite", tmp_path) as source:
        made = [await source.create_conversation(user=user, key=f"k{n}") for n in range(3)]
        for conversation in made:
            await source.append_message(
                user=user, conversation_id=conversation.id, role="user", content="hello"
            )
        lines = await _lines(source)
    starts = _conversation_lines(lines)
    middle = json.loads(lines[starts[1] - 1])
    mine = await store.create_conversation(user=user, key=middle["key"])
    # The three are small: held and written together, until the clash sends them one by one.
    with pytest.raises(BadImportLine) as caught:
        await store.import_lines(_file(lines))
    assert caught.value.line == starts[1] and "key:" in str(caught.value)
    first = json.loads(lines[starts[0] - 1])["id"]
    stored = {c.id for c in (await store.list_conversations(user=user)).conversations}
    assert stored == {mine.id, uuid.UUID(first)}


async def test_forks_are_linked_to_a_parent_that_comes_later_or_in_a_later_run(
    store: ConversationStore, user: str, tmp_path: Path
) -> None:
    async with _empty("sqlite", tmp_path) as source:
        parent = await source.create_conversation(user=user, title="parent")
        await source.append_message(user=user, conversation_id=parent.id, role="user", content="a")
        fork = await source.fork_conversation(user=user, conversation_id=parent.id, at_seq=1)
        parent_lines = await _lines(source, conversation_id=parent.id)
        fork_lines = await _lines(source, conversation_id=fork.id)
    # The fork alone: its parent is not there, so forked_from is unset for now.
    done = await store.import_lines(_file(fork_lines))
    assert done.forks_linked == 0
    alone = await store.get_conversation(user=user, conversation_id=fork.id)
    assert alone.forked_from is None
    # Fork first, parent after, in one file: linked at the end (the fork itself is skipped).
    done = await store.import_lines(_file([*fork_lines, *parent_lines[1:]]))
    assert (done.conversations_imported, done.forks_linked) == (1, 1)
    linked = await store.get_conversation(user=user, conversation_id=fork.id)
    assert linked.forked_from is not None and linked.forked_from.conversation_id == parent.id
    assert linked.forked_from.seq == 1
    # And a fork whose parent is there already is linked as it is written.
    await store.delete_conversation(user=user, conversation_id=fork.id)
    done = await store.import_lines(_file(fork_lines))
    assert (done.conversations_imported, done.forks_linked) == (1, 0)
    direct = await store.get_conversation(user=user, conversation_id=fork.id)
    assert direct.forked_from is not None


async def test_a_conversation_spanning_chunks_is_all_or_nothing(
    store: ConversationStore, user: str, tmp_path: Path
) -> None:
    async with _empty("sqlite", tmp_path) as source:
        long = await source.create_conversation(user=user)
        for start in range(0, 3 * IMPORT_CHUNK, IMPORT_CHUNK):
            await source.append_messages(
                user=user,
                conversation_id=long.id,
                messages=[
                    {"role": "user", "content": f"m{n}"} for n in range(start, start + IMPORT_CHUNK)
                ],
            )
        lines = await _lines(source)
    cut = lines[: 2 * IMPORT_CHUNK + 50]  # two chunks written, then the file ends short
    with pytest.raises(BadImportLine, match=f"line {len(cut)}: the conversation of line 2"):
        await store.import_lines(_file(cut))
    with pytest.raises(Exception, match="not_found"):
        await store.get_conversation(user=user, conversation_id=long.id)
    done = await store.import_lines(_file(lines))
    assert done.messages_imported == 3 * IMPORT_CHUNK
    assert await _lines(store, conversation_id=long.id) == lines


@pytest.mark.slow
async def test_the_import_command(
    settings: Settings, store: ConversationStore, tmp_path: Path, user: str
) -> None:
    async with _empty("sqlite", tmp_path) as source:
        await _everything(source, user)
        lines = await _lines(source)
    good = tmp_path / "export.jsonl"
    good.write_text("".join(_file(lines)), encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    starts = _conversation_lines(lines)
    broken = list(lines)
    broken[starts[1]] = broken[starts[1]].replace('"role":"', '"role":"x')
    bad.write_text("".join(_file(broken)), encoding="utf-8")
    env = server_env(settings.resolved_database_url, tmp_path / "data")
    failed = await run_command([*CHATSTORE, "import", str(bad)], env=env, cwd=tmp_path)
    assert failed.returncode == 1
    errors = failed.stderr.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in failed.stderr
    assert f"line {starts[1] + 1}: role: must be one of" in errors[0]
    assert errors[1].startswith("imported 1 conversations, ")
    assert "run the import again" in errors[1]
    code, out = await run_main(["import", str(good)], env)
    assert code == 0
    first = json.loads(lines[1])["message_count"]  # the conversation that went in
    assert out.startswith(
        f"imported 2 conversations, {527 - first} messages; "
        f"skipped 1 conversations already there ({first} messages)"
    )
    code, out = await run_main(["import", str(tmp_path / "nowhere.jsonl")], env)
    assert code == 2


def _build_export(path: Path, conversations: int, messages: int) -> None:
    async def build() -> None:
        async with _empty("sqlite", path.parent) as source:
            for n in range(conversations):
                conversation = await source.create_conversation(user=f"u{n % 7}", title=f"c{n}")
                await source.append_messages(
                    user=f"u{n % 7}",
                    conversation_id=conversation.id,
                    messages=[
                        {"role": "user", "content": f"message {k} of {n}", "token_count": 4}
                        for k in range(messages)
                    ],
                )
            with path.open("w", encoding="utf-8") as out:
                async for record in source.export():
                    out.write(line(record) + "\n")

    asyncio.run(build())


@pytest.mark.slow
async def test_a_reimport_after_ctrl_c_or_kill_9_adds_only_what_is_missing(
    backend: str, tmp_path: Path, postgres_url: str
) -> None:
    source = tmp_path / "big.jsonl"
    await asyncio.to_thread(_build_export, source, 300, 60)
    async with _empty(backend, tmp_path) as target:
        env = server_env(target._settings.resolved_database_url, tmp_path / "data")
        raw = await RawDB.connect(target._settings)
        try:
            counts: list[int] = []
            for stop in (signal.SIGINT, signal.SIGKILL):
                process = await asyncio.create_subprocess_exec(
                    *CHATSTORE,
                    "import",
                    str(source),
                    env=env,
                    cwd=REPO_ROOT,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
                # Stopped once more conversations are in (the next ones being written).
                for _ in range(3000):
                    (count,) = (await raw.fetch("SELECT count(*) FROM conversations"))[0]
                    if count > (counts[-1] if counts else 0):
                        break
                    await asyncio.sleep(0.01)
                process.send_signal(stop)
                _, err = await process.communicate()
                (count,) = (await raw.fetch("SELECT count(*) FROM conversations"))[0]
                assert count < 300, "the import was not stopped halfway"
                counts.append(count)
                if stop == signal.SIGINT:  # not a success: a script must not go on
                    assert process.returncode == 130
                    assert (
                        err.decode()
                        .strip()
                        .endswith(
                            "chatstore import: interrupted; what is in is kept, and a new run adds "
                            "what is missing"
                        )
                    )
                # Whole conversations only: each one's messages match its count.
                partial = await raw.fetch(
                    "SELECT count(*) FROM conversations c WHERE c.message_count <> "
                    "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)"
                )
                assert partial[0][0] == 0
        finally:
            await raw.close()
        done = await run_command([*CHATSTORE, "import", str(source)], env=env, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stderr
        assert f"skipped {counts[-1]:,} conversations already there" in done.stdout
        assert await _lines(target) == source.read_text(encoding="utf-8").splitlines()


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip("kill -9")
