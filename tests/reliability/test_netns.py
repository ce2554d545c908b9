"""Network faults between real hosts: three grid nodes, each a process in its
own network namespace with its own address, joined by a bridge.

Topology (names carry this process's pid, so parallel runs do not collide)::

    ns g<pid>n1  10.77.0.1 v1 --+
    ns g<pid>n2  10.77.0.2 v2 --+-- b1/b2/b3 ports of br0 in ns g<pid>br
    ns g<pid>n3  10.77.0.3 v3 --+

Each node is tests/peer_node.py started with ``ip netns exec`` and driven
over its ``--control`` channel (stdin/stdout pipes cross namespaces), so the
test process needs no address on that network and touches no interface of
the root namespace.  Faults:

- a silent cut: node 2's bridge port goes down (packets vanish, no RST, its
  own link stays up), and a hard cut: node 2's own interface goes down;
- latency and loss with ``tc qdisc ... netem`` (skipped, with the reason,
  when the kernel has no netem);
- then the link heals.

Asserted: calls fail fast with Disconnected or TimeoutError and never take
longer than their deadline (plus scheduling slack); streams across the cut
end with Disconnected within the keepalive bound; the unaffected link keeps
working; the connections come back after healing; every node's counters
(outstanding requests/streams, send queue depth, asyncio tasks) return to
their values before the fault.  The module is skipped when not root or when
``ip`` is missing; the namespaces are deleted even when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support import ControlPeer, run

if shutil.which("ip") is None:
    pytest.skip("the `ip` command (iproute2) is not installed", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("network namespaces need root", allow_module_level=True)

pytestmark = pytest.mark.slow

PING = 0.5  # ping_interval and stream_ping_interval of the nodes, seconds
SLACK = 0.5  # scheduling slack on top of any deadline or keepalive bound
PORT = 9000


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with its stderr on failure when ``check``."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


class Net:
    """The namespaces, bridge and veth pairs of one test module."""

    def __init__(self) -> None:
        tag = f"g{os.getpid()}"
        self.bridge_ns = f"{tag}br"
        self.node_ns = [f"{tag}n{i}" for i in (1, 2, 3)]
        self.addrs = [f"10.77.0.{i}" for i in (1, 2, 3)]
        self.hosts = [f"http://{a}:{PORT}" for a in self.addrs]
        self.netem: str | None = None  # why netem is unusable, or None if it works

    def create(self) -> None:
        ip("netns", "add", self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, (ns, addr) in enumerate(zip(self.node_ns, self.addrs), 1):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("link", "add", f"v{i}", "netns", ns, "type", "veth",
               "peer", "name", f"b{i}", "netns", self.bridge_ns)
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", f"v{i}")
            ip("-n", ns, "link", "set", f"v{i}", "up")
            ip("-n", self.bridge_ns, "link", "set", f"b{i}", "master", "br0")
            ip("-n", self.bridge_ns, "link", "set", f"b{i}", "up")
        r = subprocess.run(["ip", "netns", "exec", self.node_ns[1], "tc", "qdisc", "add", "dev",
                            "v2", "root", "netem", "delay", "1ms"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            self.netem = f"tc netem unavailable in this kernel: {r.stderr.strip()}"
        else:
            self.tc(2, "del", "dev", "v2", "root")

    def destroy(self) -> None:
        for ns in [*self.node_ns, self.bridge_ns]:
            ip("netns", "del", ns, check=False)

    def tc(self, node: int, *args: str) -> None:
        """``tc qdisc ARGS`` inside node ``node``'s namespace (1-based)."""
        subprocess.run(["ip", "netns", "exec", self.node_ns[node - 1], "tc", "qdisc", *args],
                       check=True, capture_output=True, timeout=10)

    def node(self, i: int, loop_kind: str) -> ControlPeer:
        """Node ``i`` (1-based), not yet started."""
        return ControlPeer(
            self.hosts[i - 1], self.hosts, prefix=["ip", "netns", "exec", self.node_ns[i - 1]],
            extra=["--ping-interval", str(PING), "--stream-ping-interval", str(PING),
                   "--retry-base", "0.2", "--loop", loop_kind])


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    """Three node namespaces on a bridge; always torn down."""
    n = Net()
    try:
        try:
            n.create()
        except RuntimeError as exc:
            pytest.skip(f"cannot build network namespaces here: {exc}")
        yield n
    finally:
        n.destroy()


