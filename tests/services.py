"""Real Redis and PostgreSQL servers for tests, started on free 127.0.0.1 ports and stopped afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests.sshd import free_port, wait_for_port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def redis_server() -> Iterator[str]:
    with redis_process() as (url, _):
        yield url


@contextmanager
def redis_process(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server (on ``port``, else a free one): its URL and process (a test may stop it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (scripts/setup.sh installs it)")
    port = port or free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        if proc.poll() is None:
            _stop(proc)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@dataclass
class PgCluster:
    """A PostgreSQL server on a data directory of its own; a test may stop and start it again."""

    data: str
    port: int
    as_user: list[str]
    binary: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://agentcloud@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *self.as_user,
                self.binary,
                "-D",
                self.data,
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                self.data,
                "-c",
                "fsync=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, timeout_s=20)
        import psycopg

        deadline = time.monotonic() + 20
        while True:
            try:
                psycopg.connect(self.url).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (clients are disconnected, as when the server goes away under them)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pg_ctl = _pg_bin("pg_ctl")
        if pg_ctl is not None:
            subprocess.run(
                [*self.as_user, pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop"],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
        _stop(self.proc)


@contextmanager
def postgres_cluster() -> Iterator[PgCluster]:
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if initdb is None or postgres is None:
        pytest.skip("PostgreSQL server not installed (scripts/setup.sh installs postgresql)")
    as_user: list[str] = []
    data = tempfile.mkdtemp(prefix="agentcloud-pg-")
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = PgCluster(data, free_port(), as_user, postgres)
    try:
        subprocess.run(
            [*as_user, initdb, "-D", data, "-U", "agentcloud", "--auth=trust", "-E", "UTF8"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    with postgres_cluster() as cluster:
        yield cluster.url


@contextmanager
def prometheus_server(config: str, work: str) -> Iterator[str]:
    """A Prometheus server (the Debian package) with ``config`` as its prometheus.yml; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (scripts/setup.sh installs it)")
    path = os.path.join(work, "prometheus.yml")
    with open(path, "w") as f:
        f.write(config)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc, timeout_s=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)
