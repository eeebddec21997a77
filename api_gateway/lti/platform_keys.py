"""Platform public keys, fetched from the registration's JWKS URL and cached.

A platform rotates its keys by publishing a new `kid`, so a token whose kid is not in the cached
set triggers one refetch (at most every `MIN_REFETCH_S` per URL, so a stream of tokens with made-up
kids cannot make us hammer the platform). Entries expire after `ttl_s` in any case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from joserfc.jwk import RSAKey

import threading
import time
from dataclasses import dataclass, field

from api_gateway.lti.errors import LaunchRefused

MIN_REFETCH_S = 5.0


@dataclass
class _Entry:
    keys: dict[str, RSAKey]
    fetched_at: float


@dataclass
class PlatformKeyCache:
    ttl_s: float = 300.0
    min_refetch_s: float = MIN_REFETCH_S
    fetches: int = 0  # how many times a key set was downloaded (tests read it)
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _fetch(self, url: str) -> _Entry:
        import httpx  # loaded with the first launch, not with every gateway process
        from joserfc.jwk import KeySet, RSAKey

        try:
            response = httpx.get(url, timeout=5.0, follow_redirects=True)
            response.raise_for_status()
            keyset = KeySet.import_key_set(response.json())
        except Exception as exc:
            raise LaunchRefused("keyset_unavailable", f"cannot read the platform's key set at {url}: {exc}", 502) from exc
        keys = {k.kid: k for k in keyset.keys if isinstance(k, RSAKey) and k.kid}
        self.fetches += 1
        return _Entry(keys, time.monotonic())

    def key_for(self, url: str, kid: str | None) -> RSAKey:
        """The platform key named `kid` (refetching the set once if it is not known)."""
        if not kid:
            raise LaunchRefused("missing_kid", "the id_token header names no key (kid)")
        with self._lock:
            entry = self._entries.get(url)
            now = time.monotonic()
            stale = entry is None or now - entry.fetched_at > self.ttl_s
            unknown = entry is not None and kid not in entry.keys and now - entry.fetched_at >= self.min_refetch_s
            if stale or unknown:
                entry = self._fetch(url)
                self._entries[url] = entry
        key = entry.keys.get(kid) if entry else None
        if key is None:
            raise LaunchRefused("unknown_kid", f"the platform's key set has no key {kid!r}")
        return key


_cache: PlatformKeyCache | None = None


def platform_keys(ttl_s: float) -> PlatformKeyCache:
    """The process-wide cache (one gateway process serves every tenant's platforms)."""
    global _cache
    if _cache is None or _cache.ttl_s != ttl_s:
        _cache = PlatformKeyCache(ttl_s=ttl_s)
    return _cache
