"""The environment farm on a Ray cluster: episode workers as Ray actors on any node.

Why Ray: a GRPO run for a large model needs far more concurrent sandboxed builds than one
host has CPUs; Ray is the distributed engine RL stacks already run beside their trainers.
`RayFarm` is the process farm's scheduler (`FarmScheduler`: queue, sticky dispatch, replay,
retries, the exactly-once tally) with Ray actors in place of spawned processes:

- each actor reserves ``cpus_per_worker`` CPUs (and ``memory_per_worker_mb``, and any custom
  ``resources`` such as ``{"docker": 1}`` on nodes that run Docker) so Ray places builds where
  there is room: a node's amount of a custom resource caps the sandboxes it runs at once. An
  actor keeps its workspaces in a private directory on its node;
- tasks travel by content (a packed copy of the task directory, put once in Ray's object
  store), never as a path of the driver's host;
- ``max_concurrent_builds`` caps the jobs running at once across the cluster (a job runs its
  sandbox commands one at a time, so this caps sandboxed builds); the rest wait in the
  driver's queue. A dead worker's slot counts as busy until its leftovers are swept;
- an actor or node that dies, or a job past its step timeout, fails the job it ran: the job is
  retried (replayed from its history on another actor) up to ``max_attempts`` times, then
  the episode ends as infra_error, counted once; a new actor takes the slot, and a task
  pinned to the old node kills whatever the dead actor left running there.

The validation cache (``cache_dir``) is shared by every node without shared storage: one
`CacheServer` actor, placed on the driver's node, owns the directory there; actors compute
their workspace keys themselves and ask it for results, so a build validated on one node is a
hit on every other, and concurrent identical builds anywhere run once. A dead actor's claims
are dropped by the farm, waking whoever waits on them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .farm_cleanup import descendants, kill_pids, sweep_directory
from .farm_scheduler import FarmScheduler, Slot
from .farm_worker import EpisodeHost, Fatal, Job, Ready, Reply, episode_factory
from .faults import FaultPlan
from .task import Task
from .validation_cache import CacheServer, ValidationCache

__all__ = ["RayFarm", "TaskBundle"]


@dataclasses.dataclass(frozen=True)
class TaskBundle:
    """A task directory packed for another node: ``data`` is a gzipped tar of its files."""

    digest: str
    name: str
    data: bytes
    corpus_version: str | None = None


def pack_task(task: Task) -> TaskBundle | None:
    """The task's directory as a bundle; None for tasks whose repository lives in an image."""
    if task.swebench is not None:
        return None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(task.root, arcname=task.root.name)
    data = buf.getvalue()
    version = None
    for parent in list(task.root.resolve().parents)[:4]:  # as reward.fingerprint finds it
        f = parent / "VERSION"
        if f.is_file():
            version = f.read_text()
            break
    return TaskBundle(hashlib.sha256(data).hexdigest()[:24], task.root.name, data, version)


@dataclasses.dataclass(frozen=True)
class ActorInfo:
    """A started actor: where it runs."""

    ready: Ready | Fatal
    node_id: str
    workdir: str


class _ServerStore:
    """A `ResultStore` backed by the farm's `CacheServer` actor, claiming keys as ``owner``."""

    def __init__(self, server: Any, owner: str, wait_s: float):
        self.server, self.owner, self.wait_s = server, owner, wait_s

    def acquire(self, key: str) -> dict[str, Any] | None:
        return ray.get(self.server.acquire.remote(key, self.owner, self.wait_s))

    def put(self, key: str, record: dict[str, Any]) -> None:
        ray.get(self.server.put.remote(key, self.owner, record))

    def release(self, key: str) -> None:
        ray.get(self.server.release.remote(key, self.owner))


@dataclasses.dataclass(frozen=True)
class SharedCache:
    """How an actor reaches the farm's validation cache: the server and its claim timeout."""

    server: Any  # ray.actor.ActorHandle of a CacheServer
    wait_s: float


