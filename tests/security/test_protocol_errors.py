"""Protocol-level failures over both real transports: each answer starts with a contract code,
quotes at most a short prefix of what was sent, and the server logs no traceback for it.

The same raw requests go to a ``chatstore serve`` subprocess over stdio and to the package's
HTTP server: an unknown tool and an unknown method whose names are 1 MB, resource URIs outside
the conversations or with no UUID in them (100 KB), ``prompts/get`` with a missing, an
undeclared or an unknown prompt, params of the wrong shape, and bodies that are not one
JSON-RPC message (a batch, ``params: "…"``, not JSON), which get JSON-RPC's -32600 / -32700.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from store.contract import MAX_ECHOED_CHARS
from tests.leaks import clean
from tests.support import CHATSTORE, REPO_ROOT, HttpServer, mint_token, server_env

pytestmark = pytest.mark.timeout(120)

#: What a client sent, big: none of it may come back beyond a short prefix.
BIG = 1_000_000
LONG = 100_000
#: An answer to any of these is a short error: a code, a sentence, a quoted prefix.
MAX_ANSWER_BYTES = 600
INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR = -32602, -32600, -32700
METHOD_NOT_FOUND, RESOURCE_NOT_FOUND = -32601, -32002


@dataclass(frozen=True)
class Case:
    id: str
    #: The request (a JSON value, or raw text), given a conversation id of the user's.
    body: Callable[[str], Any]
    #: The JSON-RPC error code, or None for a tool error (an ``isError`` result).
    code: int | None
    #: The contract code the message starts with.
    contract: str
    #: What must not come back: the long part of the request.
    sent: str = ""


def _request(method: str, params: Any, request_id: int = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def _arabic(cid: str) -> str:
    """``cid`` with its first digit written as an Arabic-Indic digit."""
    at = next(i for i, ch in enumerate(cid) if ch.isdigit())
    return cid[:at] + chr(0x0660 + int(cid[at])) + cid[at + 1 :]


URI = "chatstore://conversations/"
CASES = [
    Case(
        "unknown-tool-1mb",
        lambda cid: _request("tools/call", {"name": "t" * BIG, "arguments": {}}),
        None,
        "not_found",
        "t" * BIG,
    ),
    Case(
        "unknown-tool-short",
        lambda cid: _request("tools/call", {"name": "delete_everything", "arguments": {}}),
        None,
        "not_found",
    ),
    Case(
        "tool-name-not-a-string",
        lambda cid: _request("tools/call", {"name": 5, "arguments": {}}),
        INVALID_PARAMS,
        "invalid_argument",
    ),
    Case(
        "unknown-method-1mb",
        lambda cid: _request("m" * BIG, {}),
        METHOD_NOT_FOUND,
        "not_found",
        "m" * BIG,
    ),
    Case(
        "resource-other-scheme",
        lambda cid: _request("resources/read", {"uri": "file:///etc/" + "y" * LONG}),
        RESOURCE_NOT_FOUND,
        "not_found",
        "y" * LONG,
    ),
    Case(
        "resource-long-id",
        lambda cid: _request("resources/read", {"uri": URI + "z" * LONG}),
        INVALID_PARAMS,
        "invalid_argument",
        "z" * LONG,
    ),
    Case(
        "resource-id-and-more",
        lambda cid: _request("resources/read", {"uri": f"{URI}{cid}/../{cid}"}),
        INVALID_PARAMS,
        "invalid_argument",
    ),
    Case(
        "resource-non-ascii-digit",
        lambda cid: _request("resources/read", {"uri": URI + _arabic(cid)}),
        INVALID_PARAMS,
        "invalid_argument",
    ),
    Case(
        "resource-unknown-id",
        lambda cid: _request("resources/read", {"uri": f"{URI}{uuid.uuid4()}"}),
        RESOURCE_NOT_FOUND,
        "not_found",
    ),
    Case(
        "resource-uri-not-a-string",
        lambda cid: _request("resources/read", {"uri": ["u"] * 1000}),
        INVALID_PARAMS,
        "invalid_argument",
    ),
    Case(
        "prompt-missing-argument",
        lambda cid: _request("prompts/get", {"name": "resume_conversation", "arguments": {}}),
        INVALID_PARAMS,
        "invalid_argument",
    ),
    Case(
        "prompt-no-arguments",
        lambda cid: _request("prompts/get", {"name": "resume_conversation"}),
        INVALID_PARAMS,
        "invalid_argument",
    ),
    Case(
        "prompt-undeclared-arguments",
        lambda cid: _request(
            "prompts/get",
            {
                "name": "resume_conversation",
                "arguments": {
                    "conversation_id": cid,
                    **{f"{n}" + "a" * LONG: "1" for n in range(9)},
                },
            },
        ),
        INVALID_PARAMS,
        "invalid_argument",
        "a" * LONG,
    ),
    Case(
        "prompt-unknown",
        lambda cid: _request("prompts/get", {"name": "p" * LONG, "arguments": {}}),
        INVALID_PARAMS,
        "not_found",
        "p" * LONG,
    ),
    Case(
        "prompt-argument-not-a-string",
        lambda cid: _request(
            "prompts/get", {"name": "resume_conversation", "arguments": {"conversation_id": 5}}
        ),
        INVALID_PARAMS,
        "invalid_argument",
    ),
    Case(
        "prompt-non-ascii-digit",
        lambda cid: _request(
            "prompts/get",
            {"name": "resume_conversation", "arguments": {"conversation_id": _arabic(cid)}},
        ),
        INVALID_PARAMS,
        "invalid_argument",
    ),
    Case(
        "batch",
        lambda cid: [_request("tools/list", {}, 1), _request("tools/list", {}, 2)],
        INVALID_REQUEST,
        "invalid_argument",
    ),
    Case(
        "params-a-string",
        lambda cid: _request("tools/list", "q" * LONG),
        INVALID_REQUEST,
        "invalid_argument",
        "q" * LONG,
    ),
    Case(
        "not-json",
        lambda cid: "{not json " + "w" * LONG,
        PARSE_ERROR,
        "invalid_argument",
        "w" * LONG,
    ),
    Case(
        "not-an-object",
        lambda cid: '"just a string"',
        INVALID_REQUEST,
        "invalid_argument",
    ),
]
#: Bodies that are not one message: answered with ``id: null`` (and HTTP 400).
ENVELOPE = {"batch", "params-a-string", "not-json", "not-an-object"}


def check_answer(case: Case, raw: str) -> None:
    size = len(raw.encode())
    assert size <= MAX_ANSWER_BYTES, f"{case.id}: {size} bytes: {raw[:300]}"
    if case.sent:
        assert case.sent[: MAX_ECHOED_CHARS + 1] not in raw, f"{case.id} echoes what was sent"
    answer = json.loads(raw)
    if case.code is None:
        result = answer["result"]
        assert result["isError"] is True, raw
        (text,) = [c["text"] for c in result["content"]]
        assert text.startswith(f"{case.contract}: "), text
        clean(text)
        return
    assert answer["id"] == (None if case.id in ENVELOPE else 7), raw
    error = answer["error"]
    assert error["code"] == case.code, f"{case.id}: {raw}"
    assert error["message"].startswith(f"{case.contract}: "), f"{case.id}: {raw}"
    assert "pydantic" not in raw and "errors.pydantic.dev" not in raw
    clean(error["message"])


def check_log(text: str) -> None:
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]
    longest = max((len(line) for line in text.splitlines()), default=0)
    assert longest < 1000, f"a log line of {longest} characters"


# -- stdio --------------------------------------------------------------------------------


class StdioServer:
    """``chatstore serve`` as a child process, spoken to in raw lines."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def send(self, body: Any) -> None:
        assert self.process.stdin is not None
        line = body if isinstance(body, str) else json.dumps(body)
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, seconds: float = 10) -> str:
        """The next line the server writes; fails (rather than waits) after ``seconds``."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        assert ready, f"no answer within {seconds} s"
        return self.process.stdout.readline().decode()


@pytest.fixture
def stdio_server(tmp_path: Path) -> Iterator[tuple[StdioServer, Path]]:
    env = server_env(None, tmp_path / "data", CHATSTORE_USER=f"proto-{uuid.uuid4().hex[:8]}")
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*CHATSTORE, "serve"],
            env=env,
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        yield StdioServer(process), log_path
    finally:
        process.kill()
        process.wait(10)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def test_protocol_errors_over_stdio(stdio_server: tuple[StdioServer, Path]) -> None:
    server, log_path = stdio_server
    server.send(
        _request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "proto", "version": "1"},
            },
            0,
        )
    )
    assert json.loads(server.receive(30))["result"]["serverInfo"]["name"] == "chatstore"
    server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    server.send(_request("tools/call", {"name": "create_conversation", "arguments": {}}, 1))
    cid = json.loads(server.receive())["result"]["structuredContent"]["id"]
    started = log_path.stat().st_size

    for case in CASES:
        server.send(case.body(cid))
        check_answer(case, server.receive())

    # A blank line is not a message and gets no answer; the session goes on.
    server.send("")
    server.send(_request("tools/call", {"name": "list_conversations", "arguments": {}}, 8))
    listed = json.loads(server.receive())
    assert listed["id"] == 8 and listed["result"]["isError"] is False
    time.sleep(0.2)  # let the last log lines reach the file
    check_log(log_path.read_text(errors="replace")[started:])


# -- streamable HTTP ----------------------------------------------------------------------


def test_protocol_errors_over_http(hs_server: HttpServer) -> None:
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {mint_token(f'proto-{uuid.uuid4().hex[:8]}')}",
        "MCP-Protocol-Version": "2025-11-25",
    }
    with httpx2.Client(headers=headers, timeout=30) as http:

        def post(body: Any) -> httpx2.Response:
            content = body if isinstance(body, str) else json.dumps(body)
            return http.post(hs_server.url, content=content)

        created = post(_request("tools/call", {"name": "create_conversation", "arguments": {}}))
        cid = created.json()["result"]["structuredContent"]["id"]
        started = len(hs_server.log())
        for case in CASES:
            response = post(case.body(cid))
            assert response.status_code == (400 if case.id in ENVELOPE else 200), response.text
            assert response.headers["content-type"].startswith("application/json")
            check_answer(case, response.text)
        time.sleep(0.2)
        check_log(hs_server.log()[started:])


#: The stateless protocol revision: no handshake, the method and name also in headers.
STATELESS_VERSION = "2026-07-28"
#: The cases whose names fit in a header (the 1 MB ones are header-size limits' business).
STATELESS_CASES = [
    case
    for case in CASES
    if case.id
    in {
        "unknown-tool-short",
        "resource-id-and-more",
        "resource-unknown-id",
        "prompt-missing-argument",
        "prompt-no-arguments",
        "prompt-argument-not-a-string",
        "batch",
        "params-a-string",
        "not-json",
        "not-an-object",
    }
]


def _stateless(body: Any) -> tuple[str, dict[str, str]]:
    """``body`` as a request of the stateless revision: ``_meta`` in its params, routing
    headers naming its method and name."""
    if not isinstance(body, dict) or not isinstance(body.get("params"), dict):
        return (body if isinstance(body, str) else json.dumps(body)), {}
    meta = {
        "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    params = {**body["params"], "_meta": meta}
    headers = {"Mcp-Method": body["method"]}
    name = params.get("uri", params.get("name"))
    if isinstance(name, str):
        headers["Mcp-Name"] = name
    return json.dumps({**body, "params": params}), headers


def test_protocol_errors_over_http_at_the_stateless_revision(hs_server: HttpServer) -> None:
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {mint_token(f'proto-{uuid.uuid4().hex[:8]}')}",
        "MCP-Protocol-Version": STATELESS_VERSION,
    }
    with httpx2.Client(headers=headers, timeout=30) as http:

        def post(body: Any) -> httpx2.Response:
            content, routing = _stateless(body)
            return http.post(hs_server.url, content=content, headers=routing)

        created = post(_request("tools/call", {"name": "create_conversation", "arguments": {}}))
        cid = created.json()["result"]["structuredContent"]["id"]
        started = len(hs_server.log())
        for case in STATELESS_CASES:
            response = post(case.body(cid))
            assert response.status_code in (200, 400, 404), response.text
            check_answer(case, response.text)
            if case.code is None:  # the SDK's envelope is kept around the coded text
                assert response.json()["result"]["resultType"] == "complete"
        # A routing header that does not match the body: the SDK's refusal, with a code.
        content, _ = _stateless(_request("tools/list", {}))
        mismatch = http.post(hs_server.url, content=content, headers={"Mcp-Method": "tools/call"})
        assert mismatch.status_code == 400
        assert mismatch.json()["error"]["message"].startswith("invalid_argument: ")
        time.sleep(0.2)
        check_log(hs_server.log()[started:])
