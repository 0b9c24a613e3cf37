"""I/O shells of the router: the relay, the Router that owns connections and ring, membership sources, the
admin server, metrics. The only router code that awaits."""
