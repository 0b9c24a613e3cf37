"""permessage-deflate on aiohttp's WebSocketResponse, negotiated by api_box/core/deflate.py.

aiohttp's own negotiation (`compress=True`) only echoes the client: it takes the window the client asks
for (15 bits when it asks nothing), answers server_no_context_takeover only when the client asked for
it, never answers client_no_context_takeover or client_max_window_bits, and compresses with zlib's
default memLevel (8: 128 KiB of hash and buffers per connection, whatever the window). So the box
turns aiohttp's negotiation off and plugs its own into the two places aiohttp builds a connection:

- `_handshake` (the response headers, and the window bits and takeover flag aiohttp's writer uses):
  the parent's checks run unchanged with compression off, then the box's answer is added;
- `_pre_start` (where the writer is created): the writer gets a compressor with the negotiated window
  and the policy's memLevel instead of the one it would create on its first frame.

Both are aiohttp internals (stable from 3.11 to 3.14); tests/component/api_box/test_box_ws_deflate.py
checks the negotiated header, that frames decode under the negotiated windows, and that the writer uses
this compressor, so an aiohttp that changes them fails there. Inbound frames are inflated by aiohttp
(15-bit window; the decompressed size is bounded by max_msg_size, so a deflate bomb is refused with 1009).
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_request import BaseRequest

from api_box.core.deflate import DeflateParams, DeflatePolicy, negotiate

_SYNC_LIMIT = 16 * 1024  # bigger frames are compressed on a thread, as aiohttp does


class _Deflater:
    """The writer's compressor: zlib at level 1 (aiohttp's choice) with the negotiated window and memLevel."""

    def __init__(self, window_bits: int, mem_level: int) -> None:
        self._z = zlib.compressobj(zlib.Z_BEST_SPEED, zlib.DEFLATED, -window_bits, mem_level)

    def compress_sync(self, data: bytes) -> bytes:
        return self._z.compress(data)

    async def compress(self, data: bytes) -> bytes:
        if len(data) <= _SYNC_LIMIT:
            return self._z.compress(data)
        return await asyncio.get_running_loop().run_in_executor(None, self._z.compress, data)

    def flush(self, mode: int | None = None) -> bytes:
        return self._z.flush(zlib.Z_FINISH if mode is None else mode)


class DeflateWebSocketResponse(web.WebSocketResponse):
    """A WebSocketResponse that negotiates permessage-deflate under the box's policy (None: never)."""

    def __init__(self, *, deflate: DeflatePolicy | None, **kwargs: Any) -> None:
        super().__init__(compress=False, **kwargs)
        self._policy = deflate
        self.deflate: DeflateParams | None = None  # what was negotiated, once prepared

    def _handshake(self, request: BaseRequest) -> tuple[Any, str | None, int, bool]:
        headers, protocol, _, _ = super()._handshake(request)
        offers = request.headers.getall(hdrs.SEC_WEBSOCKET_EXTENSIONS, [])
        params = negotiate(offers, self._policy) if self._policy is not None and offers else None
        self.deflate = params
        if params is None:
            return headers, protocol, 0, False
        headers[hdrs.SEC_WEBSOCKET_EXTENSIONS] = params.header()
        return headers, protocol, params.server_window_bits, params.server_no_context_takeover

    def _pre_start(self, request: BaseRequest) -> tuple[str | None, Any]:
        protocol, writer = super()._pre_start(request)
        params = self.deflate
        if params is not None:
            # Duck-typed for aiohttp's ZLibCompressor (compress_sync, compress, flush): see the docstring.
            writer._compressobj = _Deflater(params.server_window_bits, params.mem_level)  # type: ignore[assignment]
        return protocol, writer
