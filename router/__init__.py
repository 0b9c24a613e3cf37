"""Tether's edge router: consistent hashing on a session key, then a raw byte relay to an API box."""
