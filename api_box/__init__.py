"""Tether's API box: the Responses API (WebSocket mode and HTTP + SSE) with sessions held in memory."""
