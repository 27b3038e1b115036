"""Fixtures for the attack and bad-input tests.

Store-level and in-process tests use the shared ``settings``/``backend`` fixtures (SQLite and
the throwaway PostgreSQL database of ``tests/conftest.py``). HTTP tests share two server
processes for the whole package: one verifying HS256 tokens, one RS256 with a key pair made
here. Both serve the PostgreSQL database, and both have ``CHATSTORE_USER`` set to a user whose
data no HTTP request may ever reach (HTTP never falls back to it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import HttpServer, http_server, server_env

#: The stdio user configured in every HTTP server's environment (must never be served).
STDIO_FALLBACK_USER = f"fallback-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RsaKeys:
    private_pem: bytes
    public_pem: bytes


def _rsa_keys() -> RsaKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RsaKeys(private_pem, public_pem)


@pytest.fixture(scope="package")
def rsa_keys() -> RsaKeys:
    """The key pair the RS256 server trusts."""
    return _rsa_keys()


@pytest.fixture(scope="package")
def other_rsa_keys() -> RsaKeys:
    """A key pair the server does not trust."""
    return _rsa_keys()


@pytest.fixture(scope="package")
def http_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security-http")


@pytest.fixture(scope="package")
def hs_server(postgres_url: str, http_log_dir: Path) -> Iterator[HttpServer]:
    """``chatstore serve --http`` verifying HS256 tokens (``tests.support.JWT_SECRET``)."""
    env = server_env(postgres_url, http_log_dir, CHATSTORE_USER=STDIO_FALLBACK_USER)
    with http_server(env, http_log_dir) as server:
        yield server


@pytest.fixture(scope="package")
def rs_server(postgres_url: str, http_log_dir: Path, rsa_keys: RsaKeys) -> Iterator[HttpServer]:
    """``chatstore serve --http`` verifying RS256 tokens against ``rsa_keys``' public key."""
    env = server_env(postgres_url, http_log_dir, CHATSTORE_USER=STDIO_FALLBACK_USER)
    del env["CHATSTORE_JWT_SECRET"]
    env["CHATSTORE_JWT_PUBLIC_KEY"] = rsa_keys.public_pem.decode()
    with http_server(env, http_log_dir) as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the error-corpus check last, after every suite that feeds it."""
    last = [item for item in items if item.nodeid.startswith("tests/security/test_error_corpus")]
    if last:
        rest = [item for item in items if item not in last]
        items[:] = rest + last
