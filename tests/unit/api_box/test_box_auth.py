"""API keys: hashed, mapped to tenants, from a file, flags and dev mode."""

from __future__ import annotations

import pytest

from api_box.core.auth import DEFAULT_TENANT, DEV_KEY, KeyRing, hash_key, parse_keys_file
from api_box.core.errors import AuthenticationError, MissingApiKey


def test_keys_file_holds_plain_or_hashed_keys() -> None:
    text = f"# comment\n\nalpha sk-alpha\nbeta sha256:{hash_key('sk-beta')}\n"
    keys = parse_keys_file(text)
    assert keys == {hash_key("sk-alpha"): "alpha", hash_key("sk-beta"): "beta"}
    assert "sk-alpha" not in str(keys)


@pytest.mark.parametrize("line", ["alpha", "alpha key extra", "bad/tenant key", "alpha sha256:xyz"])
def test_bad_keys_file_lines_are_named(line: str) -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_keys_file(f"ok sk-ok\n{line}\n")


def test_key_ring_maps_keys_to_tenants() -> None:
    ring = KeyRing.build(keys_file=parse_keys_file("alpha sk-a\n"), default_keys=["sk-d"], dev=False)
    assert ring.tenant_for("Bearer sk-a") == "alpha"
    assert ring.tenant_for("bearer  sk-d ") == DEFAULT_TENANT
    with pytest.raises(AuthenticationError) as wrong:
        ring.tenant_for("Bearer sk-nope")
    assert wrong.value.status == 401
    assert wrong.value.code == "invalid_api_key"
    with pytest.raises(AuthenticationError):
        ring.tenant_for(f"Bearer {DEV_KEY}")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic sk-a", "sk-a"])
def test_missing_or_malformed_authorization(header: str | None) -> None:
    ring = KeyRing.build(keys_file={}, default_keys=["sk-a"], dev=False)
    with pytest.raises(MissingApiKey) as caught:
        ring.tenant_for(header)
    assert caught.value.status == 401
    assert caught.value.code == "missing_api_key"


def test_dev_mode_accepts_the_documented_key() -> None:
    ring = KeyRing.build(keys_file={}, default_keys=[], dev=True)
    assert DEV_KEY == "tether-dev-key"
    assert ring.tenant_for(f"Bearer {DEV_KEY}") == DEFAULT_TENANT
    assert len(ring) == 1
