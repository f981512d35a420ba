"""The host: sessions, commands, the runner, stores, config, CLI and telemetry. No platform APIs."""

from .host import Host
from .shapes import Inbound, Outbound, Poster, ThreadKey

__all__ = ["Host", "Inbound", "Outbound", "Poster", "ThreadKey"]
