"""The Hearth domain: rooms, membership, messages and their rules.

Knows nothing of websockets, codecs or SQL drivers: it takes plain values and calls the
ports of `rooms.ports`, which `server/` implements.
"""
