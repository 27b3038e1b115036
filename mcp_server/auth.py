"""Who the user is: the stdio user from the environment, or a verified JWT's ``sub`` over HTTP.

Nothing a model sends can change the user: no tool, resource or prompt takes one.
"""

from __future__ import annotations

import getpass
import logging
import os
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from mcp.server.auth.provider import AccessToken, TokenVerifier

from store.contract import MAX_USER_CHARS
from store.schemas import valid_user
from store.settings import Settings

log = logging.getLogger("chatstore.auth")

#: How many verified tokens a server remembers (see ``JWTVerifier.verify_token``).
VERIFIED_CACHE_SIZE = 1024


class ConfigurationError(Exception):
    """The server cannot start with this configuration; the message says what to set."""


def stdio_user(settings: Settings) -> str:
    """``CHATSTORE_USER``, else the OS login name."""
    user = settings.user
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError) as exc:
            raise ConfigurationError(
                "cannot tell the OS login name; set CHATSTORE_USER to the user to serve"
            ) from exc
    if not valid_user(user):
        raise ConfigurationError(
            f"CHATSTORE_USER must be 1-{MAX_USER_CHARS} characters of valid text"
        )
    return user


def _read_key(value: str) -> bytes:
    # A PEM block, or the path of a file holding one (multi-line environment values are
    # awkward in many deployment tools).
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.encode()
    path = Path(os.path.expanduser(text))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            "CHATSTORE_JWT_PUBLIC_KEY must be a PEM public key or the path of a PEM file"
        ) from exc


class JWTVerifier(TokenVerifier):
    """Verifies bearer JWTs for the SDK's auth middleware (PyJWT does the cryptography).

    HS256 with a shared secret, or RS256/ES256 with a public key; the algorithm list is
    fixed by the key type, so ``none`` and HS/RS confusion are refused. ``exp`` and ``sub``
    are required; ``nbf`` and ``iat`` are checked when present; ``iss``/``aud`` when
    configured; ``exp``, ``nbf`` and ``iat`` with ``leeway`` seconds of clock skew.
    """

    def __init__(
        self,
        *,
        key: Any,
        algorithms: list[str],
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        self._key = key
        self._algorithms = algorithms
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        # token -> (its AccessToken, its exp): see verify_token.
        self._verified: dict[str, tuple[AccessToken, float]] = {}

    @classmethod
    def for_serving(cls, settings: Settings) -> JWTVerifier:
        """``from_settings``, for ``serve --http`` at start-up: a warning when tokens are bound
        to neither an issuer nor an audience, since then any token the key verifies is
        accepted, whatever service it was minted for."""
        verifier = cls.from_settings(settings)
        if settings.jwt_issuer is None and settings.jwt_audience is None:
            log.warning(
                "neither CHATSTORE_JWT_AUDIENCE nor CHATSTORE_JWT_ISSUER is set: any token "
                "signed with this key is accepted, whatever its aud or iss; set "
                "CHATSTORE_JWT_AUDIENCE to this service's name"
            )
        return verifier

    @classmethod
    def from_settings(cls, settings: Settings) -> JWTVerifier:
        secret, public = settings.jwt_secret, settings.jwt_public_key
        if secret is not None and public is not None:
            raise ConfigurationError(
                "set only one of CHATSTORE_JWT_SECRET and CHATSTORE_JWT_PUBLIC_KEY"
            )
        key: Any
        if secret is not None:
            if len(secret.get_secret_value()) < 32:
                raise ConfigurationError("CHATSTORE_JWT_SECRET must be at least 32 characters")
            key, algorithms = secret.get_secret_value(), ["HS256"]
        elif public is not None:
            try:
                key = load_pem_public_key(_read_key(public.get_secret_value()))
            except ValueError as exc:
                raise ConfigurationError(
                    "CHATSTORE_JWT_PUBLIC_KEY is not a readable PEM public key"
                ) from exc
            if isinstance(key, rsa.RSAPublicKey):
                algorithms = ["RS256"]
            elif isinstance(key, ec.EllipticCurvePublicKey):
                algorithms = ["ES256"]
            else:
                raise ConfigurationError("CHATSTORE_JWT_PUBLIC_KEY must be an RSA or EC key")
        else:
            raise ConfigurationError(
                "HTTP needs a token verification key: set CHATSTORE_JWT_SECRET (HS256) or "
                "CHATSTORE_JWT_PUBLIC_KEY (RS256/ES256 PEM)"
            )
        return cls(
            key=key,
            algorithms=algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway=settings.jwt_leeway,
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's AccessToken if it is valid now, else None.

        A client sends the same token with every request; the outcome of the checks cannot
        change for the same bytes (fixed key, issuer and audience; ``nbf``/``iat`` once
        passed stay passed) except by ``exp``, which is checked again on every use. So a
        verified token is remembered (up to ``VERIFIED_CACHE_SIZE`` of them) and the
        signature check (0.1-0.3 ms of CPU per HTTP request, measured) is paid once per token.
        """
        remembered = self._verified.get(token)
        if remembered is not None:
            access, exp = remembered
            if time.time() < exp + self._leeway:
                return access
            del self._verified[token]
        access_and_exp = self._verify(token)
        if access_and_exp is None:
            return None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = access_and_exp
        return access_and_exp[0]

    def _verify(self, token: str) -> tuple[AccessToken, float] | None:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.PyJWTError as exc:
            log.info("rejected a bearer token: %s", type(exc).__name__)
            return None
        subject = claims.get("sub")
        if not valid_user(subject):
            log.info("rejected a bearer token: unusable sub claim")
            return None
        assert isinstance(subject, str)
        scope = claims.get("scope")
        client_id = claims.get("azp") or claims.get("client_id") or subject
        access = AccessToken(
            token=token,
            client_id=str(client_id),
            scopes=scope.split() if isinstance(scope, str) else [],
            # When this server stops accepting it: the SDK's auth middleware checks this
            # again, without a leeway of its own.
            expires_at=int(claims["exp"] + self._leeway),
            subject=subject,
            claims={k: v for k, v in claims.items() if k in ("iss", "aud", "iat", "nbf")},
        )
        return access, float(claims["exp"])
