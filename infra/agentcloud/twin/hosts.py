"""The twin's droplets as real hosts: each a network namespace on its VPC's bridge, booted from its user-data.

Booting follows what the rendered user-data asks and what its units do, with the parts a namespace cannot
have stood in for:
- network: a veth on the VPC's bridge (the bridge holds the VPC's first address: the machine running the
  gateway sits there, as a gateway droplet in the VPC would), the droplet's private address, a default route;
- ``write_files``: files under /etc go to /etc/netns/<ns>/, which `ip netns exec` mounts over /etc for the
  droplet's processes (so /etc/agentcloud/engine.env is the droplet's own); the others under the droplet's
  folder;
- ``ssh_keys``: sshd on the private address with that host key, for the keys the twin authorizes (the
  gateway's), so SFTP delivery and host-key pinning are real;
- the engine's path unit: when /etc/agentcloud/engine.env appears, the rendered engine script runs, its
  `docker` being the twin's shim (docker_shim.py: llama-server on a tiny GGUF, same port, key and name);
- the firewall: the engine port admits only the VPC's gateway address (iptables in the namespace).

Needs root, `ip`, `iptables`, `sshd` and a llama-server binary. Every namespace, link, /etc/netns folder and
process it makes is removed by `close`. 127.0.0.1 is never used: everything lives in the VPC's range."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENGINE_ENV = "/etc/agentcloud/engine.env"
ENGINE_SCRIPT = "/usr/local/bin/agentcloud-engine"
BRIDGES = "bridges"  # the bridges a Hosts folder's droplets were on, one per line


def _ip(*args: str, ns: str | None = None) -> None:
    command = ["ip", *(["-n", ns] if ns else []), *args]
    subprocess.run(command, check=True, capture_output=True, timeout=15)


@dataclass
class Host:
    droplet_id: int
    ns: str
    address: str
    folder: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mount_point: str = "/mnt/agentcloud-models"  # where the model-cache service mounts the volume
    firewalled: bool = False


@dataclass
class Hosts:
    """Droplets as namespaces. ``authorized_keys``: public keys allowed to SSH in (the gateway's)."""

    folder: Path
    authorized_keys: str
    llama_server: str
    model: str
    prefix: str = "actw"
    engine_wait_s: float = 0.2
    hosts: dict[int, Host] = field(default_factory=dict)
    bridges: dict[str, str] = field(default_factory=dict)  # VPC range -> bridge name
    mount_points: set[Path] = field(default_factory=set)  # empty /etc folders made for `ip netns exec`
    gateway_address: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)

    def attach(self, twin: Any) -> None:
        """Boot every droplet the twin creates, remove every one it deletes."""

        def create(droplet: dict[str, Any], user_data: str | None) -> None:
            if droplet["name"] not in twin.faults.never_boot:  # a droplet that never boots: no host at all
                self.boot(droplet, user_data, twin.vpc_range(droplet))

        twin.on_create = create
        twin.on_delete = self.remove
        twin.on_attach = self.attach_volume

    # -- the twin's hook -------------------------------------------------------------------------------------
    def boot(self, droplet: dict[str, Any], user_data: str | None, vpc_range: str) -> None:
        n = int(droplet["id"])
        ns = f"{self.prefix}{n % 100000}"
        address = next(x["ip_address"] for x in droplet["networks"]["v4"] if x["type"] == "private")
        host = Host(n, ns, address, self.folder / ns)
        self.hosts[n] = host
        self._network(host, vpc_range)
        config = yaml.safe_load(user_data or "") or {}
        self._write_files(host, config.get("write_files") or [])
        prepare = self._path(host, "/usr/local/bin/agentcloud-prepare-cache")
        found = re.search(r"mountpoint -q ([^\s;]+)", prepare.read_text()) if prepare.exists() else None
        host.mount_point = found.group(1) if found else host.mount_point
        (host.folder / "mnt").mkdir(exist_ok=True)
        self._shims(host)
        self._sshd(host, config.get("ssh_keys") or {})
        threading.Thread(target=self._engine_unit, args=(host,), daemon=True).start()

    def attach_volume(self, droplet_id: int, volume: dict[str, Any]) -> None:
        """The model-cache service mounts the attached volume: the droplet's mount point becomes the volume's
        folder, which outlives the droplet (a replacement or a wake finds what the last one left)."""
        host = self.hosts.get(droplet_id)
        if host is None:
            return
        disk = self.folder / "volumes" / str(volume["id"])
        disk.mkdir(parents=True, exist_ok=True)
        point = host.folder / "mnt" / host.mount_point.removeprefix("/mnt/")
        point.parent.mkdir(parents=True, exist_ok=True)
        if not point.is_symlink():
            point.symlink_to(disk)

    def remove(self, droplet_id: int) -> None:
        host = self.hosts.pop(droplet_id, None)
        if host is None:
            return
        for proc in host.processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
        subprocess.run(["ip", "netns", "del", host.ns], capture_output=True, timeout=15)
        subprocess.run(["ip", "neigh", "flush", "to", host.address], capture_output=True, timeout=15)
        shutil.rmtree(Path("/etc/netns") / host.ns, ignore_errors=True)

    @staticmethod
    def sweep(folder: Path) -> list[str]:
        """Remove what a Hosts on ``folder`` left behind when its process died before `close` (killed):
        the namespaces named by its droplet folders, their /etc/netns folders, its bridges. Returns their
        names."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=15).stdout
        alive = {line.split()[0] for line in listed.splitlines() if line.strip()}
        gone = [p.name for p in folder.iterdir() if p.is_dir() and p.name in alive] if folder.is_dir() else []
        for ns in gone:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=15)
            for pid in pids.stdout.split():  # its sshd and engine outlived the process that started them
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=15)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        bridges = folder / BRIDGES
        for bridge in bridges.read_text().split() if bridges.exists() else []:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=15)
            gone.append(bridge)
        return gone

    def close(self) -> None:
        self._stop.set()
        for n in list(self.hosts):
            self.remove(n)
        for bridge in self.bridges.values():
            subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=15)
        self.bridges.clear()
        for target in self.mount_points:
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
        self.mount_points.clear()

    # -- boot steps ------------------------------------------------------------------------------------------
    def _network(self, host: Host, vpc_range: str) -> None:
        network = ipaddress.ip_network(vpc_range)
        gateway = str(next(network.hosts()))
        bridge = self.bridges.get(vpc_range)
        if bridge is None:
            bridge = f"{self.prefix}b{len(self.bridges)}"
            _ip("link", "add", bridge, "type", "bridge")
            # a bridge takes the lowest MAC of its ports unless given one: each droplet added or removed would
            # change the gateway's MAC under every other droplet's neighbour cache
            mac = hashlib.sha256(bridge.encode()).digest()[:4].hex(":")
            _ip("link", "set", bridge, "address", f"02:ac:{mac}")
            self.folder.mkdir(parents=True, exist_ok=True)
            with (self.folder / BRIDGES).open("a") as f:  # for `sweep`, should this process die first
                f.write(bridge + "\n")
            _ip("addr", "add", f"{gateway}/{network.prefixlen}", "dev", bridge)
            _ip("link", "set", bridge, "up")
            self.bridges[vpc_range] = bridge
        _ip("netns", "add", host.ns)
        outside = f"{host.ns}v"
        _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
        _ip("link", "set", outside, "master", bridge, "up")
        _ip("addr", "add", f"{host.address}/{network.prefixlen}", "dev", "eth0", ns=host.ns)
        _ip("link", "set", "eth0", "up", ns=host.ns)
        _ip("link", "set", "lo", "up", ns=host.ns)
        _ip("route", "add", "default", "via", gateway, ns=host.ns)
        # addresses are reused (a replaced droplet gets the first free one): forget the previous holder's MAC,
        # or the machine keeps sending to a veth that is gone until its neighbour entry expires (tens of s)
        _ip("neigh", "flush", "to", host.address, "dev", bridge)
        host.folder.mkdir(parents=True, exist_ok=True)
        (Path("/etc/netns") / host.ns).mkdir(parents=True, exist_ok=True)
        self.gateway_address = gateway

    def _path(self, host: Host, path: str) -> Path:
        if path.startswith("/etc/"):
            return Path("/etc/netns") / host.ns / path.removeprefix("/etc/")
        return host.folder / path.lstrip("/")

    def _write_files(self, host: Host, files: list[dict[str, Any]]) -> None:
        for entry in files:
            target = self._path(host, str(entry["path"]))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(str(entry.get("content", "")))
            target.chmod(int(str(entry.get("permissions", "0644")), 8))
        for folder in {p.parts[4] for p in (Path("/etc/netns") / host.ns).glob("*/*") if len(p.parts) > 4}:
            target = Path("/etc", folder)
            if not target.exists():  # `ip netns exec` mounts only over what exists; removed by close()
                target.mkdir()
                self.mount_points.add(target)

    def _sshd(self, host: Host, keys: dict[str, str]) -> None:
        key = host.folder / "ssh_host_ed25519_key"
        key.write_text(keys["ed25519_private"])
        key.chmod(0o600)
        authorized = host.folder / "authorized_keys"
        authorized.write_text(self.authorized_keys)
        authorized.chmod(0o600)
        config = host.folder / "sshd_config"
        config.write_text(
            f"ListenAddress {host.address}\nPort 22\nHostKey {key}\nAuthorizedKeysFile {authorized}\n"
            f"PidFile {host.folder / 'sshd.pid'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nUseDNS no\n"
            "Subsystem sftp internal-sftp\n"
            f"SetEnv PATH={host.folder / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/bin\n"
        )
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        with (host.folder / "sshd.log").open("wb") as log:  # the child keeps its own descriptor
            host.processes.append(
                subprocess.Popen(
                    self._in_droplet(host, sshd, "-D", "-e", "-f", str(config)), stdout=log, stderr=log
                )
            )

    def _in_droplet(self, host: Host, *argv: str) -> list[str]:
        """``argv`` on the droplet: its network namespace and /etc (`ip netns exec`), and its own /mnt (a bind
        mount in the mount namespace `ip netns exec` makes; it does not propagate back)."""
        mount = 'mount --bind "$0" /mnt && exec "$@"'
        return ["ip", "netns", "exec", host.ns, "sh", "-c", mount, str(host.folder / "mnt"), *argv]

    def _shims(self, host: Host) -> None:
        """What the droplet's image would have on its PATH: `docker` (the twin's shim: llama-server) and
        `systemctl` (start/restart of the engine unit, as a request to this twin's unit runner)."""
        shim = host.folder / "bin"
        shim.mkdir(exist_ok=True)
        docker = shim / "docker"
        docker.write_text(f'#!/bin/sh\nexec {sys.executable} -m agentcloud.twin.docker_shim "$@"\n')
        request = host.folder / "restart-requested"
        systemctl = shim / "systemctl"
        systemctl.write_text(
            "#!/bin/sh\n# systemctl on a twin droplet: (re)start of the engine asks the twin's unit runner\n"
            'case "$1 $2" in\n'
            f'  "restart agentcloud-engine"*|"start agentcloud-engine"*) : > {request}\n'
            f"    i=0; while [ -e {request} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done ;;\n"
            "esac\n"
        )
        for path in (docker, systemctl):
            path.chmod(0o755)

    def _unit(self, host: Host, name: str, key: str) -> list[str]:
        """The values of ``key`` in the droplet's rendered unit ``name`` (/etc/systemd/system)."""
        path = self._path(host, f"/etc/systemd/system/{name}")
        lines = path.read_text().splitlines() if path.exists() else []
        return [line.split("=", 1)[1].strip() for line in lines if line.startswith(f"{key}=")]

    def _engine_unit(self, host: Host) -> None:
        """agentcloud-engine.path and .service as systemd runs them: once the path unit's PathExists= holds,
        the service starts if its ConditionPathExists= all hold (else it is skipped, as systemd does),
        running its ExecStart=; `systemctl restart` (the shim) stops it and starts it again under the same
        conditions."""
        watched = self._unit(host, "agentcloud-engine.path", "PathExists") or [ENGINE_ENV]
        conditions = self._unit(host, "agentcloud-engine.service", "ConditionPathExists")
        command = (self._unit(host, "agentcloud-engine.service", "ExecStart") or [ENGINE_SCRIPT])[0]
        request = host.folder / "restart-requested"
        engine: subprocess.Popen[bytes] | None = None
        triggered = False
        while not self._stop.is_set() and host.droplet_id in self.hosts:
            restart = request.exists()
            if restart or (not triggered and all(self._path(host, p).exists() for p in watched)):
                triggered = True
                if engine is not None and engine.poll() is None:
                    engine.terminate()
                    engine.wait(10)
                engine = None
                if all(self._path(host, p).exists() for p in conditions):
                    engine = self._start_engine(host, self._path(host, command))
                request.unlink(missing_ok=True)
            time.sleep(self.engine_wait_s)

    def _start_engine(self, host: Host, script: Path) -> subprocess.Popen[bytes]:
        port = re.search(r"--port[ =](\d+)", script.read_text())
        self._firewall(host, int(port.group(1)) if port else 8000)
        env = {
            **os.environ,
            "PATH": f"{host.folder / 'bin'}:{os.environ.get('PATH', '')}",
            "AGENTCLOUD_TWIN_LLAMA_SERVER": self.llama_server,
            "AGENTCLOUD_TWIN_MODEL": self.model,
            "AGENTCLOUD_TWIN_HOST": host.address,
        }
        with (host.folder / "engine.log").open("ab") as log:  # the child keeps its own descriptor
            engine = subprocess.Popen(
                self._in_droplet(host, "sh", str(script)), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        host.processes.append(engine)
        return engine

    def _firewall(self, host: Host, port: int) -> None:
        """The deployment firewall's engine rule: only the VPC's gateway address reaches the engine port."""
        if host.firewalled:
            return
        host.firewalled = True
        for rule in (
            ["-A", "INPUT", "-p", "tcp", "--dport", str(port), "-s", self.gateway_address, "-j", "ACCEPT"],
            ["-A", "INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
        ):
            subprocess.run(
                ["ip", "netns", "exec", host.ns, "iptables", *rule],
                check=True,
                capture_output=True,
                timeout=15,
            )
