"""The ``ray`` engine's driver: one fill (one partition, or a single-run backfill of many) as shards on
Ray actors, from the Dagster step that stays its control plane.

1. The group's columns are declared once, here, and the driver holds one version lease for the whole fill,
   so maintenance cannot compact away the fragments the shards were planned on.
2. :func:`~mmfs_assets.engine.shards.plan_shards` cuts the partitions into shards of whole fragments, sized
   so every replica gets work.
3. One actor per replica (:class:`~mmfs_assets.engine.ray_replica.ShardReplica`) loads the model once; an
   idle actor takes the next shard. Each shard commits its own column-only chunks.
4. An actor (or its node) that dies: its shard runs again on a new actor, at most ``MMFS_SHARD_RETRIES``
   times (``shard_retries`` in the report); what the dead attempt committed is not computed again (rows
   already current are skipped, and a forced fill skips the fragments whose group file changed). A shard
   out of retries leaves its rows for the next run (the fill is incomplete, never wrong).
5. Cancelling the step (the UI's *Terminate*) kills the actors (their decode workers die with them):
   nothing keeps computing; a re-run finishes the rest from what was committed.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mmfs_assets.engine.fill_options import FillOptions, ModelSettings
from mmfs_assets.engine.ray_cluster import RayUnavailableError, Replicas, plan_replicas, ray_session
from mmfs_assets.engine.ray_replica import ReplicaSpec, ShardOutcome, ShardReplica, secret_digest
from mmfs_assets.engine.report import FillReport
from mmfs_assets.engine.shard_reports import FleetFill, merge_reports
from mmfs_assets.engine.shards import Shard, group_files, plan_shards
from mmfs_assets.features.models import ModelUnavailableError
from mmfs_assets.features.spec import Feature
from mmfs_assets.settings import Settings, split_storage_options
from mmfs_assets.table import ensure_group_columns
from mmfs_loader.contract.leases import VersionLease
from mmfs_loader.contract.table import TableRef

POLL_S = 10.0  # a progress line at least this often while shards run
REPLICA_START_S = 900.0  # a replica not ready (placed, model loaded) by then: the cluster cannot hold it


@dataclass
class _Running:
    shard: Shard
    attempt: int
    actor: Any


Progress = Callable[[str], Callable[[int, int], None]]


def fill_on_ray(table: TableRef, feature: Feature, drop_ids: Sequence[str], *, models: ModelSettings,
                options: FillOptions, settings: Settings, log: Callable[[str], None] = print,
                progress: Progress | None = None) -> FleetFill:
    """Fill ``feature`` for ``drop_ids`` on Ray (see the module docstring). ``progress(drop_id)(done, total)``
    hears each partition's rows as its shards finish."""
    with ray_session(settings) as ray:
        replicas = plan_replicas(ray, settings, models.device)
        driver = _Driver(ray, table, feature, list(dict.fromkeys(drop_ids)), models, options, settings, replicas, log)
        driver.progress = {d: progress(d) for d in driver.drop_ids} if progress else {}
        return driver.run()


