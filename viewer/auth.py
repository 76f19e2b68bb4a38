"""API tokens with roles; writes need one, public reads do not."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from twin.errors import Forbidden, TwinError

__all__ = ["ROLES", "Caller", "Unauthorized", "parse_tokens"]

ROLES = frozenset({"planner", "moderator", "engineer", "feed"})


class Unauthorized(TwinError):
    """No token, or a token this server does not know (HTTP 401)."""


@dataclass(frozen=True)
class Caller:
    """Who made a request: the token's name (never the token itself) and its role."""

    name: str
    role: str


def token_name(token: str) -> str:
    """A stable, non-secret name for a token (for the audit log)."""
    return "tok-" + hashlib.sha256(token.encode()).hexdigest()[:10]


def parse_tokens(spec: str) -> dict[str, Caller]:
    """Parse ``"<token>:<role>,<token>:<role>"``.

    Raises:
        TwinError: a malformed entry or an unknown role (the message never shows tokens).
    """
    out: dict[str, Caller] = {}
    for i, entry in enumerate(p.strip() for p in spec.split(",")):
        if not entry:
            continue
        token, sep, role = entry.rpartition(":")
        if not sep or not token:
            raise TwinError(f"TWIN_TOKENS entry {i + 1} is not <token>:<role>")
        if role not in ROLES:
            raise TwinError(
                f"TWIN_TOKENS entry {i + 1} has unknown role {role!r} "
                f"(one of {', '.join(sorted(ROLES))})"
            )
        out[token] = Caller(token_name(token), role)
    return out


def authorize(tokens: dict[str, Caller], header: str | None, roles: frozenset[str]) -> Caller:
    """Check an ``Authorization: Bearer <token>`` header against the allowed roles.

    Raises:
        Unauthorized: no or unknown token.
        Forbidden: the token's role may not do this.
    """
    if not header or not header.lower().startswith("bearer "):
        raise Unauthorized("this needs an API token: Authorization: Bearer <token>")
    given = header[7:].strip()
    caller = None
    for token, c in tokens.items():
        if hmac.compare_digest(token.encode(), given.encode()):
            caller = c
    if caller is None:
        raise Unauthorized("unknown API token")
    if caller.role not in roles:
        raise Forbidden(
            f"role {caller.role!r} may not do this (needs one of {', '.join(sorted(roles))})"
        )
    return caller
