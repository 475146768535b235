"""Who may use the console: HTTP basic auth on every page and endpoint, two roles, CSRF tokens.

Basic auth (rather than a login form) so scripts and curl work the same as a browser. Every
action is a POST that carries a CSRF token derived from the user and a per-process secret; a
browser cannot be tricked into sending one from another site.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: The realm browsers show in their credentials prompt.
REALM: Final = "switchboard console"
#: The form field (and header, for scripts) that carries the CSRF token.
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "x-csrf-token"


class Role(StrEnum):
    """What a console user may do."""

    VIEWER = "viewer"
    """Reads every page; every action is refused (403)."""
    OPERATOR = "operator"
    """Also replays and purges (acknowledges) dead letters."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    @property
    def can_act(self) -> bool:
        return self.role is Role.OPERATOR


class Users:
    """The accounts of ``SWITCHBOARD_CONSOLE_USERS``; passwords never leave this object."""

    def __init__(self, accounts: dict[str, tuple[str, str]], *, secret: bytes | None = None):
        self._accounts = {name: (pw, Role(role)) for name, (pw, role) in accounts.items()}
        self._secret = secret or secrets.token_bytes(32)

    def __bool__(self) -> bool:
        return bool(self._accounts)

    def authenticate(self, authorization: str | None) -> User | None:
        """The user of a ``Basic`` Authorization header, None when it does not check out."""
        if not authorization or not authorization.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, sep, password = decoded.partition(":")
        account = self._accounts.get(name)
        # Compare even for an unknown user, so timing does not tell which names exist.
        expected = account[0] if account else secrets.token_hex(16)
        ok = hmac.compare_digest(password.encode(), expected.encode())
        return User(name, account[1]) if sep and account and ok else None

    def csrf_token(self, user: User) -> str:
        """The token ``user``'s forms carry: stable for the process, different per user."""
        return hmac.new(self._secret, user.name.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, user: User, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf_token(user))


def unauthorized() -> PlainTextResponse:
    return PlainTextResponse(
        "401: log in with a console user (SWITCHBOARD_CONSOLE_USERS)\n",
        status_code=401,
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
    )


class BasicAuthMiddleware:
    """Every HTTP request needs a valid user (401 otherwise); the user goes in ``scope``."""

    def __init__(self, app: ASGIApp, users: Users) -> None:
        self.app = app
        self.users = users

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user = self.users.authenticate(Headers(scope=scope).get("authorization"))
        if user is None:
            await unauthorized()(scope, receive, send)
            return
        scope["user"] = user
        await self.app(scope, receive, send)
