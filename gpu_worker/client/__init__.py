"""The async client api_box uses to talk to workers.

    pool = WorkerPool(targets=["127.0.0.1:50051", ...], connect_timeout=2.0, request_timeout=300.0,
                      on_call=lambda result: calls_total.labels(result=result).inc(),
                      routing="affinity")    # or "round-robin", "least-loaded" (policy.py)
    await pool.start()                       # inside the serving loop: channels bind to it
    async for ev in pool.generate(req):      # Prefill, then TextDelta | CallStart | CallDelta, then Done
        ...
    await pool.drop(cache_key)               # best effort DropSession on the owner
    await pool.stop(request_id)              # end a running generation early (Done "stopped")
    await pool.close()

Semantics of `generate`:
- Routing (`routing`, gpu_worker/client/policy.py): `affinity` (default) is rendezvous hashing of
  `req.cache_key` (or `req.routing_key`, or the chain's first block) over the workers that serve the
  model; `pool.owner(key)` is the worker a chain goes to now. `round-robin` sends each call to the next
  worker in turn (a Service in front of replicas); `least-loaded` to the worker with the fewest calls
  in flight from this pool.
- Delta protocol: with `held_len > 0` only `chain[held_len:]` travels, with base_len/digest. A
  FAILED_PRECONDITION (the worker does not hold that prefix) is answered by resending the whole chain
  once, on the same worker — under round-robin that is the usual case for a keyed chain.
- Failover: a worker that cannot be reached (connect timeout, UNAVAILABLE, draining) before any event
  was yielded is marked down for `down_cooldown` seconds (tried again after that) and the next worker in
  hash order gets the whole chain; at most `max_attempts` workers are tried. A worker that dies after
  events were yielded raises `WorkerUnavailable` (fail that response; the next turn goes elsewhere).
- Errors: INVALID_ARGUMENT / RESOURCE_EXHAUSTED raise `WorkerRejected(code, message)`,
  DEADLINE_EXCEEDED raises `WorkerTimeout`, anything else `WorkerError` (all subclasses of it).
- Cancellation: leaving the `async for` early (or cancelling the task) cancels the RPC; the worker
  stops generating and keeps the chain consistent.

Counting (`tether_box_worker_calls_total{result}`): every `generate` call that ends (returns or raises a
WorkerError) reports exactly one result: "ok" (first try), "resend" (FAILED_PRECONDITION then the full
chain), "failover" (served by a later worker), or "error" (raised). Pass `on_call=callback` to be called
with it, or read `pool.call_counts`. A call the consumer abandons reports nothing.
"""

from gpu_worker.client.policy import ROUTINGS, WorkerRouting, check_routing
from gpu_worker.client.pool import CHANNEL_OPTIONS, WorkerPool
from gpu_worker.client.types import (
    AgentState,
    CallDelta,
    CallResult,
    CallStart,
    Done,
    GenerationRequest,
    Prefill,
    TextDelta,
    ToolSpec,
    WorkerError,
    WorkerEvent,
    WorkerRejected,
    WorkerTimeout,
    WorkerUnavailable,
)

__all__ = [
    "CHANNEL_OPTIONS",
    "ROUTINGS",
    "AgentState",
    "CallDelta",
    "CallResult",
    "CallStart",
    "Done",
    "GenerationRequest",
    "Prefill",
    "TextDelta",
    "ToolSpec",
    "WorkerError",
    "WorkerEvent",
    "WorkerPool",
    "WorkerRejected",
    "WorkerRouting",
    "WorkerTimeout",
    "WorkerUnavailable",
    "check_routing",
]
