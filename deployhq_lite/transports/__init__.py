"""Transports: the only code that touches servers (``local``, ``ssh``; ``memory`` for tests)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import BaseTransport, RemoteEntry, Transport, Upload

if TYPE_CHECKING:
    from ..config import ServerConfig

__all__ = [
    "BaseTransport",
    "RemoteEntry",
    "Transport",
    "Upload",
    "open_transport",
]


def open_transport(server: ServerConfig, *, label: str) -> Transport:
    """The transport for a configured server (not yet opened; use ``with``)."""
    if server.protocol_type == "local":
        from .local import LocalTransport  # the one a server uses loads, not both

        return LocalTransport(server.root, server=label)
    from .ssh.sftp import SFTPTransport  # paramiko is imported only for ssh servers

    return SFTPTransport(server, server=label)
