"""Engines: the compute behind the worker. `base.Engine` is the protocol; `sim` and `torch` implement it."""
