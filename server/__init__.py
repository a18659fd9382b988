"""Hearth's I/O and wiring: the ASGI app, the websocket endpoint, codecs, auth, store and broker."""