class EpisodeActor:
    """A farm worker inside a Ray actor: an `EpisodeHost` and the tasks shipped to it."""

    def __init__(
        self,
        slot: int,
        owner: str,
        sandbox_kind: str,
        sandbox_opts: dict,
        faults: FaultPlan,
        cache: SharedCache | None,
    ):
        base = sandbox_opts.get("workdir") or None
        if base:
            os.makedirs(base, exist_ok=True)
        self.workdir = tempfile.mkdtemp(prefix=f"jaxrepair-ray-w{slot}-", dir=base)
        self.tasks_dir = Path(self.workdir) / "tasks"
        self.unpacked: dict[str, Path] = {}
        self.host: EpisodeHost | None = None
        try:
            opts = dict(sandbox_opts, workdir=os.path.join(self.workdir, "ws"))
            os.makedirs(opts["workdir"])
            self.host = EpisodeHost(sandbox_kind, opts, faults, None)
            if cache is not None:  # the cluster's cache, not a directory of this node
                store = _ServerStore(cache.server, owner, cache.wait_s)
                self.host.cache = ValidationCache(store=store)
                self.host.make_episode = episode_factory(self.host.cache)
            self.status: Ready | Fatal = Ready(os.getpid())
        except BaseException as e:  # noqa: BLE001 - reported to the farm, which refuses to start
            self.status = Fatal(f"worker {slot} could not start: {type(e).__name__}: {e}")
            sweep_directory(self.workdir, sandbox_kind, sandbox_opts.get("base_url"))

    def info(self) -> ActorInfo:
        return ActorInfo(self.status, ray.get_runtime_context().get_node_id(), self.workdir)

    def run(self, job: Job, digest: str | None, bundle: TaskBundle | None) -> Reply:
        """Run one job; ``digest`` names the job's task bundle (None: a task that lives in an
        image), ``bundle`` comes with the first job of that task this actor gets."""
        if self.host is None:
            return Reply(job.job_id, None, "the worker has no sandbox")
        if digest is not None:
            try:
                root = self.unpacked.get(digest) if bundle is None else self._unpack(bundle)
                if root is None:
                    raise RuntimeError("the task was never shipped to this worker")
            except Exception as e:  # noqa: BLE001 - a task that cannot arrive is an infra error
                return Reply(job.job_id, None, f"unpacking task {job.task.id}: {e}")
            job.task = dataclasses.replace(job.task, root=root)
        return self.host.handle(job)

    def shutdown(self, sandbox_kind: str, docker_base_url: str | None) -> None:
        """Close the live episodes and remove this actor's directory (an idle actor at the
        farm's close: no sweep from outside needed)."""
        if self.host is not None:
            self.host.close()
        sweep_directory(self.workdir, sandbox_kind, docker_base_url)

    def _unpack(self, bundle: TaskBundle) -> Path:
        root = self.unpacked.get(bundle.digest)
        if root is not None:
            return root
        dest = self.tasks_dir / bundle.digest
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(bundle.data), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
        if bundle.corpus_version is not None:
            (dest / "VERSION").write_text(bundle.corpus_version)
        self.unpacked[bundle.digest] = dest / bundle.name
        return dest / bundle.name


def sweep_actor(pid: int | None, workdir: str, sandbox_kind: str, base_url: str | None) -> None:
    """On a killed actor's node: make sure the actor process and its children are gone
    (``ray.kill`` is asynchronous, and a hung actor whose build is killed would carry on and
    write into its directory after the sweep), then sweep its directory."""
    if pid is not None:
        kill_pids([pid, *descendants(pid)])
    sweep_directory(workdir, sandbox_kind, base_url)


_RemoteActor = ray.remote(EpisodeActor)
_RemoteCacheServer = ray.remote(CacheServer)
# a dead actor's leftovers are swept by a task pinned to its node; it needs no CPU of its own,
# so it never waits behind busy actors
_sweep_on_node = ray.remote(num_cpus=0, max_retries=0)(sweep_actor)


