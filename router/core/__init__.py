"""Pure cores of the router: hash ring, request-head parsing, routing decisions. No I/O."""
