"""`ctc run --backend ray`: the runner's jobs on a Ray cluster (the `distributed` extra).

    parent (the driver)                                  any node of the cluster
      plan_jobs ─► queue ──evaluate.remote(job)──► EvaluatorActor × workers (spread over the nodes)
                    ▲                                 builds the Evaluator once: task network, tools,
                    │ re-queued                       feature cache (--cache, or the node's default)
                    └── the actor died ◄──ray.wait──  returns the image's records, writes nothing
      records ─► runner: drop keys already written, append, progress bar

The jobs and the Evaluator are the local pool's, and only the parent writes records, so
resume, the run fingerprint and the report do not know which backend ran. Each actor
holds one job at a time: a job then belongs to exactly one actor, and an actor that dies
(a node lost, a process killed, out of memory) hands back exactly that image, which goes
to the front of the queue and to a new actor. An image that kills its worker
MAX_ATTEMPTS times stops the run with one error line instead of killing workers forever.

Ray is imported only here, and this module only for --backend ray: `ctc` starts without it.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import deque

from common.errors import ConfigError, FcrsError

RAY_MISSING = "--backend ray needs Ray, which is not installed: pip install -e '.[distributed]'"
MAX_ATTEMPTS = 3
# Test hook (tests/ctc/test_ray_backend.py): the first actor exits, as if killed, on its Nth job.
EXIT_HOOK = "FCRS_CTC_RAY_EXIT_ON_JOB"
WAIT_SECONDS = 0.5          # ray.wait returns this often, so Ctrl-C is seen at once
# Ray gives its services the machine's network address even when one machine is the whole
# cluster; with this it uses the loopback one (read when ray is imported).
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
CONNECT_SECONDS = 5


def import_ray(local_instance=False):
    if local_instance:      # a Ray instance of our own serves this machine alone (read at import)
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


class EvaluatorActor:
    """One worker of the cluster: the local pool's Evaluator, built once, behind a Ray actor."""

    def __init__(self, config, weights, cache_root, exit_on_job=None):
        from ctc.feature_cache import DEFAULT_ROOT
        from ctc.runner import Evaluator

        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's: it stops the actors
        except ValueError:
            pass                                             # not the main thread: nothing to ignore
        self.exit_on_job = exit_on_job
        self.jobs_started = 0
        try:
            # no --cache: the node's own default cache, not the parent's path
            self.evaluator = Evaluator(config, weights, cache_root or DEFAULT_ROOT)
        except FcrsError as exc:        # reported with the first job, as one line
            self.evaluator = exc
        except Exception as exc:        # a node that cannot build it (a missing package, unreadable
            import socket               # weights): the set-up's fault, not the first image's

            self.evaluator = FcrsError(f"a worker on {socket.gethostname()} could not start: "
                                       f"{type(exc).__name__}: {_last_line(exc)}")

    def evaluate(self, job):
        self.jobs_started += 1
        if self.jobs_started == self.exit_on_job:
            os._exit(1)
        if isinstance(self.evaluator, Exception):
            return self.evaluator
        try:
            return self.evaluator.evaluate(job)
        except FcrsError as exc:        # carried to the parent as one line, not a traceback
            return exc


class RayBackend:
    """Connects to (or starts) a Ray instance and runs jobs on actors; `cluster` describes
    what it found, for the run's metadata."""

    def __init__(self, address=None, workers=None, gpus_per_worker=0.0):
        self.address = address
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.cluster = {}

    def check_installed(self):
        import_ray(local_instance=not self.address)

    def results(self, jobs, config, weights, cache_root, describe=lambda text: None):
        """Yields each job's records (or the FcrsError that stopped it), in completion order."""
        if not jobs:
            return
        ray = import_ray(local_instance=not self.address)
        started_here = not ray.is_initialized()
        if started_here:
            self._connect(ray)
        actors = []
        try:
            resources = ray.cluster_resources()
            nodes = sum(1 for node in ray.nodes() if node["Alive"])
            workers = min(self._worker_count(resources), len(jobs))
            self.cluster = {"address": self.address or "local", "nodes": nodes, "cpus": resources.get("CPU", 0),
                            "gpus": resources.get("GPU", 0), "workers": workers,
                            "gpus_per_worker": self.gpus_per_worker, "workers_replaced": 0}
            actor_class = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker, max_restarts=0,
                                     max_task_retries=0, scheduling_strategy="SPREAD")(EvaluatorActor)
            exit_hook = int(os.environ[EXIT_HOOK]) if os.environ.get(EXIT_HOOK) else None

            def start_actor(exit_on_job=None):
                actor = actor_class.remote(config, weights, str(cache_root) if cache_root else None, exit_on_job)
                actors.append(actor)
                return actor

            idle = [start_actor(exit_hook if i == 0 else None) for i in range(workers)]
            describe(_cluster_text(workers, nodes))
            queue = deque(range(len(jobs)))
            attempts = [0] * len(jobs)
            running = {}             # object ref -> (actor, job index)
            replaced = 0
            while queue or running:
                while idle and queue:
                    actor, index = idle.pop(), queue.popleft()
                    running[actor.evaluate.remote(jobs[index])] = (actor, index)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_SECONDS)
                for ref in ready:
                    actor, index = running.pop(ref)
                    try:
                        records = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:
                        attempts[index] += 1
                        if attempts[index] >= MAX_ATTEMPTS:
                            raise FcrsError(f"image {jobs[index][0].id}: its worker died {attempts[index]} times; "
                                            f"last: {_last_line(exc)}") from None
                        ray.kill(actor)
                        actors.remove(actor)
                        queue.appendleft(index)            # never lost: first in line for the new worker
                        idle.append(start_actor())
                        replaced += 1
                        self.cluster["workers_replaced"] = replaced
                        describe(f"{_cluster_text(workers, nodes)}, {replaced} replaced")
                        continue
                    idle.append(actor)
                    yield records
        finally:
            # Ctrl-C, an error or the end: no actor keeps working for a run that stopped.
            for actor in actors:
                ray.kill(actor)
            if started_here:
                ray.shutdown()

    def _connect(self, ray):
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
        _check_reachable(self.address, where)
        try:
            if self.address:
                ray.init(address=self.address, **quiet)
            else:
                ray.init(num_cpus=self.workers or os.cpu_count() or 1, include_dashboard=False, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot connect to {where}: {_last_line(exc)}") from None

    def _worker_count(self, resources):
        cpus = int(resources.get("CPU", 0))
        if self.gpus_per_worker:
            gpus = resources.get("GPU", 0)
            if gpus < self.gpus_per_worker:
                raise ConfigError(f"--gpus-per-worker {self.gpus_per_worker:g}: the Ray cluster has "
                                  f"{gpus:g} GPUs")
            cpus = min(cpus, int(gpus // self.gpus_per_worker))
        if cpus < 1:
            raise ConfigError("the Ray cluster has no CPU for a worker")
        # more actors than the cluster can place would wait for resources forever
        return min(self.workers, cpus) if self.workers else cpus


def _check_reachable(address, where):
    """A HOST:PORT nobody answers at is one error line within seconds (Ray itself retries for minutes)."""
    import socket

    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return                  # 'auto', ray://..., or a local instance: Ray's own checks
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ConfigError(f"cannot connect to {where}: {exc.strerror or exc}") from None


def _last_line(exc):
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _cluster_text(workers, nodes):
    return f"{workers} worker{'s' * (workers != 1)} on {nodes} node{'s' * (nodes != 1)}"
