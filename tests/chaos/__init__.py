"""Chaos tests and the chaos scenario (scripts/chaos): kill, drain, partition."""
