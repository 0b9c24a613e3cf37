"""Pure helpers of the launcher: no asyncio, no sockets, no processes."""
