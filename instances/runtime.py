"""Which instance a listening port belongs to, in this process: the server registers each
listener it opens, and the API looks the instance of a request up by the port it came in on."""

from __future__ import annotations

from instances.models import DEFAULT_INSTANCE

_by_port: dict[int, str] = {}


def register(port: int, name: str) -> None:
    _by_port[port] = name


def unregister(port: int) -> None:
    _by_port.pop(port, None)


def instance_for_port(port: int | None) -> str:
    """The instance served on `port`; the default one for a port we did not open (tests that
    call the app directly, or a server started some other way)."""
    if port is None:
        return DEFAULT_INSTANCE
    return _by_port.get(port, DEFAULT_INSTANCE)


def listening() -> dict[int, str]:
    return dict(_by_port)
