"""Which instance a listening port belongs to, in this process: the supervisor registers each
listener it opens, and the API looks the instance of a request up by the port it came in on.

Listeners are keyed on the instance's id, never its name: a rename changes nothing here, so a
request can never be served with another instance's policy while the name changes.

The table is the process's Runtime's (`Runtime.listeners`, proxy/runtime.py): the supervisor
of `iflow2api serve` fills it, the API adapter and CORS read it, and Django's ALLOWED_HOSTS
check (iflow2api_site/hosts.py) follows it. Tests build their own.
"""

from __future__ import annotations

NO_INSTANCE = 0  # no row has id 0: the directory finds nothing and the request is refused
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class Listeners:
    """port → instance id, and port → the address it listens on. Written by the supervisor on
    the event loop; read by requests (the loop) and the host check (Django's threads): each
    change is one dict store, which readers see whole."""

    def __init__(self) -> None:
        self.by_port: dict[int, int] = {}  # port → instance id
        self.hosts: dict[int, str] = {}  # port → the address it listens on

    def register(self, port: int, instance_id: int, host: str = "") -> None:
        self.by_port[port] = instance_id
        self.hosts[port] = host

    def unregister(self, port: int) -> None:
        """Forgets the port (tests). The supervisor does not call it when it closes a listener:
        connections that listener accepted carry on, and their requests stay its instance's."""
        self.by_port.pop(port, None)
        self.hosts.pop(port, None)

    def instance_for_port(self, port: int | None) -> int | None:
        """The id of the instance served on `port`. None when this process opened no listener
        (tests that call the app directly, a server started some other way): the default
        instance. NO_INSTANCE for a port this process never opened while it serves others."""
        if not self.by_port:
            return None
        if port is None:
            return NO_INSTANCE
        return self.by_port.get(port, NO_INSTANCE)

    def host_names(self) -> list[str]:
        """The names the listeners answer to, as a Host header spells them (IPv6 in brackets);
        a wildcard address (0.0.0.0, ::) names nothing: clients reach it by names we cannot
        know."""
        names = []
        for host in list(self.hosts.values()):
            if host in WILDCARDS:
                continue
            names.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
        return names


def host_port(host: str, port: int) -> str:
    """An address as people write it: IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
