"""Whether the Hugging Face Hub can be reached, so offline use fails in seconds, not after retries."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

OFFLINE_VALUES = ("1", "on", "yes", "true")


def hub_offline() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)."""
    return any(os.environ.get(v, "").lower() in OFFLINE_VALUES for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection to the hub's endpoint (HF_ENDPOINT) opens within `timeout` seconds."""
    if hub_offline():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False
