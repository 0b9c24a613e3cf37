"""The Redis cold store: write-behind of completed store:true turns, cold restore of whole chains.

The only module of the box that imports redis. Key layout (api_box/core/handoff.py `ColdKeys`):

    {prefix}:{tenant}:r:{response_id}   STRING  the turn's whole TurnRecord (with its resource and items)
    {prefix}:{tenant}:c:{cache_key}     LIST    the chain's records, slim, in append order (all boxes that
                                                owned the chain append to it); trimmed to the newest
                                                `MAX_CHAIN_RECORDS`
    {prefix}:writer:{writer_id}         STRING  this writer's marker (see "Redis lost data" below)
    {prefix}:{tenant}:sealed:{slot}     STRING  a sealed store:false handoff (api_box/io/sealed.py):
                                                ciphertext only, short TTL, taken with GETDEL

Every key expires `ttl` seconds after its chain's last write.

Write-behind: `append` puts the turn in a bounded in-memory queue (turns and bytes) and returns at once:
it never waits for Redis. One writer task (woken by an append, after `COALESCE_SECONDS` so that the
turn's own terminal event goes out first) takes up to `batch` turns and writes them in ONE round trip, a
Lua script run atomically (per turn: SET the response key, RPUSH the slim record; per chain: LTRIM and
PEXPIRE) — one reply per batch instead of four per turn, which is what bounds a Python client's write
rate. Beyond the bounds a turn is dropped (tether_box_write_behind_dropped_total{reason}: queue_full,
redis_down, too_large, redis_error, shutdown), and its chain is marked so that the chain's next turn is
written whole again (`needs_whole`), since a delta over a missing record cannot be restored. Every
`WHOLE_EVERY` deltas a chain is written whole as well, so a trimmed list always holds a whole ancestor.

Restore (at most 2 round trips): GET the response key; a whole record is the chain already. A delta needs
its ancestors: LRANGE the chain list and fold the path back to the nearest whole record. A restore of a
turn still waiting in this box's own queue waits for it to be written first. Timeouts, connection
errors and corrupt records are misses (the box answers previous_response_not_found).

Redis down: appends keep queueing (within the bounds); the writer keeps its batch and retries with
backoff; tether_box_redis_up is 0 until an operation succeeds again, and no restart is needed. Redis lost
data (restarted empty, flushed): each batch also reads and sets this writer's marker; finding it gone
makes every chain's next turn whole (an epoch), so chains become restorable again after one turn.

The script touches keys of several chains, so this store needs one Redis (or a primary with replicas),
not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from api_box.core.errors import StoreUnavailable
from api_box.core.handoff import (
    MAX_ID_CHARS,
    ChainSnapshot,
    ColdKeys,
    TurnRecord,
    fold_chain,
)
from api_box.io.metrics import BoxMetrics

_LOG = logging.getLogger("api_box.redis")
MAX_CHAIN_RECORDS = 4096  # list entries kept per chain (LTRIM)
WHOLE_EVERY = 1024  # deltas after which a chain is written whole again (< MAX_CHAIN_RECORDS)
MAX_TRACKED_CHAINS = 262_144  # chains whose persisted state this writer remembers (LRU)
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 1.0
# A woken writer waits this long before taking a batch (unless a full batch is already queued): the turn
# that woke it sends its terminal event first, and turns completing meanwhile share the round trip.
COALESCE_SECONDS = 0.002
_FAILURES = (RedisError, OSError, TimeoutError)
_T = TypeVar("_T")
_BATCH_BYTES = 8 * 1024 * 1024  # a batch holds at most this much (or one turn), so one round trip stays short
_WRITE_RATE = 50e6  # bytes/s a write is allowed on top of the op timeout (big whole records)
DROP_REASONS = ("queue_full", "redis_down", "too_large", "redis_error", "shutdown")


# One batch, atomically, in one round trip. KEYS: the writer's marker, then per turn its response key and
# its chain key; ARGV: ttl (ms), entries kept per chain, then per turn its whole and its slim record.
# Returns {1 if the marker was there else 0, the 1-based numbers of the turns Redis refused...}.
_WRITE_SCRIPT = """
local ttl, keep = ARGV[1], tonumber(ARGV[2])
local had_marker = redis.call('GET', KEYS[1]) and 1 or 0
redis.call('SET', KEYS[1], '1', 'PX', ttl)
local result, chains = {had_marker}, {}
for i = 2, #KEYS, 2 do
  local set = redis.pcall('SET', KEYS[i], ARGV[i + 1], 'PX', ttl)
  local push = redis.pcall('RPUSH', KEYS[i + 1], ARGV[i + 2])
  if type(set) == 'table' and set.err or type(push) == 'table' and push.err then
    result[#result + 1] = i / 2
  else
    chains[KEYS[i + 1]] = true
  end
end
for chain in pairs(chains) do
  redis.call('LTRIM', chain, -keep, -1)
  redis.call('PEXPIRE', chain, ttl)
end
return result
"""


@dataclass(slots=True)
class _Pending:
    """A turn waiting to be written, with its place in the order of appends."""

    turn: TurnRecord
    size: int
    at: float  # clock() when appended
    seq: int


@dataclass(slots=True)
class _ChainMark:
    """What this writer knows of a chain's persisted state."""

    epoch: int
    deltas: int = 0  # deltas since the last whole record


class RedisColdStore:
    """The ColdStore of api_box/io/cold_store.py on Redis; see the module docstring."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        metrics: BoxMetrics,
        prefix: str = "tether",
        ttl_seconds: float = 86400.0,
        op_timeout: float = 2.0,
        max_queue: int = 65536,
        max_bytes: int = 256 * 1024 * 1024,
        batch: int = 128,
        flush_timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._keys = ColdKeys(prefix)
        self._ttl_ms = int(ttl_seconds * 1000)
        self._op_timeout = op_timeout
        self._max_queue, self._max_bytes, self._batch = max_queue, max_bytes, batch
        self._flush_timeout = flush_timeout
        self._clock = clock
        self._queue: deque[_Pending] = deque()
        self._inflight: list[_Pending] = []
        self._queued_bytes = 0
        self._by_id: dict[tuple[str, str], int] = {}  # (tenant, response id) -> seq, while unwritten
        self._appended = 0  # seq of the last append
        self._settled = 0  # every seq <= this was written or dropped
        self._progress = asyncio.Event()
        self._wake = asyncio.Event()
        self._chains: OrderedDict[str, _ChainMark] = OrderedDict()
        self._epoch = 0
        self._writer_key = self._keys.writer(secrets.token_hex(8))
        self._script = client.register_script(_WRITE_SCRIPT)
        self._marker_written = False
        self._up = False
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        metrics.redis_up.set(0)
        metrics.write_behind_queue_depth.set_function(lambda: len(self._queue) + len(self._inflight))
        metrics.write_behind_lag_seconds.set_function(self.lag)
        for reason in DROP_REASONS:
            metrics.write_behind_dropped.labels(reason)

    @classmethod
    def from_url(
        cls, url: str, *, metrics: BoxMetrics, op_timeout: float = 2.0, **kwargs: Any
    ) -> RedisColdStore:
        """A store on a new client for `url`; every socket operation is bounded by `op_timeout`. The client
        retries a command once, at once, on a broken connection (a pooled connection that a proxy or
        Redis's own idle timeout closed), never on a timeout, and pings a connection idle for 30 s before
        using it; beyond that the writer retries with backoff, and a restore is a miss."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=op_timeout,
            socket_connect_timeout=op_timeout,
            retry=Retry(NoBackoff(), 1),
            retry_on_timeout=False,
            health_check_interval=30,
        )
        return cls(client, metrics=metrics, op_timeout=op_timeout, **kwargs)

    # ------------------------------------------------------------------ ColdStore
    @property
    def enabled(self) -> bool:
        """Always True: the box builds and appends turn records."""
        return True

    async def start(self) -> bool:
        """Start the writer and ping Redis (True when it answered). A Redis that is down is not fatal:
        the box serves, and the store recovers when Redis answers."""
        self._ensure_writer()
        try:
            await self._command("ping", self._client.ping())
        except _FAILURES:
            return False
        return True

    async def append(self, turn: TurnRecord) -> None:
        """Queue a completed turn; never waits for Redis (over the bounds the turn is dropped)."""
        self._ensure_writer()
        size = turn.nbytes()
        reason = self._refusal(size)
        if reason is not None:
            self._drop(turn.cache_key, reason)
            return
        self._appended += 1
        self._queue.append(_Pending(turn, size, self._clock(), self._appended))
        self._queued_bytes += size
        self._by_id[(turn.tenant, turn.response_id)] = self._appended
        self._note_chain(turn)
        self._wake.set()

    def needs_whole(self, cache_key: str) -> bool:
        """Whether the next turn of this chain must be written whole (see the module docstring)."""
        mark = self._chains.get(cache_key)
        return mark is None or mark.epoch != self._epoch or mark.deltas >= WHOLE_EVERY

    async def restore(self, tenant: str, response_id: str) -> ChainSnapshot | None:
        """The chain ending at this response (at most 2 round trips), or None."""
        if not response_id or len(response_id) > MAX_ID_CHARS:
            return None
        await self._settle_pending(tenant, response_id)
        try:
            async with asyncio.timeout(self._op_timeout):
                found = await self._read(tenant, response_id)
        except _FAILURES as exc:
            self._set_down(exc, "restore")
            return None
        except ValueError as exc:
            _LOG.warning("cold restore: %s; treated as a miss", exc)
            self._set_up()
            return None
        self._set_up()
        if found is None:
            return None
        snapshot, listed = found
        # This box owns the chain from now on: its next turn is a delta over what Redis holds.
        self._track(snapshot.cache_key, _ChainMark(self._epoch, listed))
        return snapshot

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Forget a response (after its pending write, if any, so that the write does not revive it); True
        when Redis held it. Redis down, or a pending write that did not settle, is StoreUnavailable."""
        if not await self._settle_pending(tenant, response_id):
            raise StoreUnavailable("The response store is busy; retry the delete.")
        try:
            key = self._keys.response(tenant, response_id)
            removed = await self._command("delete", self._client.delete(key))
        except _FAILURES:
            raise StoreUnavailable("The response store is unavailable; retry the delete.") from None
        return bool(removed)

    async def flush(self) -> bool:
        """Wait until every turn appended so far is written (or dropped); False when the flush budget
        ran out first."""
        try:
            async with asyncio.timeout(self._flush_timeout):
                await self._settled_up_to(self._appended)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Flush within the flush budget (unless Redis is down), then stop the writer (what is left is
        dropped) and disconnect."""
        if self._closed:
            return
        # With Redis down (the drain's flush already waited), spend no more of the shutdown budget.
        flushed = await self.flush() if self._up or not self.pending else False
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        left = self._inflight + list(self._queue)
        for item in left:
            self._drop(item.turn.cache_key, "shutdown")
        self._inflight, self._queued_bytes = [], 0
        self._queue.clear()
        self._settle(self._appended)
        if not flushed:
            _LOG.warning("write-behind: %d turns were not written before shutdown", len(left))
        with contextlib.suppress(*_FAILURES):
            await self._client.aclose()

    # ------------------------------------------------------------------ sealed store:false handoffs
    async def put_sealed(self, tenant: str, slot: str, blob: bytes, ttl_seconds: float) -> None:
        """SET a sealed handoff (api_box/io/sealed.py) with its TTL; raises when Redis fails."""
        key = self._keys.sealed(tenant, slot)
        await self._command("sealed handoff write", self._client.set(key, blob, px=int(ttl_seconds * 1000)))

    async def take_sealed(self, tenant: str, slot: str) -> bytes | None:
        """GETDEL a sealed handoff (one use): its bytes, or None; raises when Redis fails."""
        raw = await self._command("sealed handoff read", self._client.getdel(self._keys.sealed(tenant, slot)))
        return cast(bytes | None, raw)

    # ------------------------------------------------------------------ observability
    def lag(self) -> float:
        """Age in seconds of the oldest turn not yet written (0 when none waits)."""
        oldest = self._inflight[0] if self._inflight else (self._queue[0] if self._queue else None)
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest.at)

    @property
    def pending(self) -> int:
        """Turns appended and not yet written."""
        return len(self._queue) + len(self._inflight)

    # ------------------------------------------------------------------ appending
    def _refusal(self, size: int) -> str | None:
        if self._closed:
            return "shutdown"
        if size > self._max_bytes:
            return "too_large"
        if self.pending >= self._max_queue or self._queued_bytes + size > self._max_bytes:
            return "queue_full" if self._up else "redis_down"
        return None

    def _drop(self, cache_key: str, reason: str) -> None:
        self._metrics.write_behind_dropped.labels(reason).inc()
        self._chains.pop(cache_key, None)  # its next turn is written whole

    def _note_chain(self, turn: TurnRecord) -> None:
        mark = self._chains.get(turn.cache_key)
        if turn.whole:
            self._track(turn.cache_key, _ChainMark(self._epoch))
        elif mark is not None:
            mark.deltas += 1
            self._chains.move_to_end(turn.cache_key)

    def _track(self, cache_key: str, mark: _ChainMark) -> None:
        self._chains[cache_key] = mark
        self._chains.move_to_end(cache_key)
        while len(self._chains) > MAX_TRACKED_CHAINS:
            self._chains.popitem(last=False)

    # ------------------------------------------------------------------ restoring
    async def _read(self, tenant: str, response_id: str) -> tuple[ChainSnapshot, int] | None:
        """The snapshot and how many chain-list entries it was folded from (0: a whole record)."""
        # decode_responses is off: replies are bytes.
        raw = cast(bytes | None, await self._client.get(self._keys.response(tenant, response_id)))
        if raw is None:
            return None
        target = TurnRecord.from_bytes(raw)
        if target.tenant != tenant or target.response_id != response_id:
            raise ValueError(f"the record under {response_id} names another response")
        if target.whole:
            return fold_chain(target, ()), 0
        raws = cast(list[bytes], await self._client.lrange(self._keys.chain(tenant, target.cache_key), 0, -1))
        return fold_chain(target, raws), len(raws)

    # ------------------------------------------------------------------ writing
    def _ensure_writer(self) -> None:
        if self._writer is None and not self._closed:
            self._writer = asyncio.create_task(self._write_forever(), name="write-behind")

    async def _write_forever(self) -> None:
        backoff = _BACKOFF_MIN
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                if len(self._queue) < self._batch:
                    await asyncio.sleep(COALESCE_SECONDS)
                continue
            self._inflight = self._take_batch()
            budget = self._op_timeout + sum(item.size for item in self._inflight) / _WRITE_RATE
            while True:
                try:
                    async with asyncio.timeout(budget):
                        await self._write(self._inflight)
                except _FAILURES as exc:
                    self._set_down(exc, "write")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
                break
            backoff = _BACKOFF_MIN
            self._set_up()
            self._written(self._inflight)
            self._inflight = []

    def _take_batch(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        size = batch[0].size
        while self._queue and len(batch) < self._batch and size + self._queue[0].size <= _BATCH_BYTES:
            size += self._queue[0].size
            batch.append(self._queue.popleft())
        return batch

    async def _write(self, batch: list[_Pending]) -> None:
        """One round trip: `_WRITE_SCRIPT` over the batch. A turn that Redis refuses (an error reply: a
        key of the wrong type, say) is dropped, not retried; a failure of the whole call is retried."""
        keys = [self._writer_key]
        args: list[bytes | int] = [self._ttl_ms, MAX_CHAIN_RECORDS]
        for item in batch:
            turn = item.turn
            keys += [
                self._keys.response(turn.tenant, turn.response_id),
                self._keys.chain(turn.tenant, turn.cache_key),
            ]
            args += turn.to_bytes_pair()
        marker, *refused = await self._script(keys=keys, args=args)
        for index in refused:
            _LOG.warning("Redis refused a turn record; dropped")
            self._drop(batch[int(index) - 1].turn.cache_key, "redis_error")
        if not marker and self._marker_written:
            # Our marker is gone: Redis lost what we wrote. Deltas over it could not be restored.
            self._epoch += 1
            _LOG.warning("Redis lost its data (restarted or flushed): chains are written whole again")
        self._marker_written = True

    def _written(self, batch: list[_Pending]) -> None:
        for item in batch:
            self._queued_bytes -= item.size
            key = (item.turn.tenant, item.turn.response_id)
            if self._by_id.get(key) == item.seq:
                del self._by_id[key]
        self._settle(batch[-1].seq if not self._queue else self._queue[0].seq - 1)

    async def _settled_up_to(self, seq: int) -> None:
        while self._settled < seq:
            await self._progress.wait()

    async def _settle_pending(self, tenant: str, response_id: str) -> bool:
        """Wait (within the flush budget) for this response's own write, when it is still queued here;
        False when it is still pending after that."""
        seq = self._by_id.get((tenant, response_id))
        if seq is None:
            return True
        try:
            async with asyncio.timeout(self._flush_timeout):
                await self._settled_up_to(seq)
        except TimeoutError:
            return False
        return True

    def _settle(self, seq: int) -> None:
        self._settled = max(self._settled, seq)
        self._progress.set()
        self._progress = asyncio.Event()

    # ------------------------------------------------------------------ health
    def _set_up(self) -> None:
        if not self._up:
            self._up = True
            self._metrics.redis_up.set(1)
            _LOG.info("Redis answers")

    async def _command(self, during: str, command: Awaitable[_T]) -> _T:
        """One Redis command within the op timeout, marking Redis up or down; a failure is raised."""
        try:
            async with asyncio.timeout(self._op_timeout):
                result = await command
        except _FAILURES as exc:
            self._set_down(exc, during)
            raise
        self._set_up()
        return result

    def _set_down(self, exc: BaseException, during: str) -> None:
        if self._up:
            _LOG.warning("Redis %s failed (%s); cold restores miss until it answers", during, _describe(exc))
        self._up = False
        self._metrics.redis_up.set(0)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
