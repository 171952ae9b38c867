"""Device Defender device-side metrics reports, checked and reduced to the counts the detector uses.

Devices publish a report on the detector rule's Basic Ingest topic
(`shared.topics.metrics_report_topic`: `$aws/rules/<metrics rule>/dt/<thing>/metrics`; Defender's
own `$aws/things/<thing>/defender/metrics/json` is publish-only and reaches no rule); the rule
forwards it to the detector's stream as
`{"kind": "metrics", "thing": <topic(2)>, "client_id": <clientid()>, "report": <the report>}`.
Both key styles the Defender libraries write are read, long names and short names (one style per
report; a mix is invalid):

    long                     short  value
    header                   hed    object, required
      report_id              rid    integer >= 0, required (Defender: monotonically increasing)
      version                v      "1.0", required
    metrics                  met    object; every section in it is optional
      listening_tcp_ports    tp     {ports/pts?: [{port/pt: 0..65535, interface/if?: str}],
                                     total/t?: int >= 0}
      listening_udp_ports    up     the same as listening_tcp_ports
      network_stats          ns     {bytes_in/bi?, bytes_out/bo?, packets_in/pi?, packets_out/po?: int >= 0}
      tcp_connections        tc     {established_connections/ec?: {connections/cs?: [{remote_addr/rad: str,
                                     local_port/lp?: 0..65535, local_interface/li?: str}],
                                     total/t?: int >= 0}}
    custom_metrics           cmet   object (not used here, only its type is checked)

"A report can have both or at least one `metrics` or `custom_metrics` block" ("Device metrics
document specification", https://docs.aws.amazon.com/iot/latest/developerguide/
detect-device-side-metrics.html): a report with neither is invalid, one with custom_metrics only
is valid and counts as a message with nothing else to judge.

Unknown keys are refused at every level, integers must be JSON integers (no bool, no 1.0), and
strings are at most MAX_TEXT characters. A count is max(total, number of entries listed), so a
report cannot hide ports by under-stating `total`. Stdlib only (imported on the detector's
cold start), and fast enough for a report per device every few minutes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

MAX_TEXT = 256
MAX_PORT = 65_535
MAX_INT = 2**63 - 1
VERSION = "1.0"

_SHORT = {
    "header": "hed", "report_id": "rid", "version": "v", "metrics": "met", "custom_metrics": "cmet",
    "listening_tcp_ports": "tp", "listening_udp_ports": "up", "ports": "pts", "port": "pt",
    "interface": "if", "total": "t", "network_stats": "ns", "bytes_in": "bi", "bytes_out": "bo",
    "packets_in": "pi", "packets_out": "po", "tcp_connections": "tc", "established_connections": "ec",
    "connections": "cs", "remote_addr": "rad", "local_port": "lp", "local_interface": "li",
}
_LONG = {name: name for name in _SHORT}


class InvalidReport(ValueError):
    """The report is not a valid Defender metrics report; `reason` is a fixed text, safe to log."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ReportCounts(NamedTuple):
    """What the detector judges; None where the report has no such section."""

    listening_tcp_ports: int | None
    listening_udp_ports: int | None
    established_tcp_connections: int | None