class Grid:
    """The three node processes of one test."""

    def __init__(self, net: Net, loop_kind: str) -> None:
        self.net = net
        self.nodes = [net.node(i, loop_kind) for i in (1, 2, 3)]
        self.baseline: list[dict[str, Any]] = []

    async def start(self) -> None:
        await asyncio.gather(*(n.start() for n in self.nodes))
        await self.wait_all_connected(20)
        self.baseline = [await n.command("stats") for n in self.nodes]

    async def wait_all_connected(self, timeout: float) -> None:
        waits = [n.command("wait", answer_within=timeout + 5, host=h, timeout=timeout)
                 for n in self.nodes for h in self.net.hosts if h != n.local]
        for r in await asyncio.gather(*waits):
            assert r["ok"], r

    async def close(self) -> None:
        await asyncio.gather(*(n.kill() for n in self.nodes))

    async def assert_clean(self, timeout: float = 10) -> None:
        """Every node: all connections up, no mux or queued message left, no
        more tasks than before the fault (polled until ``timeout``)."""
        end = time.monotonic() + timeout
        for node, before in zip(self.nodes, self.baseline):
            while True:
                st = await node.command("stats")
                bad = {h: c for h, c in st["conns"].items()
                       if (c["state"], c["outstanding_requests"], c["outstanding_streams"],
                           c["send_queue_depth"]) != ("CONNECTED", 0, 0, 0)}
                if not bad and st["tasks"] <= before["tasks"]:
                    break
                assert time.monotonic() < end, (node.local, st, before["tasks"])
                await asyncio.sleep(0.05)


async def _wait_down(node: Any, host: str, until: float) -> None:
    """Poll ``node`` until its connection to ``host`` is no longer CONNECTED
    (monotonic deadline ``until``)."""
    while True:
        st = await node.command("stats")
        if st["conns"][host]["state"] != "CONNECTED":
            return
        assert time.monotonic() < until, (node.local, host, st["conns"][host])
        await asyncio.sleep(0.05)


def _only(counts: dict[str, int], allowed: set[str]) -> None:
    assert set(counts) <= allowed, counts


