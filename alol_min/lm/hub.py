"""Access to the Hugging Face Hub: is it switched off, can it be reached, and the error to raise
when a named hub resource cannot be had. Asked before any download, so that a machine without a
network fails in seconds with a message that says what to do."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


class HubUnavailableError(ConnectionError):
    """A hub dataset or model was named but the hub is switched off or cannot be reached (and, for a
    model, it is not in the local Hugging Face cache either). A ConnectionError, hence an OSError."""


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set (1, true, yes, on): never try the hub."""
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the hub (HF_ENDPOINT, default huggingface.co:443) open within `timeout` s?

    Asked before any download so that a machine without network fails in seconds, not after the hub
    client's retries (about 50 s per file).
    """

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False
