"""Bearer tokens over streamable HTTP: every bad token is a bare 401.

Against an HS256 server and an RS256 server (key pair generated here): no token, malformed
tokens, ``alg: none``, HS/RS algorithm confusion (an HS256 token whose HMAC key is the
server's RSA public key PEM; an HS256 token sent to the RS256 server; an RS256 token sent to
the HS256 server), bad signatures, expired and not-yet-valid tokens, wrong or missing
issuer/audience, missing or unusable ``sub``. Each must get HTTP 401 with ``WWW-Authenticate``
and a body that carries no data: exactly the generic ``invalid_token`` error. A valid token for
the same request gets the user's data (so the probe can see data when there is some to see).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import jwt
import pytest

from tests.leaks import clean
from tests.security.conftest import STDIO_FALLBACK_USER, RsaKeys
from tests.support import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, HttpServer, mint_token

CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "list_conversations", "arguments": {}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
UNAUTHORIZED_BODY = {"error": "invalid_token", "error_description": "Authentication required"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_jwt(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWT assembled by hand: PyJWT itself refuses to make the forged ones."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def claims(sub: str | None = "mallory", **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {
        "iat": now,
        "exp": now + 600,
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
    }
    if sub is not None:
        out["sub"] = sub
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


@dataclass(frozen=True)
class Keys:
    rsa: RsaKeys
    other_rsa: RsaKeys


TokenMaker = Callable[[Keys], str | None]


def _rs256(private_pem: bytes, payload: dict[str, Any], algorithm: str = "RS256") -> str:
    return jwt.encode(payload, private_pem, algorithm=algorithm)


HS = JWT_SECRET.encode()

#: (id, server, Authorization header value or None for no header)
CASES: list[tuple[str, str, Callable[[Keys], str | None]]] = [
    ("no-header", "hs", lambda k: None),
    ("empty-bearer", "hs", lambda k: "Bearer"),
    ("basic-scheme", "hs", lambda k: "Basic " + _b64(b"alice:secret")),
    ("token-without-scheme", "hs", lambda k: mint_token("mallory")),
    ("malformed-word", "hs", lambda k: "Bearer not-a-jwt"),
    ("malformed-three-parts", "hs", lambda k: "Bearer a.b.c"),
    ("malformed-json", "hs", lambda k: f"Bearer {_b64(b'{')}.{_b64(b'{}')}.{_b64(b'x')}"),
    (
        "alg-none-unsigned",
        "hs",
        lambda k: "Bearer " + raw_jwt({"alg": "none", "typ": "JWT"}, claims(), lambda d: b""),
    ),
    (
        "alg-none-uppercase",
        "hs",
        lambda k: "Bearer " + raw_jwt({"alg": "NONE", "typ": "JWT"}, claims(), lambda d: b""),
    ),
    (
        "alg-none-with-hmac",
        "hs",
        lambda k: "Bearer " + raw_jwt({"alg": "none"}, claims(), hs256(HS)),
    ),
    ("wrong-secret", "hs", lambda k: "Bearer " + mint_token("mallory", secret="x" * 40)),
    (
        "tampered-sub",
        "hs",
        # Signed for mallory, then the payload swapped for alice's while keeping the signature.
        lambda k: (
            "Bearer "
            + ".".join(
                [
                    mint_token("mallory").split(".")[0],
                    _b64(json.dumps(claims("alice")).encode()),
                    mint_token("mallory").split(".")[2],
                ]
            )
        ),
    ),
    ("expired", "hs", lambda k: "Bearer " + mint_token("mallory", expires_in=-60)),
    (
        "not-yet-valid",
        "hs",
        lambda k: "Bearer " + mint_token("mallory", extra={"nbf": int(time.time()) + 3600}),
    ),
    (
        "issued-an-hour-ahead",
        "hs",
        lambda k: "Bearer " + mint_token("mallory", extra={"iat": int(time.time()) + 3600}),
    ),
    ("wrong-issuer", "hs", lambda k: "Bearer " + mint_token("mallory", issuer="https://evil")),
    ("missing-issuer", "hs", lambda k: "Bearer " + mint_token("mallory", issuer=None)),
    ("wrong-audience", "hs", lambda k: "Bearer " + mint_token("mallory", audience="other")),
    ("missing-audience", "hs", lambda k: "Bearer " + mint_token("mallory", audience=None)),
    ("missing-sub", "hs", lambda k: "Bearer " + mint_token(None)),
    ("empty-sub", "hs", lambda k: "Bearer " + mint_token("")),
    ("numeric-sub", "hs", lambda k: "Bearer " + raw_jwt({"alg": "HS256"}, claims(42), hs256(HS))),  # type: ignore[arg-type]
    ("nul-in-sub", "hs", lambda k: "Bearer " + mint_token("alice\x00admin")),
    ("oversize-sub", "hs", lambda k: "Bearer " + mint_token("a" * 256)),
    (
        "missing-exp",
        "hs",
        lambda k: "Bearer " + raw_jwt({"alg": "HS256"}, claims(exp=None), hs256(HS)),
    ),
    (
        "hs512-with-the-right-secret",
        "hs",
        lambda k: (
            "Bearer "
            + raw_jwt(
                {"alg": "HS512"}, claims(), lambda d: hmac.new(HS, d, hashlib.sha512).digest()
            )
        ),
    ),
    ("rs256-to-hs-server", "hs", lambda k: "Bearer " + _rs256(k.rsa.private_pem, claims())),
    (
        "hs256-keyed-with-rsa-public-pem",
        "rs",
        lambda k: "Bearer " + raw_jwt({"alg": "HS256"}, claims(), hs256(k.rsa.public_pem)),
    ),
    (
        "hs256-keyed-with-stripped-public-pem",
        "rs",
        lambda k: "Bearer " + raw_jwt({"alg": "HS256"}, claims(), hs256(k.rsa.public_pem.strip())),
    ),
    ("hs256-to-rs-server", "rs", lambda k: "Bearer " + mint_token("mallory")),
    (
        "alg-none-to-rs-server",
        "rs",
        lambda k: "Bearer " + raw_jwt({"alg": "none"}, claims(), lambda d: b""),
    ),
    (
        "rs256-signed-by-another-key",
        "rs",
        lambda k: "Bearer " + _rs256(k.other_rsa.private_pem, claims()),
    ),
    (
        "ps256-with-the-right-key",
        "rs",
        lambda k: "Bearer " + _rs256(k.rsa.private_pem, claims(), algorithm="PS256"),
    ),
    (
        "rs256-expired",
        "rs",
        lambda k: "Bearer " + _rs256(k.rsa.private_pem, claims(exp=int(time.time()) - 60)),
    ),
    (
        "rs256-wrong-audience",
        "rs",
        lambda k: "Bearer " + _rs256(k.rsa.private_pem, claims(aud="other")),
    ),
]


def _post(server: HttpServer, authorization: str | None) -> httpx2.Response:
    headers = dict(HEADERS)
    if authorization is not None:
        headers["Authorization"] = authorization
    return httpx2.post(server.url, json=CALL, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def victim_data(hs_server: HttpServer) -> dict[str, list[str]]:
    """Rows for the users the forged tokens name, so a leak would have data to show:
    each user's conversation title and id."""
    secrets: dict[str, list[str]] = {}
    for user in ("mallory", "alice", STDIO_FALLBACK_USER):
        title = f"secret of {user} {uuid.uuid4().hex[:6]}"
        body = {
            **CALL,
            "params": {"name": "create_conversation", "arguments": {"title": title}},
        }
        response = httpx2.post(
            hs_server.url,
            json=body,
            headers={**HEADERS, "Authorization": f"Bearer {mint_token(user)}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        secrets[user] = [title, json.loads(response.text)["result"]["structuredContent"]["id"]]
    return secrets


@pytest.mark.parametrize(
    ("server_kind", "make"), [(s, m) for _, s, m in CASES], ids=[c[0] for c in CASES]
)
def test_bad_token_is_a_bare_401(
    server_kind: str,
    make: Callable[[Keys], str | None],
    hs_server: HttpServer,
    rs_server: HttpServer,
    rsa_keys: RsaKeys,
    other_rsa_keys: RsaKeys,
    victim_data: dict[str, list[str]],
) -> None:
    server = hs_server if server_kind == "hs" else rs_server
    secrets = [s for values in victim_data.values() for s in values]
    response = _post(server, make(Keys(rsa_keys, other_rsa_keys)))
    assert response.status_code == 401, response.text
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer "), response.headers
    assert 'error="invalid_token"' in challenge
    assert json.loads(response.text) == UNAUTHORIZED_BODY
    clean(response.text, foreign=secrets)
    # The one address a challenge carries is this server's own metadata URL (RFC 9728), which
    # the client is meant to fetch; everything else in it is checked.
    metadata_url = server.url.removesuffix("/mcp") + "/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{metadata_url}"' in challenge
    clean(challenge.replace(metadata_url, "<this server's metadata URL>"), foreign=secrets)


@pytest.mark.parametrize("server_kind", ["hs", "rs"])
def test_valid_token_sees_only_its_own_data(
    server_kind: str,
    hs_server: HttpServer,
    rs_server: HttpServer,
    rsa_keys: RsaKeys,
    victim_data: dict[str, list[str]],
) -> None:
    """The control: the same request with a valid token is answered with the user's data."""
    server = hs_server if server_kind == "hs" else rs_server
    token = (
        mint_token("mallory")
        if server_kind == "hs"
        else _rs256(rsa_keys.private_pem, claims("mallory"))
    )
    response = _post(server, f"Bearer {token}")
    assert response.status_code == 200, response.text
    listed = json.loads(response.text)["result"]["structuredContent"]["conversations"]
    assert victim_data["mallory"][1] in {c["id"] for c in listed}
    for user, secrets in victim_data.items():
        if user != "mallory":
            assert not any(s in response.text for s in secrets), f"{user}'s data leaked"


#: Tokens from an issuer whose clock is a few seconds off this server's: within the default
#: leeway (``CHATSTORE_JWT_LEEWAY``, 30 s), they are valid.
SKEWED = {
    "issued 1 s ahead": {"iat": 1},
    "issued 5 s ahead": {"iat": 5},
    "issued 20 s ahead": {"iat": 20},
    "valid from 5 s ahead": {"nbf": 5, "iat": 5},
    "expired 5 s ago": {"exp": -5},
}


@pytest.mark.parametrize("case", list(SKEWED))
def test_a_few_seconds_of_clock_skew_are_allowed(case: str, hs_server: HttpServer) -> None:
    now = int(time.time())
    skewed = {claim: now + offset for claim, offset in SKEWED[case].items()}
    response = _post(hs_server, f"Bearer {mint_token('mallory', extra=skewed)}")
    assert response.status_code == 200, response.text
