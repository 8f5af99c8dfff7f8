"""alpaca-py's `TradingStream`, with the three things an unattended listener needs from it.

alpaca-py 0.44 has no callback on connect or reconnect, turns a refused auth into
`ValueError("failed to authenticate")` that its own loop retries forever, and says nothing
when a connection ends. This subclass reports each: `on_listening` when the server acks the
subscription (the moment from which no fill is missed, so the moment to resynchronise),
`on_refused(reason)` with the server's own words, `on_closed` when a live connection ends.
`tests/test_fill_stream.py` fails if a new alpaca-py renames the hooks used here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from alpaca.trading.stream import TradingStream

from recon.settings import Settings

Hook = Callable[[], Awaitable[None]]


class StreamRefusedError(ValueError):
    """The server answered the auth with `unauthorized` (wrong keys, or a second connection)."""


class FillStream(TradingStream):
    def __init__(
        self,
        settings: Settings,
        *,
        on_listening: Hook,
        on_refused: Callable[[str], Awaitable[None]],
        on_closed: Hook,
    ) -> None:
        key, secret = settings.alpaca_credentials()
        super().__init__(
            key,
            secret,
            paper=settings.alpaca_paper,
            raw_data=True,  # alpaca-py's models hold price and qty as floats
            url_override=settings.resolved_stream_url,
        )
        self._on_listening = on_listening
        self._on_refused = on_refused
        self._on_closed = on_closed
        self._live = False

    async def _auth(self) -> None:
        # alpaca-py's own `_auth`, keeping the server's reason instead of dropping it.
        assert self._ws is not None
        await self._ws.send(
            json.dumps(
                {
                    "action": "authenticate",
                    "data": {"key_id": self._api_key, "secret_key": self._secret_key},
                }
            )
        )
        reply = _json(await self._ws.recv())
        data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
        if data.get("status") != "authorized":
            reason = str(data.get("error") or reply.get("error") or "unauthorized")
            await self._on_refused(reason)
            raise StreamRefusedError(f"trade_updates refused the connection: {reason}")

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("stream") == "listening":
            self._live = True
            await self._on_listening()
            return
        await super()._dispatch(msg)

    async def close(self) -> None:
        was_live, self._live = self._live, False
        await super().close()
        if was_live:
            await self._on_closed()


def _json(raw: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}
