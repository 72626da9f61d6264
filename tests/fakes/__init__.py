"""Fake chat platform servers on 127.0.0.1, speaking the real protocols, for offline tests."""

from __future__ import annotations

import json
from typing import Any


def encodable(data: Any) -> bool:
    """False if some text holds a lone UTF-16 surrogate, which is not valid UTF-8."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