class _Driver:
    def __init__(self, ray, table: TableRef, feature: Feature, drop_ids: list[str], models: ModelSettings,
                 options: FillOptions, settings: Settings, replicas: Replicas, log: Callable[[str], None]) -> None:
        self.ray, self.table, self.feature, self.drop_ids = ray, table, feature, drop_ids
        self.models, self.settings, self.replicas, self.log = models, settings, replicas, log
        self.token = secrets.token_hex(4)
        self.lease_label = f"{feature.name}_{self.token}"
        self.options = replace(options, decode_workers=options.decode_workers or replicas.decode_workers)
        self.outcomes: dict[str, list[ShardOutcome]] = {d: [] for d in drop_ids}
        self.failed: dict[str, list[str]] = {d: [] for d in drop_ids}
        self.retries: dict[str, int] = {d: 0 for d in drop_ids}
        self.shard_count: dict[str, int] = {d: 0 for d in drop_ids}
        self.planned_rows: dict[str, int] = {d: 0 for d in drop_ids}
        self.progress: dict[str, Callable[[int, int], None]] = {}
        self.started_at: dict[str, float] = {}  # the partition's first shard submitted (models already loaded)
        self.finished_at: dict[str, float] = {}
        self.actors: list[Any] = []
        self.running: dict[Any, _Running] = {}
        self.baseline: dict[int, str | None] = {}

    # -- actors ----------------------------------------------------------------------------------------
    def _actor_class(self):
        r = self.replicas
        return self.ray.remote(ShardReplica).options(num_gpus=r.num_gpus, num_cpus=r.num_cpus, max_restarts=0,
                                                      max_task_retries=0, name=None)

    def _spec(self) -> ReplicaSpec:
        public, _ = split_storage_options(dict(self.table.storage_options or {}))
        return ReplicaSpec(self.feature, self.version, self.table.uri, public,
                           secret_digest(self.table.storage_options), self.models, self.options)

    def _start(self, n: int) -> list[Any]:
        cls, spec = self._actor_class(), self._spec()
        actors = [cls.remote(spec, self.replicas.device) for _ in range(n)]
        infos = []
        for a in actors:  # the model loads once per actor, here: a model that cannot load fails the fill now
            try:
                infos.append(self.ray.get(a.info.remote(), timeout=REPLICA_START_S))
            except self.ray.exceptions.GetTimeoutError:
                self._kill(actors)
                raise RayUnavailableError(
                    f"{self.feature.name}: a model replica did not start within {REPLICA_START_S:.0f} s: the cluster "
                    f"has no room for {n} more of {self.replicas.describe()} (MMFS_RAY_REPLICAS, "
                    "MMFS_RAY_CPUS_PER_REPLICA), or loading the model takes longer") from None
            except self.ray.exceptions.RayActorError as e:
                self._kill(actors)
                raise ModelUnavailableError(_cause(e)) from None
        producers = {i["producer"] for i in infos}
        if len(producers) > 1:
            raise ModelUnavailableError(f"{self.feature.name}: replicas disagree on the producer ({sorted(producers)}): "
                                        "give every Ray worker the same model files and settings")
        self.producer, self.device = infos[0]["producer"], infos[0]["device"]
        return actors

    def _kill(self, actors: list[Any]) -> None:
        for a in actors:
            with contextlib.suppress(Exception):  # already dead
                self.ray.kill(a)

    def _replace(self, dead: Any) -> Any:
        """A new actor in place of one that died."""
        self._kill([dead])
        (new,) = self._start(1)
        self.actors[self.actors.index(dead)] = new
        return new

    # -- the fill --------------------------------------------------------------------------------------
    def run(self) -> FleetFill:
        t0 = time.perf_counter()
        ds = ensure_group_columns(self.table, self.feature.group)
        self.version = ds.version  # leased for the whole fill: the replicas' decode workers read it
        with VersionLease(self.table, ds.version, self.lease_label):
            shards = plan_shards(self.table, self.drop_ids, replicas=self.replicas.count,
                                 fragments_per_shard=self.settings.fill_fragments_per_shard or None)
            for s in shards:
                self.shard_count[s.drop_id] += 1
                self.planned_rows[s.drop_id] += s.rows
            if self.options.force:
                self.baseline = group_files(self.table, self.feature.group.producer_column,
                                            [f for s in shards for f in s.fragments])
            n = min(self.replicas.count, len(shards))
            if n:
                t = time.perf_counter()
                self.actors = self._start(n)
                self.log(f"{self.feature.name}: {len(shards)} shards of {len(self.drop_ids)} partitions on {n} of "
                         f"{self.replicas.describe()} (models loaded in {time.perf_counter() - t:.1f} s, producer "
                         f"{self.producer} on {self.device})")
                if len(shards) < self.replicas.count:
                    frags = sum(len(s.fragments) for s in shards)
                    self.log(f"{self.feature.name}: only {len(shards)} shards for {self.replicas.count} replicas: a shard is "
                             f"whole fragments and these partitions have {frags} (MMFS_FRAGMENT_ROWS sets the rows per "
                             "fragment when a drop is ingested)")
                try:
                    self._schedule(deque(shards), t0)
                finally:
                    self._stop()
        return self._result(t0)

    def _schedule(self, queue: deque, t0: float) -> None:
        ray = self.ray
        idle = list(self.actors)
        total, done, last_log = len(queue), 0, time.perf_counter()
        attempts: dict[Shard, int] = {}

        def submit(actor: Any, shard: Shard) -> None:
            attempts[shard] = attempts.get(shard, 0) + 1
            self.started_at.setdefault(shard.drop_id, time.perf_counter())
            frags = self._todo_fragments(shard) if attempts[shard] > 1 else None
            if frags == ():  # the killed attempt had committed every fragment
                self._record(ShardOutcome(shard, FillReport(self.feature.name, shard.drop_id, self.producer)))
                idle.append(actor)
                return
            self.running[actor.run.remote(shard, frags)] = _Running(shard, attempts[shard], actor)

        while queue or self.running:
            while queue and idle:
                submit(idle.pop(), queue.popleft())
            if not self.running:
                continue
            ready, _ = ray.wait(list(self.running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                r = self.running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayActorError as e:  # the replica (or its node) died: run the shard again
                    d = r.shard.drop_id
                    if r.attempt > self.settings.shard_retries:
                        self.failed[d].append(f"shard {r.shard.label()}: its replica died {r.attempt} times "
                                              f"(last: {_cause(e)[:200]})")
                        done += 1
                    else:
                        self.retries[d] += 1
                        self.log(f"{self.feature.name}: replica died during shard {r.shard.label()} "
                                 f"(attempt {r.attempt}); running it again on a new replica")
                        queue.appendleft(r.shard)
                    idle.append(self._replace(r.actor))
                    continue
                except ray.exceptions.RayTaskError as e:  # the fill raised: the shard's rows stay as they were
                    self.failed[r.shard.drop_id].append(f"shard {r.shard.label()}: {_cause(e)[:300]}")
                    done += 1
                    idle.append(r.actor)
                    continue
                self._record(outcome)
                done += 1
                idle.append(r.actor)
                self._progress(done, total, t0)
                last_log = time.perf_counter()
            if not ready and time.perf_counter() - last_log >= POLL_S:
                self._progress(done, total, t0)
                last_log = time.perf_counter()

    def _todo_fragments(self, shard: Shard) -> tuple[int, ...] | None:
        """A retried shard of a forced fill: its fragments whose group file the dead attempt did not replace."""
        if not self.options.force:
            return None  # rows the dead attempt committed are current now: the fill skips them by itself
        now = group_files(self.table, self.feature.group.producer_column, shard.fragments)
        return tuple(f for f in shard.fragments if now.get(f) == self.baseline.get(f))

    def _record(self, outcome: ShardOutcome) -> None:
        d = outcome.shard.drop_id
        self.outcomes[d].append(outcome)
        if outcome.incomplete:
            self.failed[d].append(outcome.incomplete)
        if len(self.outcomes[d]) + len(self.failed[d]) >= self.shard_count[d]:
            self.finished_at[d] = time.perf_counter()
        if d in self.progress:
            self.progress[d](min(self.planned_rows[d], sum(o.shard.rows for o in self.outcomes[d])), self.planned_rows[d])

    def _progress(self, done: int, total: int, t0: float) -> None:
        rows = sum(o.report.rows_written for outs in self.outcomes.values() for o in outs)
        secs = time.perf_counter() - t0
        self.log(f"{self.feature.name}: shards {done}/{total} done, {rows} videos in {secs:.0f} s "
                 f"({rows / secs if secs else 0:.2f} videos/s), shard retries {sum(self.retries.values())}")

    def _stop(self) -> None:
        """Kill every actor: a cancelled step leaves none computing (their decode workers die with them)."""
        self._kill(self.actors)

    def _result(self, t0: float) -> FleetFill:
        out = FleetFill({}, producer=getattr(self, "producer", ""), device=getattr(self, "device", self.replicas.device),
                        replicas=min(self.replicas.count, max(1, sum(self.shard_count.values()))))
        for d in self.drop_ids:
            parts = [o.report for o in self.outcomes[d]]
            secs = self.finished_at.get(d, time.perf_counter()) - self.started_at.get(d, t0)
            rep = merge_reports(self.feature.name, d, out.producer, parts, engine="ray", replicas=out.replicas,
                                seconds_total=secs, shard_retries=self.retries[d], shards=self.shard_count[d])
            out.reports[d] = rep
            if self.failed[d]:
                out.problems[d] = "; ".join(self.failed[d][:3]) + (f" (and {len(self.failed[d]) - 3} more)"
                                                                   if len(self.failed[d]) > 3 else "")
        return out


def _cause(e: BaseException) -> str:
    """The last line of a Ray error's text: the remote exception, not Ray's wrapping."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(e).__name__