def _object(value: Any, keys: dict[str, str], allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    """value as {long name: value}; InvalidReport if it is not an object of only `allowed` keys."""
    if type(value) is not dict:
        raise InvalidReport(f"{where} is not an object")
    out = {}
    names = {keys[name]: name for name in allowed}
    for key, item in value.items():
        name = names.get(key)
        if name is None:
            raise InvalidReport(f"unknown key in {where}")
        out[name] = item
    return out


def _integer(value: Any, where: str, high: int = MAX_INT) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise InvalidReport(f"{where} is not an integer in 0..{high}")
    return value


def _text(value: Any, where: str) -> str:
    if type(value) is not str or len(value) > MAX_TEXT:
        raise InvalidReport(f"{where} is not a string of at most {MAX_TEXT} characters")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if type(value) is not list:
        raise InvalidReport(f"{where} is not a list")
    return value


def _ports(value: Any, keys: dict[str, str], where: str) -> int:
    section = _object(value, keys, ("ports", "total"), where)
    listed = 0
    if "ports" in section:
        ports = _list(section["ports"], f"{where}.ports")
        for entry in ports:
            port = _object(entry, keys, ("port", "interface"), f"{where}.ports[]")
            if "port" not in port:
                raise InvalidReport(f"{where}.ports[] has no port")
            _integer(port["port"], f"{where}.ports[].port", MAX_PORT)
            if "interface" in port:
                _text(port["interface"], f"{where}.ports[].interface")
        listed = len(ports)
    total = _integer(section["total"], f"{where}.total") if "total" in section else 0
    return max(total, listed)


def _established(value: Any, keys: dict[str, str]) -> int | None:
    section = _object(value, keys, ("established_connections",), "tcp_connections")
    if "established_connections" not in section:
        return None
    where = "established_connections"
    established = _object(section["established_connections"], keys, ("connections", "total"), where)
    listed = 0
    if "connections" in established:
        connections = _list(established["connections"], f"{where}.connections")
        for entry in connections:
            connection = _object(entry, keys, ("remote_addr", "local_port", "local_interface"),
                                 f"{where}.connections[]")
            if "remote_addr" not in connection:
                raise InvalidReport(f"{where}.connections[] has no remote_addr")
            _text(connection["remote_addr"], f"{where}.connections[].remote_addr")
            if "local_port" in connection:
                _integer(connection["local_port"], f"{where}.connections[].local_port", MAX_PORT)
            if "local_interface" in connection:
                _text(connection["local_interface"], f"{where}.connections[].local_interface")
        listed = len(connections)
    total = _integer(established["total"], f"{where}.total") if "total" in established else 0
    return max(total, listed)


def parse_report(report: Any) -> ReportCounts:
    """A decoded report -> its counts, or InvalidReport(reason)."""
    if type(report) is not dict:
        raise InvalidReport("report is not an object")
    if "header" in report or "metrics" in report or "custom_metrics" in report:
        keys = _LONG
    elif "hed" in report or "met" in report or "cmet" in report:
        keys = _SHORT
    else:
        raise InvalidReport("report has no header")
    top = _object(report, keys, ("header", "metrics", "custom_metrics"), "report")
    if "header" not in top:
        raise InvalidReport("report has no header")
    header = _object(top["header"], keys, ("report_id", "version"), "header")
    if "report_id" not in header or "version" not in header:
        raise InvalidReport("header needs report_id and version")
    _integer(header["report_id"], "header.report_id")
    if header["version"] != VERSION or type(header["version"]) is not str:
        raise InvalidReport(f"header.version is not {VERSION!r}")
    if "custom_metrics" in top and type(top["custom_metrics"]) is not dict:
        raise InvalidReport("custom_metrics is not an object")
    if "metrics" not in top:
        if "custom_metrics" not in top:
            raise InvalidReport("report has neither metrics nor custom_metrics")
        return ReportCounts(None, None, None)  # custom metrics only: valid, nothing to judge here
    metrics = _object(top["metrics"], keys, ("listening_tcp_ports", "listening_udp_ports", "network_stats",
                                             "tcp_connections"), "metrics")
    tcp = _ports(metrics["listening_tcp_ports"], keys, "listening_tcp_ports") \
        if "listening_tcp_ports" in metrics else None
    udp = _ports(metrics["listening_udp_ports"], keys, "listening_udp_ports") \
        if "listening_udp_ports" in metrics else None
    if "network_stats" in metrics:
        stats = _object(metrics["network_stats"], keys,
                        ("bytes_in", "bytes_out", "packets_in", "packets_out"), "network_stats")
        for name, value in stats.items():
            _integer(value, f"network_stats.{name}")
    established = _established(metrics["tcp_connections"], keys) if "tcp_connections" in metrics else None
    return ReportCounts(tcp, udp, established)
