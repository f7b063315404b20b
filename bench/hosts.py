"""Hosts on one machine, for running workers "elsewhere": each a network namespace of its own
(``ip netns add``) joined to this one by a veth pair, with its own address, so a worker in
it reaches PostgreSQL over a network interface, not loopback. Only loopback and the
addresses made here are ever contacted. Also a private PostgreSQL cluster listening on the
hosts' gateway addresses (benchmarks), and a TCP forwarder from a gateway address to a
server on loopback (tests).

Needs root and iproute2 (and ``socat`` for the forwarder).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class Host:
    name: str  # the network namespace
    address: str  # the host's own address
    gateway: str  # this machine's end of the link: where the host reaches services

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the host."""
        return ["ip", "netns", "exec", self.name, *argv]


def unavailable() -> str | None:
    """Why hosts cannot be made here, or ``None``."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _free_prefix() -> str:
    """A 10.x.y prefix no interface of this machine uses."""
    used = subprocess.run(["ip", "-4", "addr"], check=True, capture_output=True, text=True).stdout
    for _ in range(100):
        prefix = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
        if f" {prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.x.y prefix for the hosts")


@contextlib.contextmanager
def hosts(n: int) -> Iterator[list[Host]]:
    """``n`` hosts, each a namespace with a /30 link to this machine; removed on exit."""
    tag = f"{random.getrandbits(24):06x}"
    prefix = _free_prefix()
    made: list[tuple[Host, str]] = []
    try:
        for i in range(n):
            host = Host(f"cw{tag}h{i}", f"{prefix}.{4 * i + 2}", f"{prefix}.{4 * i + 1}")
            outside, inside = f"cw{tag}{i}a", f"cw{tag}{i}b"
            _ip("netns", "add", host.name)
            made.append((host, outside))
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", host.name)
            _ip("addr", "add", f"{host.gateway}/30", "dev", outside)
            _ip("link", "set", outside, "up")
            _ip(
                "netns", "exec", host.name, "ip", "addr", "add", f"{host.address}/30", "dev", inside
            )
            _ip("netns", "exec", host.name, "ip", "link", "set", inside, "up")
            _ip("netns", "exec", host.name, "ip", "link", "set", "lo", "up")
        yield [host for host, _ in made]
    finally:
        for host, outside in made:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", host.name)
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", outside)


@contextlib.contextmanager
def forwarder(listen: str, port: int, target_port: int) -> Iterator[None]:
    """Forward TCP ``listen:port`` to ``127.0.0.1:target_port`` (socat), until exit."""
    proc = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{port},bind={listen},fork,reuseaddr",
            f"TCP:127.0.0.1:{target_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not any(
            c.laddr and c.laddr.ip == listen and c.laddr.port == port
            for c in psutil.Process(proc.pid).net_connections()
        ):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"socat did not listen on {listen}:{port}")
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Cluster:
    """A private PostgreSQL 15 cluster (stock settings, ``max_connections`` raised for many
    workers, plus ``settings``), listening on loopback and the hosts' gateways and trusting
    the hosts; removed on exit. Its server log is :attr:`log`."""

    def __init__(
        self, made: Sequence[Host] = (), port: int = 55432, settings: Sequence[str] = ()
    ) -> None:
        self.addresses = [host.gateway for host in made]
        self.clients = [host.address for host in made]
        self.port = port
        self.settings = list(settings)
        self.root = Path(tempfile.mkdtemp(prefix="chimeway-cluster-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, address: str, dbname: str) -> str:
        return f"postgresql://postgres@{address}:{self.port}/{dbname}"

    def _as_postgres(self, *argv: str) -> list[str]:
        """``argv`` as the ``postgres`` user when this is root (the server refuses root)."""
        return ["runuser", "-u", "postgres", "--", *argv] if _ROOT else list(argv)

    def __enter__(self) -> Cluster:
        if _ROOT:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            self._as_postgres(
                str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"
            ),
            check=True,
            capture_output=True,
        )
        with (self.data / "pg_hba.conf").open("a") as hba:
            for address in self.clients:
                hba.write(f"host all all {address}/32 trust\n")
        listen = ",".join(["127.0.0.1", *self.addresses])
        log = self.log
        with log.open("wb") as out:
            if _ROOT:
                shutil.chown(log, "postgres", "postgres")
            self.proc = subprocess.Popen(
                self._as_postgres(
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(self.data),
                    "-c",
                    f"listen_addresses={listen}",
                    "-c",
                    f"port={self.port}",
                    "-c",
                    f"unix_socket_directories={self.root}",
                    "-c",
                    "max_connections=400",
                    *(arg for setting in self.settings for arg in ("-c", setting)),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.__exit__()
                    raise RuntimeError(f"the cluster did not start: {log.read_text()}") from None
                time.sleep(0.2)
        return self

    def postmaster(self) -> psutil.Process | None:
        """The cluster's postmaster (runuser's child)."""
        if self.proc is None:
            return None
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children():
                if child.name() in ("postgres", "postmaster"):
                    return child
        return None

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the cluster's processes (live ones)."""
        master = self.postmaster()
        if master is None:
            return 0.0
        total = 0.0
        for proc in [master, *master.children()]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def __exit__(self, *_: object) -> None:
        master = self.postmaster()
        if master is not None:
            with contextlib.suppress(psutil.Error):
                master.send_signal(signal.SIGINT)  # fast shutdown
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                if master is not None:
                    with contextlib.suppress(psutil.Error):
                        master.kill()
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
