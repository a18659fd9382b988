"""Websocket close codes Hearth uses, and whether a client should reconnect after each."""

from __future__ import annotations

CLOSE_GOING_AWAY = 1001
"""The server or client is leaving. Reconnect with backoff."""

CLOSE_BAD_DATA = 1007
"""A text frame that is not UTF-8. A client bug: do not resend the frame."""

CLOSE_TOO_BIG = 1009
"""A frame over the hard size limit, refused by the websocket layer. Do not resend it."""

CLOSE_INTERNAL = 1011
"""An unexpected server error on this connection (also: no pong to the keepalive ping). Reconnect with backoff."""

CLOSE_RESTARTING = 1012
"""The worker is restarting. Reconnect at once (another worker will answer) and resume with `since`."""

CLOSE_PROTOCOL = 4400
"""A frame that is not a map or not decodable, or an unknown encoding. A client bug: do not reconnect blindly."""

CLOSE_UNAUTHENTICATED = 4401
"""No valid `auth` first frame within the time limit, or the token was revoked. Sign in again first."""

CLOSE_REMOVED = 4403
"""Banned or removed. Do not reconnect."""

CLOSE_TOO_SLOW = 4408
"""The outbox overflowed: the client did not read fast enough. Reconnect and resume with `since`."""

CLOSE_TOO_MANY = 4429
"""Rate limit exceeded again and again. Reconnect after a pause."""
