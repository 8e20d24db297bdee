"""A Ray cluster that lives inside one multi-node Slurm job (one task per node).

    node 0: ray start --head (random free ports, token auth, short temp dir) -> head.json
    node k: waits for head.json of this (re)start -> ray start --address=... (own ports, own temp dir)
            -> blocks until node 0 writes done.<restart> (or its Ray dies)
    node 0: driver connects with the token, waits until every node is alive, runs the payload,
            then writes done.<restart> and stops its Ray

Rendezvous files live in `rdv` (`<sweep.out>/slurm/<jobid>/`, on the shared filesystem):

    auth_token           the cluster's token, mode 600, regenerated at every (re)start
    head.json            {"address", "restart", "job_id", "nodes", "worker_ports", "token_path"}, mode 600
    cluster.json         what the driver saw once all nodes had joined (nodes alive, CPUs, seconds)
    done.<restart>       written by node 0 when the payload is over: workers stop their Ray
    ray-node<k>.<restart>.log   stdout/stderr of `ray start` on node k

Every Ray process gets RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<rdv>/auth_token: a client
without that token (or with another one) is refused by the GCS. Several jobs may share a host
(the local test cluster runs both "nodes" on one machine), so nothing uses Ray's fixed default
ports: every port is picked free at start, and each node gets its own disjoint worker-port block.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from workloads.run_dir import atomic_write

WORKER_PORTS = 200  # worker ports per node (one per concurrently alive Ray worker process)
WORKER_PORT_SPAN = (20000, 32000)  # below Linux's ephemeral range, so outgoing connections never take them
JOIN_TIMEOUT_S = float(os.environ.get("ENERGY_AT_RAY_JOIN_TIMEOUT", 600))
START_TIMEOUT_S = float(os.environ.get("ENERGY_AT_RAY_START_TIMEOUT", 180))
MAX_TEMP_DIR = 40  # AF_UNIX socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must stay < 108 bytes


class RayClusterError(RuntimeError):
    pass


def _port_is_free(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports that are free right now (picked by the kernel)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def worker_port_base(nodes: int, width: int = WORKER_PORTS, tries: int = 50) -> int:
    """Start of `nodes` consecutive blocks of `width` ports, all free now (node k uses block k)."""
    lo, hi = WORKER_PORT_SPAN
    total = nodes * width
    for _ in range(tries):
        base = random.randrange(lo, hi - total)
        if all(_port_is_free(p) for p in range(base, base + total, 7)):  # a sample: cheap and good enough
            return base
    raise RayClusterError(f"no free block of {total} ports in {lo}-{hi}")


def temp_dir(job_id: str, node: int) -> Path:
    """A short per-node Ray temp dir (both "nodes" may be one host, so one dir per node)."""
    base = os.environ.get("ENERGY_AT_RAY_TMPDIR", "/tmp")
    path = Path(base) / f"ray_{job_id}_n{node}"
    if len(str(path)) > MAX_TEMP_DIR:
        path = Path("/tmp") / f"ray_{job_id}_n{node}"
    return path


def ray_env(token_path: Path) -> dict[str, str]:
    """Environment for every Ray process of the cluster (and the driver): token auth on."""
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):  # a token from the user's shell must not win over ours
        env.pop(key, None)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path), RAY_USAGE_STATS_ENABLED="0",
               # SIGTERM (our stop, scancel, requeue) stops the node now: no 30 s drain (it only helps Serve)
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    return env


def _ray_client_available() -> bool:
    try:
        from ray._private.utils import get_ray_client_dependency_error
    except ImportError:
        return False
    return get_ray_client_dependency_error() is None


def _ray_exe() -> list[str]:
    exe = Path(sys.executable).with_name("ray")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


@dataclass
class HeadInfo:
    address: str
    restart: int
    job_id: str
    nodes: int
    worker_ports: int  # base of the worker-port blocks: node k uses [base + k*WORKER_PORTS, ...)
    token_path: str


class SlurmRayCluster:
    """One node's part of the Ray cluster of a Slurm job (see the module docstring)."""

    def __init__(self, rdv: Path, job_id: str, node: int, nodes: int, restart: int = 0,
                 num_cpus: int | None = None, num_gpus: int = 0, object_store_bytes: int | None = None,
                 dashboard: bool = False):
        self.rdv, self.job_id, self.node, self.nodes, self.restart = Path(rdv), str(job_id), node, nodes, restart
        self.num_cpus = num_cpus if num_cpus is not None else int(os.environ.get("SLURM_CPUS_ON_NODE", os.cpu_count() or 1))
        self.num_gpus, self.object_store_bytes, self.dashboard = num_gpus, object_store_bytes, dashboard
        self.token_path = self.rdv / "auth_token"
        self.temp_dir = temp_dir(self.job_id, node)
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None
        self.driver = False
        self.rdv.mkdir(parents=True, exist_ok=True)

    # --- files --------------------------------------------------------------------------------------
    @property
    def head_json(self) -> Path:
        return self.rdv / "head.json"

    @property
    def done_file(self) -> Path:
        return self.rdv / f"done.{self.restart}"

    @property
    def log_file(self) -> Path:
        return self.rdv / f"ray-node{self.node}.{self.restart}.log"

    def head_info(self) -> HeadInfo | None:
        try:
            info = HeadInfo(**json.loads(self.head_json.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return info if info.restart == self.restart and info.job_id == self.job_id else None

    # --- starting Ray -------------------------------------------------------------------------------
    def _start(self, extra: list[str], worker_base: int) -> None:
        """`ray start --block` for this node, with every port random/free; waits until it is up."""
        gcs, nm, om, dash, agent_http, agent_grpc, rt_env, metrics, client = free_ports(9)
        lo = worker_base + self.node * WORKER_PORTS
        args = [*_ray_exe(), "start", "--block", *extra,
                f"--node-manager-port={nm}", f"--object-manager-port={om}",
                f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--runtime-env-agent-port={rt_env}", f"--metrics-export-port={metrics}",
                f"--min-worker-port={lo}", f"--max-worker-port={lo + WORKER_PORTS - 1}",
                f"--temp-dir={self.temp_dir}", f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}",
                "--disable-usage-stats"]
        if self.node == 0:
            args += [f"--port={gcs}", f"--dashboard-port={dash}",
                     f"--include-dashboard={'true' if self.dashboard else 'false'}"]
            if _ray_client_available():  # else Ray refuses the flag; without ray[client] no client server runs
                args.append(f"--ray-client-server-port={client}")
        if self.object_store_bytes:
            args.append(f"--object-store-memory={self.object_store_bytes}")
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        current = self.temp_dir / "ray_current_cluster"
        current.unlink(missing_ok=True)
        log = open(self.log_file, "ab")
        print(f"[ray-cluster] node {self.node}: {' '.join(args)}", flush=True)
        # Own session: on a stop we can signal exactly the processes this node started.
        self.proc = subprocess.Popen(args, env=ray_env(self.token_path), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not current.exists():
            if self.proc.poll() is not None:
                raise RayClusterError(f"ray start on node {self.node} exited with {self.proc.returncode}; "
                                      f"see {self.log_file}:\n{_tail(self.log_file)}")
            if time.monotonic() > deadline:
                raise RayClusterError(f"ray start on node {self.node} not up after {START_TIMEOUT_S:.0f}s; "
                                      f"see {self.log_file}")
            time.sleep(0.2)
        self.address = current.read_text().strip()

    def start_head(self) -> str:
        """Node 0: new token, Ray head on free ports, head.json for the other nodes. Returns the address."""
        atomic_write(self.token_path, secrets.token_hex(32), 0o600)
        base = worker_port_base(self.nodes)
        self._start(["--head"], base)
        info = HeadInfo(self.address, self.restart, self.job_id, self.nodes, base, str(self.token_path))
        atomic_write(self.head_json, json.dumps(asdict(info), indent=1), 0o600)
        print(f"[ray-cluster] head up at {self.address} (job {self.job_id}, restart {self.restart}, "
              f"token auth on, temp dir {self.temp_dir})", flush=True)
        return self.address

    def run_worker(self) -> dict:
        """Node k > 0: join the head of this (re)start, then block until node 0 says done."""
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while (info := self.head_info()) is None:
            if self.done_file.exists():
                return {"node": self.node, "joined": False, "reason": "head finished before this node joined"}
            if time.monotonic() > deadline:
                raise RayClusterError(f"node {self.node}: no head.json for restart {self.restart} after "
                                      f"{JOIN_TIMEOUT_S:.0f}s in {self.rdv}")
            time.sleep(0.5)
        self.token_path = Path(info.token_path)
        started = time.monotonic()
        try:
            self._start([f"--address={info.address}"], info.worker_ports)
            print(f"[ray-cluster] node {self.node} joined {info.address}", flush=True)
            while not self.done_file.exists():
                if self.proc.poll() is not None:
                    print(f"[ray-cluster] node {self.node}: Ray exited ({self.proc.returncode})", flush=True)
                    break
                time.sleep(1)
        finally:
            self.stop_processes()
            if self.done_file.exists():
                self.cleanup()
        return {"node": self.node, "joined": True, "seconds": round(time.monotonic() - started, 1)}

    # --- the driver on node 0 -----------------------------------------------------------------------
    def connect(self, runtime_env: dict | None = None, timeout_s: float = JOIN_TIMEOUT_S) -> dict:
        """Connect this process as the driver (with the token) and wait until all nodes are alive."""
        os.environ.update({k: v for k, v in ray_env(self.token_path).items()
                           if k.startswith("RAY_")})
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ.pop("RAY_ADDRESS", None)
        import ray

        _reload_auth_config()
        t0 = time.monotonic()
        ray.init(address=self.address, log_to_driver=True, runtime_env=runtime_env)
        self.driver = True
        while (alive := [n for n in ray.nodes() if n["Alive"]]) and len(alive) < self.nodes:
            if time.monotonic() - t0 > timeout_s:
                raise RayClusterError(f"only {len(alive)} of {self.nodes} nodes joined after {timeout_s:.0f}s")
            time.sleep(0.5)
        seen = {"job_id": self.job_id, "restart": self.restart, "address": self.address,
                "nodes_expected": self.nodes, "nodes_alive": len(alive),
                "node_ids": sorted(n["NodeID"] for n in alive),
                "cpus": ray.cluster_resources().get("CPU", 0), "gpus": ray.cluster_resources().get("GPU", 0),
                "seconds_to_join": round(time.monotonic() - t0, 1), "token_auth": True}
        atomic_write(self.rdv / "cluster.json", json.dumps(seen, indent=1))
        print(f"[ray-cluster] {len(alive)}/{self.nodes} nodes alive, {seen['cpus']:g} CPUs, "
              f"{seen['gpus']:g} GPUs", flush=True)
        return seen

    # --- stopping -----------------------------------------------------------------------------------
    def finish(self, graceful: bool = True) -> None:
        """Node 0: tell the workers to stop, disconnect the driver, stop the head."""
        atomic_write(self.done_file, f"{time.time()}\n")
        if self.driver and graceful:
            import ray

            ray.shutdown()
        self.driver = False
        self.stop_processes()

    def stop_processes(self, timeout_s: float = 20) -> None:
        """SIGTERM to our `ray start --block` (it stops the Ray processes it started), KILL after a while."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
        # Whatever this node's Ray left in its session (our own process group), and nothing else.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def cleanup(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _reload_auth_config() -> None:
    """Make this process see RAY_AUTH_MODE/RAY_AUTH_TOKEN_PATH set after `ray` was imported.

    Ray reads them into a cached config at import; this is what Ray itself does when it turns
    token auth on for a process (ray._private.authentication.authentication_token_setup).
    """
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def probe(address: str, token: str | None = None, token_path: str | None = None) -> dict:
    """Ask the GCS at `address` for its nodes as a client with this token, or with none.

    {"ok": True, "nodes_alive": n} or {"ok": False, "error": "..."}. With neither `token` nor
    `token_path` the client runs with RAY_AUTH_MODE=disabled (sends no token).
    """
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        os.environ.pop(key, None)
    os.environ["RAY_AUTH_MODE"] = "token" if (token or token_path) else "disabled"
    if token:
        os.environ["RAY_AUTH_TOKEN"] = token
    elif token_path:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    _reload_auth_config()
    from ray._raylet import GcsClient

    try:
        nodes = GcsClient(address=address).get_all_node_info(timeout=10)
    except Exception as e:  # AuthenticationError when the token is missing or wrong
        return {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return {"ok": True, "nodes_alive": sum(1 for n in nodes.values() if n.state == 0)}


def _main(argv: list[str]) -> int:
    """python -m cluster.ray_cluster probe <address> [--token-file F | --token T]  (one JSON line)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m cluster.ray_cluster")
    p.add_argument("command", choices=["probe"])
    p.add_argument("address")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--token-file")
    g.add_argument("--token")
    args = p.parse_args(argv)
    result = probe(args.address, token=args.token, token_path=args.token_file)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
