"""A private network of namespaces: one per node, each with a veth pair whose other end is a
port of a bridge in a "switch" namespace.

Every name carries the run's id (namespaces are global on the machine; two suites may run side
by side), the addresses are from a private /24 that only exists inside these namespaces, and
:meth:`Network.close` deletes every namespace it made (which removes their links too).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Network", "Node", "inside"]

CLONE_NEWNET = 0x40000000
"""setns(2)'s flag for a network namespace."""

NETNS_DIR = Path("/var/run/netns")
"""Where ``ip netns add`` mounts named namespaces."""

_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str) -> None:
    """Run ``ip ARGS``; a failure raises with ip's message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the calling thread in ``namespace`` while the context lasts: sockets made meanwhile
    (an HTTP client, a database connection) live there, and stay there afterwards."""
    with open("/proc/thread-self/ns/net") as home, open(NETNS_DIR / namespace) as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


@dataclass(frozen=True)
class Node:
    """One namespace of the network and its address on the bridge."""

    name: str
    namespace: str
    address: str
    port: str
    """Its port on the bridge, in the switch namespace (cut to isolate the node)."""

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this node's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class Network:
    """Namespaces joined by a bridge; made by :meth:`add`, all removed by :meth:`close`."""

    def __init__(self) -> None:
        self.run_id = secrets.token_hex(3)
        self.prefix = f"fhirbots-chaos-{self.run_id}"
        third = 1 + secrets.randbelow(250)
        self.subnet = f"10.{200 + secrets.randbelow(50)}.{third}"
        self.switch = f"{self.prefix}-switch"
        self.nodes: dict[str, Node] = {}
        self._made: list[str] = []

    @property
    def cidr(self) -> str:
        """The network's addresses, for FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS."""
        return f"{self.subnet}.0/24"

    def open(self) -> None:
        """Make the switch namespace and its bridge."""
        self._namespace(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def _namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def add(self, name: str) -> Node:
        """A new node ``name`` with the next address, linked to the bridge."""
        index = len(self.nodes) + 1
        node = Node(name, f"{self.prefix}-{name}", f"{self.subnet}.{index}", f"p{index}")
        self._namespace(node.namespace)
        ip(
            "link", "add", "eth0", "netns", node.namespace, "type", "veth",
            "peer", "name", node.port, "netns", self.switch,
        )  # fmt: skip
        ip("-n", self.switch, "link", "set", node.port, "master", "br0")
        ip("-n", self.switch, "link", "set", node.port, "up")
        ip("-n", node.namespace, "addr", "add", f"{node.address}/24", "dev", "eth0")
        ip("-n", node.namespace, "link", "set", "eth0", "up")
        self.nodes[name] = node
        return node

    def cut(self, node: Node) -> None:
        """Unplug ``node``'s cable at the switch: its packets go nowhere, nobody's reach it."""
        ip("-n", self.switch, "link", "set", node.port, "down")

    def mend(self, node: Node) -> None:
        """Plug ``node`` back in."""
        ip("-n", self.switch, "link", "set", node.port, "up")

    def close(self) -> None:
        """Delete every namespace made (their veth pairs and the bridge go with them)."""
        for name in reversed(self._made):
            with contextlib.suppress(RuntimeError):
                ip("netns", "delete", name)
        self._made.clear()