@pytest.mark.parametrize("cut", ["bridge-port", "node-link"])
def test_cut_link_fails_fast_and_heals(net: Net, loop_kind: str, cut: str) -> None:
    """Node 2 cut off (silently at the bridge, or by its own link going
    down), then healed."""

    def set_link(state: str) -> None:
        if cut == "bridge-port":
            ip("-n", net.bridge_ns, "link", "set", "b2", state)
        else:
            ip("-n", net.node_ns[1], "link", "set", "v2", state)

    async def main() -> None:
        g = Grid(net, loop_kind)
        n1, n2, n3 = g.nodes
        h1, h2, h3 = net.hosts
        try:
            await g.start()
            r = await n1.command("calls", host=h2, n=200, timeout=2)
            assert r["counts"] == {"ok": 200}, r
            # Long streams across the link that is about to go.
            streams = asyncio.ensure_future(
                n1.command("streams", answer_within=60, host=h2, n=20, items=10**9))
            streams_back = asyncio.ensure_future(
                n2.command("streams", answer_within=60, host=h1, n=20, items=10**9))
            await asyncio.sleep(0.3)  # let them flow (no readiness to wait on: they loop)
            set_link("down")
            t_cut = time.monotonic()
            try:
                # Calls into the cut: each ends by its deadline, as Disconnected
                # (keepalive noticed, or already down) or TimeoutError.
                during = await n1.command("calls", host=h2, n=100, timeout=1.0)
                _only(during["counts"], {"disconnected", "timeout"})
                assert during["max_elapsed"] < 1.0 + SLACK, during
                # The streams end with Disconnected within the keepalive bound.
                s = await asyncio.wait_for(streams, 3 * PING + 2 * SLACK)
                assert s["counts"] == {"disconnected": 20}, s
                detected = time.monotonic() - t_cut
                assert detected < 3 * PING + 2 * SLACK, detected
                print(f"{cut}: calls into the cut {during}, streams ended after {detected:.2f} s")
                # Once the loss is known, calls fail at once, not at their
                # 5 s deadline (the bound is loose: this machine is shared).
                after = await n1.command("calls", host=h2, n=100, timeout=5.0)
                assert after["counts"] == {"disconnected": 100}, after
                assert after["max_elapsed"] < 2 * SLACK, after
                # The link that was not cut keeps working throughout.
                other = await n1.command("calls", host=h3, n=200, timeout=2)
                assert other["counts"] == {"ok": 200}, other
                other = await n3.command("streams", host=h1, n=5, items=20, timeout=5)
                assert other["counts"] == {"ok": 5}, other
                # Node 2 sees it too, from its side (its pipes still work).
                back = await asyncio.wait_for(streams_back, 3 * PING + 2 * SLACK)
                assert back["counts"] == {"disconnected": 20}, back
                # Both ends of the 2-3 link notice the cut too, by keepalive.
                # (Healed before that, the TCP connection would survive and
                # its keepalive could still drop it just after the heal.)
                await _wait_down(n2, h3, t_cut + 3 * PING + 2 * SLACK)
                await _wait_down(n3, h2, t_cut + 3 * PING + 2 * SLACK)
            finally:
                set_link("up")
            await g.wait_all_connected(15)
            r = await n1.command("calls", host=h2, n=500, timeout=2)
            assert r["counts"] == {"ok": 500}, r
            r = await n2.command("streams", host=h3, n=10, items=20, timeout=5)
            assert r["counts"] == {"ok": 10}, r
            await g.assert_clean()
        finally:
            await g.close()
    run(loop_kind, main, timeout=120)


def test_latency_and_loss_then_heal(net: Net, loop_kind: str) -> None:
    """netem on node 2's link: 150 ms of delay, then 30% loss, then none."""
    if net.netem is not None:
        pytest.skip(net.netem)

    async def main() -> None:
        g = Grid(net, loop_kind)
        n1, n2, n3 = g.nodes
        h1, h2, h3 = net.hosts
        try:
            await g.start()
            net.tc(2, "add", "dev", "v2", "root", "netem", "delay", "150ms")
            try:
                # Deadlines shorter than the round trip: TimeoutError, on time.
                r = await n1.command("calls", host=h2, n=100, timeout=0.1)
                assert r["counts"] == {"timeout": 100}, r
                assert r["max_elapsed"] < 0.1 + SLACK, r
                # Longer ones succeed, slower.
                r = await n1.command("calls", host=h2, n=100, timeout=3)
                assert r["counts"] == {"ok": 100}, r
                assert r["max_elapsed"] >= 0.15, r
                r = await n1.command("streams", host=h2, n=5, items=3, timeout=10)
                assert r["counts"] == {"ok": 5}, r
                net.tc(2, "change", "dev", "v2", "root", "netem", "loss", "30%")
                # Under loss TCP retransmits: calls succeed late or time out,
                # none outlives its deadline; keepalive may drop the link.
                r = await n1.command("calls", host=h2, n=300, timeout=1.0)
                _only(r["counts"], {"ok", "timeout", "disconnected"})
                assert r["max_elapsed"] < 1.0 + SLACK, r
                r = await n3.command("calls", host=h1, n=200, timeout=2)
                assert r["counts"] == {"ok": 200}, r  # the clean link is untouched
            finally:
                net.tc(2, "del", "dev", "v2", "root")
            await g.wait_all_connected(15)
            r = await n1.command("calls", host=h2, n=500, timeout=2)
            assert r["counts"] == {"ok": 500}, r
            r = await n2.command("streams", host=h1, n=10, items=20, timeout=5)
            assert r["counts"] == {"ok": 10}, r
            await g.assert_clean()
        finally:
            await g.close()
    run(loop_kind, main, timeout=120)
