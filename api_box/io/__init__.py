"""The API box's I/O shells: the aiohttp app, WebSocket and HTTP handlers, the worker adapter, metrics."""
