"""API keys and tenants. Keys are kept only as SHA-256 digests; each maps to one tenant.

Configuration (api_box/config.py reads these; CLI flags override):
- a keys file (`--api-keys-file`, TETHER_BOX_API_KEYS_FILE): one `tenant key` pair a line, where `key` is
  either the key itself or `sha256:<hex digest of the key>` (so the file need not hold secrets); blank
  lines and `#` comments are ignored;
- single keys (`--api-key`, repeatable; TETHER_BOX_API_KEYS, comma-separated) for tenant `default`;
- dev mode (`--dev`, TETHER_BOX_DEV=1): also accept the documented key `tether-dev-key` (tenant `default`).

API keys are high-entropy random strings, so an unsalted fast digest is enough to keep them out of memory
dumps and config; lookups are by digest, which reveals nothing about other keys.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from api_box.core.errors import AuthenticationError, MissingApiKey

DEV_KEY = "tether-dev-key"
DEFAULT_TENANT = "default"
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TENANT = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def hash_key(key: str) -> str:
    """Hex SHA-256 of an API key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_keys_file(text: str) -> dict[str, str]:
    """`tenant key` lines → {digest: tenant}. Raises ValueError naming the bad line."""
    keys: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not _TENANT.fullmatch(parts[0]):
            raise ValueError(f"api keys file line {number}: expected 'tenant key'")
        tenant, key = parts
        digest = key.removeprefix("sha256:").lower() if key.startswith("sha256:") else hash_key(key)
        if not _HEX_DIGEST.fullmatch(digest):
            raise ValueError(f"api keys file line {number}: sha256: must be followed by 64 hex digits")
        keys[digest] = tenant
    return keys


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Digest → tenant, from every configured source."""

    tenants_by_digest: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, *, keys_file: Mapping[str, str], default_keys: Iterable[str], dev: bool) -> KeyRing:
        """Merge the sources (the keys file wins on a clash)."""
        merged = {hash_key(key): DEFAULT_TENANT for key in default_keys}
        if dev:
            merged[hash_key(DEV_KEY)] = DEFAULT_TENANT
        merged.update(keys_file)
        return cls(merged)

    def __len__(self) -> int:
        return len(self.tenants_by_digest)

    def tenant_for(self, authorization: str | None) -> str:
        """The tenant of an `Authorization` header value; raises MissingApiKey or AuthenticationError."""
        if not authorization:
            raise MissingApiKey(
                "You didn't provide an API key. Provide it in the Authorization header (Bearer auth)."
            )
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise MissingApiKey("Expected 'Authorization: Bearer <API key>'.")
        tenant = self.tenants_by_digest.get(hash_key(key))
        if tenant is None:
            raise AuthenticationError("Incorrect API key provided.")
        return tenant