@dataclasses.dataclass
class _ActorSlot(Slot):
    actor: Any = None  # ray.actor.ActorHandle
    starting: ray.ObjectRef | None = None  # the actor's info() call, until it answers
    call: ray.ObjectRef | None = None  # the job it runs
    node_id: str = ""
    pid: int | None = None
    shipped: set[str] = dataclasses.field(default_factory=set)  # task digests it holds

    @property
    def running(self) -> bool:
        return self.actor is not None


class RayFarm(FarmScheduler):
    """Episode workers as Ray actors, on the cluster at ``address`` (None: the one this process
    is connected to, else a new local one). Same API and fault semantics as `EnvFarm`:
    ``with RayFarm(workers=8, max_concurrent_builds=4) as farm: await farm.reset(...)``."""

    def __init__(
        self,
        workers: int = 2,
        sandbox_kind: str = "local",
        sandbox_opts: dict | None = None,
        max_attempts: int = 3,
        step_timeout_s: float = 900.0,
        faults: FaultPlan | None = None,
        cache_dir: str | Path | None = None,
        episode_caps: dict[str, Any] | None = None,
        start_timeout_s: float = 120.0,
        *,
        address: str | None = None,
        max_concurrent_builds: int | None = None,
        cpus_per_worker: float = 1.0,
        memory_per_worker_mb: int | None = None,
        resources: dict[str, float] | None = None,
    ):
        super().__init__(
            workers,
            sandbox_kind,
            sandbox_opts,
            max_attempts,
            step_timeout_s,
            faults,
            cache_dir,
            episode_caps,
            start_timeout_s,
        )
        limit = workers if max_concurrent_builds is None else max_concurrent_builds
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_concurrent_builds must be an integer >= 1, got {limit!r}")
        if not cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker!r}")
        for name, amount in (resources or {}).items():
            if name in ("CPU", "GPU", "memory") or not amount > 0:
                raise ValueError(
                    f"resources must name custom resources with amounts > 0, got {name}={amount!r}"
                    " (CPUs and memory are cpus_per_worker and memory_per_worker_mb)"
                )
        self.address = address
        self.max_concurrent_builds = limit
        self.cpus_per_worker = float(cpus_per_worker)
        self.memory_per_worker_mb = memory_per_worker_mb
        self.resources = dict(resources or {})
        self._cache_server: Any = None  # the CacheServer actor, when cache_dir is set
        self._bundles: dict[tuple[str, str], tuple[str, ray.ObjectRef] | None] = {}
        self._sweeps: list[ray.ObjectRef] = []  # leftovers of dead actors being removed
        self._sent = threading.Event()  # a job was sent since the monitor last looked
        self._own_ray = False

    _slots: list[_ActorSlot]

    def _new_slot(self, index: int) -> _ActorSlot:
        return _ActorSlot(index)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RayFarm:
        """Connect to Ray, start the actors and wait until each has its sandbox (an actor that
        cannot make one makes start fail with its message)."""
        super().start()
        return self

    def _start_workers(self) -> None:
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            self._own_ray = True
        if self.cache_dir is not None:
            here = NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=True
            )
            self._cache_server = _RemoteCacheServer.options(
                num_cpus=0, scheduling_strategy=here, max_concurrency=1000
            ).remote(self.cache_dir)
        for slot in self._slots:
            self._spawn(slot)
        deadline = time.monotonic() + self.start_timeout_s
        for slot in self._slots:
            left = max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait([slot.starting], timeout=left)
            if not ready:
                raise RuntimeError(
                    f"farm worker {slot.index} did not start within {self.start_timeout_s:g}s"
                    f" (does the cluster have room for {self._demand()} per worker?)"
                )
            try:
                info = ray.get(slot.starting)
            except RayError as e:
                raise RuntimeError(
                    f"farm worker {slot.index} could not start: {_first_line(e)}"
                ) from None
            if isinstance(info.ready, Fatal):
                raise RuntimeError(f"farm could not start: {info.ready.reason}")
            self._started_actor(slot, info)

    def _demand(self) -> str:
        """What each actor reserves, as Ray resources."""
        parts = [f"{self.cpus_per_worker:g} CPU"]
        if self.memory_per_worker_mb:
            parts.append(f"{self.memory_per_worker_mb} MB memory")
        parts += [f"{v:g} {k}" for k, v in self.resources.items()]
        return ", ".join(parts)

    def metrics(self) -> dict[str, Any]:
        """The farm's counters, with the build cap they ran under."""
        return {**super().metrics(), "max_concurrent_builds": self.max_concurrent_builds}

    def cache_stats(self) -> dict[str, int]:
        """The shared cache's own counts: hits, misses (claims granted) and open claims."""
        if self._cache_server is None:
            return {}
        return ray.get(self._cache_server.stats.remote())

    def worker_pids(self) -> list[int]:
        """Process ids of the started actors (on their own nodes)."""
        return list(self.placement())

    def placement(self) -> dict[int, str]:
        """Started actors: process id -> the Ray node id it runs on."""
        with self._lock:
            return {
                s.pid: s.node_id for s in self._slots if s.actor is not None and s.pid is not None
            }

    def _stop_workers(self) -> None:
        """Idle actors close their episodes and remove their own directories; the others are
        killed and swept on their nodes. Actors still starting (replacements) are waited for
        first: each has made its directory, which only its answer names."""
        with self._lock:
            self._await_starting(timeout_s=5.0)
            base_url = self.sandbox_opts.get("base_url")
            idle = {
                s.actor.shutdown.remote(self.sandbox_kind, base_url): s
                for s in self._slots
                if s.actor is not None and s.ready and s.job is None
            }
            if idle:
                done, _ = ray.wait(list(idle), num_returns=len(idle), timeout=10.0)
                for ref in done:
                    try:
                        ray.get(ref)
                        idle[ref].workdir = ""  # swept by the actor itself
                    except RayError:
                        pass
            for slot in self._slots:
                self._kill_slot(slot)
            sweeps, self._sweeps = self._sweeps, []
        if sweeps:
            ray.wait(sweeps, num_returns=len(sweeps), timeout=30.0)
        if self._cache_server is not None:
            ray.kill(self._cache_server)  # its directory stays: the next farm reads it
            self._cache_server = None
        if self._own_ray:
            ray.shutdown()

    def _await_starting(self, timeout_s: float) -> None:
        """Record where the actors still starting run (their node and directory), without
        replacing any that failed (the farm is closing)."""
        starting = {s.starting: s for s in self._slots if s.starting is not None}
        if not starting:
            return
        done, _ = ray.wait(list(starting), num_returns=len(starting), timeout=timeout_s)
        for ref in done:
            slot = starting[ref]
            try:
                info = ray.get(ref)
            except RayError:
                continue  # died while starting
            slot.starting = None
            slot.node_id, slot.workdir = info.node_id, info.workdir
            slot.ready = isinstance(info.ready, Ready)

    # ------------------------------------------------------------------ transport
    def _spawn(self, slot: _ActorSlot) -> None:
        slot.gen += 1
        opts: dict[str, Any] = {"num_cpus": self.cpus_per_worker, "max_restarts": 0}
        if self.memory_per_worker_mb:
            opts["memory"] = self.memory_per_worker_mb * 2**20
        if self.resources:
            opts["resources"] = self.resources
        cache = None
        if self._cache_server is not None:
            cache = SharedCache(self._cache_server, self.step_timeout_s)
        slot.actor = _RemoteActor.options(**opts).remote(
            slot.index, _owner(slot), self.sandbox_kind, self.sandbox_opts, self.faults, cache
        )
        slot.starting = slot.actor.info.remote()
        slot.call, slot.ready, slot.pid, slot.node_id, slot.workdir = None, False, None, "", ""
        slot.spawned_at, slot.job, slot.drops, slot.shipped = time.monotonic(), None, [], set()

    def _started_actor(self, slot: _ActorSlot, info: ActorInfo) -> None:
        slot.starting = None
        slot.node_id, slot.workdir = info.node_id, info.workdir
        if isinstance(info.ready, Ready):
            slot.ready, slot.pid, slot.failed_starts = True, info.ready.pid, 0
        else:
            self._restart(slot, info.ready.reason, failed_start=True)

    def _bundle(self, task: Task) -> tuple[str, ray.ObjectRef] | None:
        key = (task.id, str(task.root))
        if key not in self._bundles:
            b = pack_task(task)
            self._bundles[key] = None if b is None else (b.digest, ray.put(b))
        return self._bundles[key]

    def _transmit(self, slot: _ActorSlot, job: Job) -> bool:
        bundle = self._bundle(job.task)
        digest, ref = bundle if bundle is not None else (None, None)
        if digest is not None and digest in slot.shipped:
            ref = None  # the actor has it
        elif digest is not None:
            slot.shipped.add(digest)
        slot.call = slot.actor.run.remote(job, digest, ref)
        self._sent.set()
        return True

    def _room(self) -> int:
        """Jobs that may start under the build cap (sweeps of dead actors count as busy)."""
        busy = sum(s.job is not None for s in self._slots) + len(self._sweeps)
        return self.max_concurrent_builds - busy

    def _kill_slot(self, slot: _ActorSlot) -> None:
        """Kill the actor and sweep its directory on its node (processes it left, containers,
        workspaces); the sweep counts against the build cap until it is done."""
        if slot.actor is not None:
            try:
                ray.kill(slot.actor, no_restart=True)
            except (RayError, ValueError):
                pass
            if self._cache_server is not None:  # its cache claims die with it
                self._cache_server.release_owner.remote(_owner(slot))
        if slot.node_id and slot.workdir and self._node_alive(slot.node_id):
            strategy = NodeAffinitySchedulingStrategy(slot.node_id, soft=False)
            self._sweeps.append(
                _sweep_on_node.options(scheduling_strategy=strategy).remote(
                    slot.pid, slot.workdir, self.sandbox_kind, self.sandbox_opts.get("base_url")
                )
            )
        slot.actor, slot.starting, slot.call, slot.ready = None, None, None, False

    @staticmethod
    def _node_alive(node_id: str) -> bool:
        return any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())

    # ------------------------------------------------------------------ monitor
    def _watched(self) -> dict[Any, Slot | None]:
        self._sent.clear()
        refs: dict[Any, Slot | None] = {}
        for s in self._slots:
            if s.starting is not None:
                refs[s.starting] = s
            if s.call is not None:
                refs[s.call] = s
        for r in self._sweeps:
            refs[r] = None  # a dead actor's leftovers being removed
        return refs

    def _wait(self, watched: dict[Any, Slot | None]) -> list[Any]:
        """Returns as soon as one watched call finishes (with all others finished by then), or
        when a new job was sent while nothing was watched: a reply is handled within
        milliseconds, not at the next tick (that tick cost 75 ms per episode of no-op builds)."""
        if not watched:
            self._sent.wait(0.05)
            return []
        refs = list(watched)
        try:
            ready, _ = ray.wait(refs, num_returns=1, timeout=0.02)
            if ready and len(refs) > 1:
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            return ready
        except RayError:
            return []

    def _poll(self, refs: dict[Any, Any], done: list[Any]) -> None:
        for ref in done:
            slot = refs[ref]
            if slot is None:
                self._sweeps.remove(ref)
                continue
            try:
                value = ray.get(ref, timeout=0)
            except RayError as e:
                if ref is slot.starting or ref is slot.call:
                    self._restart(slot, f"worker died ({_first_line(e)})", ref is slot.starting)
                continue
            if ref is slot.starting:
                self._started_actor(slot, value)
            elif ref is slot.call:
                slot.call = None
                self._on_reply(slot, value)
        now = time.monotonic()
        for slot in self._slots:
            if slot.actor is not None and not slot.disabled:
                self._check_deadlines(slot, now)
        self._dispatch()


def _owner(slot: _ActorSlot) -> str:
    """The name an actor claims cache keys under: its slot and generation."""
    return f"w{slot.index}.{slot.gen}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"
