"""Errors the domain raises, one per protocol error code.

    HearthError                 code          meaning for the client
    ├── BadRequest              bad_request   the command is malformed; fix it, do not retry as is
    ├── Unauthenticated         unauthenticated  sign in (again)
    ├── Forbidden               forbidden     not allowed for this user
    │   ├── AgreementRequired   agreement_required  accept the group agreement first (it is attached)
    │   └── Banned              banned        this account is banned from the community
    ├── NotFound                not_found     no such room, message or user
    ├── Conflict                conflict      the state does not allow it (already exists, deleted)
    ├── TooLarge                too_large     a frame or a text over its limit
    ├── RateLimited             rate_limited  slow down; retry after `retry_after` seconds
    ├── Unavailable             unavailable   a backend is down; retry later
    └── Internal                internal      a bug on our side

Every message is safe to show a person and never echoes a secret or message text.
"""

from __future__ import annotations


class HearthError(Exception):
    """A failure the client is told about, with its protocol error code."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def to_wire(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            error["retry_after"] = round(self.retry_after, 3)
        return error


class BadRequest(HearthError):
    """The command or request is malformed."""

    code = "bad_request"
    http_status = 400


class Unauthenticated(HearthError):
    """No valid credentials."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(HearthError):
    """The user may not do this."""

    code = "forbidden"
    http_status = 403


class AgreementRequired(Forbidden):
    """The member has not accepted the current version of the group agreement; the error
    carries it (`{"community", "version", "text"}`) so the client can show it at once."""

    code = "agreement_required"

    def __init__(self, message: str, agreement: dict[str, object]) -> None:
        super().__init__(message)
        self.agreement = agreement

    def to_wire(self) -> dict[str, object]:
        return {**super().to_wire(), "agreement": self.agreement}


class Banned(Forbidden):
    """The account is banned from the community, under whatever name it comes back."""

    code = "banned"


class NotFound(HearthError):
    """The thing named does not exist (or the user may not know it does)."""

    code = "not_found"
    http_status = 404


class Conflict(HearthError):
    """The current state does not allow the change."""

    code = "conflict"
    http_status = 409


class TooLarge(HearthError):
    """A frame or a field is over its limit."""

    code = "too_large"
    http_status = 413


class RateLimited(HearthError):
    """Too many commands; `retry_after` says when the next one will pass."""

    code = "rate_limited"
    http_status = 429


class Unavailable(HearthError):
    """A backend (store, broker) is down; the client should retry."""

    code = "unavailable"
    http_status = 503


class Internal(HearthError):
    """An unexpected failure; details are in the server log, never in the reply."""

    code = "internal"
    http_status = 500
