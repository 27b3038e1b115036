"""The ``chatstore`` command: serve (stdio or streamable HTTP), migrate, purge-user, and for a
person at a terminal conversations, show and info.

Logs go to stderr; over stdio, stdout carries only the protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, NoReturn
from urllib.parse import urlsplit

import anyio
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ValidationError

from mcp_server._sdk import EnvelopeErrors
from mcp_server._stdio import run_stdio
from mcp_server._uvicorn import HttpLimits, bounded_protocol
from mcp_server.auth import ConfigurationError, JWTVerifier, stdio_user
from mcp_server.operations import AccessLog, JsonFormatter, RequestBody, add_probes
from mcp_server.server import chatstore_version, create_server
from mcp_server.terminal import run_conversations, run_export, run_import, run_info, run_show
from store import ConversationStore, Settings, StoreError
from store.tokens import tokenizer

log = logging.getLogger("chatstore")


def _configure_logging(level: str, form: Literal["text", "json"] = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _describe_database(settings: Settings) -> str:
    if settings.is_embedded_default:
        return f"embedded SQLite at {settings.sqlite_path}"
    return f"{settings.dialect} database from CHATSTORE_DATABASE_URL"


def _ready_to_serve(settings: Settings) -> None:
    """Load the tokenizer (about a second: before the first append, not in it), then exempt
    what start-up built (modules, schemas, the server, the encoding) from the cyclic GC.

    Every full collection walks all tracked objects, ~100,000 of them once the SDK, pydantic
    and the store are loaded; under load that stalled the event loop, and every request in
    flight, for 50-90 ms at a time (W7's p99 here). Frozen, they are skipped: the full
    collections during a load run then take 1-2 ms. Garbage made later is collected as usual.
    """
    tokenizer(settings.tokenizer)
    gc.collect()
    gc.freeze()


async def serve_stdio(settings: Settings) -> None:
    user = stdio_user(settings)
    async with ConversationStore(settings) as store:
        log.info("serving user %r over stdio (%s)", user, _describe_database(settings))
        server = create_server(settings, stdio_user=user, store=store)
        _ready_to_serve(settings)
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for received in signals:
                        log.info("received %s: shutting down", signal.Signals(received).name)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            await run_stdio(server)
            tg.cancel_scope.cancel()
    log.info("stopped")


class _GracefulServer(uvicorn.Server):
    """uvicorn, minus re-raising the signal after its graceful shutdown.

    uvicorn re-delivers SIGINT/SIGTERM once it has stopped serving, which would kill the
    process before the store's connections are closed; here the signal only starts the
    shutdown and the command then exits 0.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def _transport_security(host: str, public_url: str | None) -> TransportSecuritySettings | None:
    """DNS-rebinding protection for a loopback bind, admitting the public host if one is given.

    The SDK turns the protection on for 127.0.0.1/localhost binds with loopback hosts only;
    a reverse proxy on the same machine forwarding ``--public-url``'s host would be refused.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    if public_url:
        parts = urlsplit(public_url)
        if parts.hostname:
            hosts += [parts.netloc, f"{parts.hostname}:*"]
            origins += [f"{parts.scheme}://{parts.netloc}"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


async def serve_http(settings: Settings, host: str, port: int, public_url: str | None) -> None:
    JWTVerifier.for_serving(settings)  # refuse to start without a usable key
    url = public_url or f"http://{host}:{port}/mcp"
    async with ConversationStore(settings) as store:
        server = create_server(settings, http=True, public_url=url, store=store)
        # Stateless with JSON responses: any replica can answer any request, so several
        # processes behind a load balancer can share one database.
        add_probes(server, store)
        app = server.streamable_http_app(
            stateless_http=True,
            json_response=True,
            host=host,
            streamable_http_path="/mcp",
            transport_security=_transport_security(host, public_url),
        )
        _ready_to_serve(settings)
        retention = None
        if settings.retention_days is not None:
            retention = asyncio.create_task(
                prune_periodically(store, settings.retention_days, settings.retention_interval)
            )
        config = uvicorn.Config(
            AccessLog(RequestBody(EnvelopeErrors(app), settings.http_body_timeout)),
            host=host,
            port=port,
            http=bounded_protocol(HttpLimits.from_settings(settings)),
            log_level=settings.log_level.lower(),
            access_log=False,
            lifespan="on",
        )
        log.info(
            "serving streamable HTTP at http://%s:%d/mcp (%s)",
            host,
            port,
            _describe_database(settings),
        )
        try:
            await _GracefulServer(config).serve()
        finally:
            if retention is not None:
                retention.cancel()
    log.info("stopped")


async def run_migrate(settings: Settings) -> int:
    from store import migrate

    applied = await migrate.upgrade(settings)
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        print("the database is already at head")
    return 0


async def run_prune(settings: Settings, idle_days: int, user: str | None, dry_run: bool) -> int:
    def progress(conversations: int, messages: int) -> None:
        print(f"  {conversations:,} conversations, {messages:,} messages so far", file=sys.stderr)

    async with ConversationStore(settings) as store:
        done = await store.prune(
            idle_days=idle_days,
            user=user,
            dry_run=dry_run,
            progress=progress if sys.stderr.isatty() else None,
        )
    verb = "would delete" if dry_run else "deleted"
    print(
        f"{verb} {done.conversations_deleted:,} conversations, {done.messages_deleted:,} messages"
    )
    return 0


async def prune_periodically(store: ConversationStore, days: int, interval: float) -> None:
    """``CHATSTORE_RETENTION_DAYS`` under ``serve --http``: a prune now, then every
    ``interval`` seconds. Replicas may all run it: their batches skip each other's rows."""
    while True:
        try:
            done = await store.prune(idle_days=days)
            if done.conversations_deleted:
                log.info(
                    "retention: deleted %d conversations (%d messages) idle for over %d days",
                    done.conversations_deleted,
                    done.messages_deleted,
                    days,
                )
        except StoreError as exc:  # the database is away: try again next time
            log.warning("retention: %s", exc)
        await asyncio.sleep(interval)


async def run_purge(settings: Settings, user: str) -> int:
    async with ConversationStore(settings) as store:
        result = await store.purge_user(user=user)
    print(json.dumps(result.model_dump(mode="json")))
    return 0


#: The environment every command reads, for its --help.
_DATABASE_ENV = (
    "CHATSTORE_DATABASE_URL (postgres://… or sqlite://…; unset: the embedded SQLite file in "
    "CHATSTORE_DATA_DIR), CHATSTORE_DB_TIMEOUT, CHATSTORE_DB_CONNECT_TIMEOUT, CHATSTORE_LOG_LEVEL, "
    "CHATSTORE_LOG_FORMAT"
)
_SERVE_ENV = (
    "stdio: CHATSTORE_USER (the user served). HTTP: CHATSTORE_JWT_SECRET or "
    "CHATSTORE_JWT_PUBLIC_KEY, CHATSTORE_JWT_ISSUER, CHATSTORE_JWT_AUDIENCE, "
    "CHATSTORE_JWT_LEEWAY, and request bounds CHATSTORE_HTTP_*. Limits and quotas: "
    "CHATSTORE_MAX_* (see the README's Configuration)"
)


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each option's default, except where there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatstore",
        description="Durable, per-user conversation history for AI agents, as an MCP server.",
        epilog=f"Environment: {_DATABASE_ENV}.",
    )
    parser.add_argument("--version", action="version", version=f"chatstore {chatstore_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, environment: str = "") -> argparse.ArgumentParser:
        """A subcommand whose --help shows its defaults and the environment it reads."""
        return sub.add_parser(
            name,
            help=summary,
            formatter_class=_Defaults,
            epilog=f"Environment: {_DATABASE_ENV}{environment}.",
        )

    serve = command("serve", "run the MCP server (stdio unless --http)", f"; {_SERVE_ENV}")
    serve.add_argument("--http", action="store_true", help="streamable HTTP at /mcp, JWT auth")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address")
    serve.add_argument("--port", type=int, default=8000, help="HTTP port")
    serve.add_argument(
        "--public-url",
        help="the /mcp URL as clients reach it (default http://HOST:PORT/mcp)",
    )
    command("migrate", "bring the configured database to the latest schema")
    prune = command(
        "prune",
        "delete conversations idle for more than N days (their last message, or creation)",
    )
    prune.add_argument("--idle-days", type=_days, required=True, metavar="N", help="0 or more")
    prune.add_argument("--user", help="only this user's conversations (default: everyone's)")
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    purge = command("purge-user", "delete every conversation and message of a user")
    purge.add_argument("user", help="the user's id (a JWT sub, or a stdio CHATSTORE_USER)")
    scoped = "; CHATSTORE_USER (the user, without --user)"
    whose = "whose (default: CHATSTORE_USER, else the OS login)"
    listing = command("conversations", "a user's most recently updated conversations", scoped)
    listing.add_argument("--user", help=whose)
    listing.add_argument("--limit", type=_positive, default=20, help="how many at most")
    listing.add_argument("--json", action="store_true", help="JSON for scripts")
    show = command("show", "one conversation as a transcript", scoped)
    show.add_argument("conversation_id", metavar="ID")
    show.add_argument("--user", help=whose)
    show.add_argument(
        "--json", action="store_true", help="the conversation and its messages as JSON"
    )
    export = command("export", "stream history out as JSONL (for import) or Markdown")
    export.add_argument("--user", help="only this user's conversations (default: everyone's)")
    export.add_argument("--conversation", metavar="ID", help="only this conversation")
    export.add_argument("--format", choices=("jsonl", "markdown"), default="jsonl")
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    load = command(
        "import",
        "load a JSONL export back: ids kept, what exists skipped, each conversation whole",
    )
    load.add_argument("file", metavar="FILE", help="an export (chatstore export); - for stdin")
    info = command("info", "the database, its schema version and what it holds")
    info.add_argument("--json", action="store_true", help="JSON for scripts")
    return parser


def _days(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _settings_problems(exc: ValidationError) -> str:
    """What is wrong with the environment, one clause per variable, never echoing a value
    (a database URL holds a password)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        name = "CHATSTORE_" + "_".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if error["loc"] else message)
    return "; ".join(problems)


def _import(settings: Settings, path: str) -> int:
    if path == "-":
        # After a failure the reader thread may still wait for a line from stdin that never
        # comes (a pipe left open): exit without waiting for it.
        try:
            code = asyncio.run(run_import(settings, sys.stdin.buffer, None))
        except StoreError as exc:
            log.error("%s", exc)
            code = 1
        _exit_now(code)
    try:
        source = open(path, "rb")
    except OSError as exc:
        print(f"chatstore: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    with source:
        return asyncio.run(run_import(settings, source, os.fstat(source.fileno()).st_size))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (Linux, macOS): measured ~25 % more calls a second under
    the HTTP load benchmark (W7) and a lower p99; the standard loop elsewhere."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return None
    return uvloop.new_event_loop


def _exit_now(code: int) -> NoReturn:
    # Everything is closed by now, but a worker thread may still be blocked reading stdin
    # (a line that will never come); waiting for it at interpreter exit would hang forever.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"chatstore: invalid configuration: {_settings_problems(exc)}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "serve":
            if args.http:
                with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                    runner.run(serve_http(settings, args.host, args.port, args.public_url))
            else:
                use_uvloop = _loop_factory() is not None
                anyio.run(serve_stdio, settings, backend_options={"use_uvloop": use_uvloop})
                _exit_now(0)
            return 0
        if args.command == "migrate":
            return asyncio.run(run_migrate(settings))
        if args.command == "prune":
            return asyncio.run(run_prune(settings, args.idle_days, args.user, args.dry_run))
        if args.command == "purge-user":
            return asyncio.run(run_purge(settings, args.user))
        if args.command == "export":
            if args.output is None:
                return asyncio.run(
                    run_export(settings, args.user, args.conversation, args.format, sys.stdout)
                )
            with open(args.output, "w", encoding="utf-8") as out:
                return asyncio.run(
                    run_export(settings, args.user, args.conversation, args.format, out)
                )
        if args.command == "import":
            return _import(settings, args.file)
        if args.command == "info":
            return asyncio.run(run_info(settings, args.json))
        user = args.user if args.user is not None else stdio_user(settings)
        if args.command == "conversations":
            return asyncio.run(run_conversations(settings, user, args.limit, args.json))
        return asyncio.run(run_show(settings, user, args.conversation_id, args.json))
    except ConfigurationError as exc:
        log.error("%s", exc)
        return 2
    except StoreError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        if args.command in ("import", "export"):
            # Not a success: `chatstore export -o f && …` must not take f for a whole export.
            again = "what is in is kept, and a new run adds what is missing"
            if args.command == "export":
                again = "the output is incomplete; run the export again"
            print(f"chatstore {args.command}: interrupted; {again}", file=sys.stderr)
            return 130
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
