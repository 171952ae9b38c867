"""The device-side metric report: the host's real listening ports and established TCP connections, in Device
Defender's report format ("Device metrics document specification", https://docs.aws.amazon.com/iot/latest/
developerguide/detect-device-side-metrics.html), long key names. The built-in detector reads the same format
(lambdas/defense/detector/reports.py); a listening port is what gets a device contained, so the agent itself
never listens (see agent.py).

Read with psutil (from /proc/net on Linux): every socket of the host, not only the agent's.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import psutil

VERSION = "1.0"
# Defender's limits on listed entries (same page): at most 65535 ports; kept smaller here so a report stays
# far under the 128 KB MQTT payload limit. `total` always carries the real count.
MAX_LISTED = 256


def _listening(kind: str) -> dict[str, Any]:
    ports = set()
    for conn in psutil.net_connections(kind=kind):
        if not conn.laddr:
            continue
        if kind.startswith("tcp") and conn.status != psutil.CONN_LISTEN:
            continue
        if kind.startswith("udp") and conn.raddr:  # a connected UDP socket is a client, not a listener
            continue
        ports.add((conn.laddr.ip, conn.laddr.port))
    listed = sorted(ports, key=lambda item: (item[1], item[0]))[:MAX_LISTED]
    return {"ports": [{"interface": ip, "port": port} for ip, port in listed], "total": len(ports)}


def _established() -> dict[str, Any]:
    connections = [
        conn
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_ESTABLISHED and conn.raddr
    ]
    listed = [
        {
            "remote_addr": f"{conn.raddr.ip}:{conn.raddr.port}",
            "local_port": conn.laddr.port,
            "local_interface": conn.laddr.ip,
        }
        for conn in connections[:MAX_LISTED]
    ]
    return {"established_connections": {"connections": listed, "total": len(connections)}}


def _network_stats() -> dict[str, int]:
    counters = psutil.net_io_counters()
    return {
        "bytes_in": counters.bytes_recv,
        "bytes_out": counters.bytes_sent,
        "packets_in": counters.packets_recv,
        "packets_out": counters.packets_sent,
    }


def report(report_id: int | None = None) -> dict[str, Any]:
    """One report; `report_id` must increase from report to report (Defender): epoch milliseconds by
    default."""
    return {
        "header": {
            "report_id": int(time.time() * 1000) if report_id is None else report_id,
            "version": VERSION,
        },
        "metrics": {
            "listening_tcp_ports": _listening("tcp"),
            "listening_udp_ports": _listening("udp"),
            "network_stats": _network_stats(),
            "tcp_connections": _established(),
        },
    }


def own_listening_sockets(pid: int) -> list[tuple[str, int]]:
    """The TCP/UDP sockets a process listens on (tests use it on the agent's process: it must be empty)."""
    found = []
    for conn in psutil.Process(pid).net_connections(kind="inet"):
        if conn.type == socket.SOCK_STREAM and conn.status == psutil.CONN_LISTEN:
            found.append((conn.laddr.ip, conn.laddr.port))
        elif conn.type == socket.SOCK_DGRAM and conn.laddr and not conn.raddr:
            found.append((conn.laddr.ip, conn.laddr.port))
    return found
