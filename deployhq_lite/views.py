"""Read models for the faces: the JSON shapes the CLI (``--json``) and the HTTP API share.

DeployHQ's shapes: a page of a list is ``{"pagination": {...}, "records": [...]}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def page_of(records: Sequence[Any], *, page: int, per_page: int, total: int) -> dict[str, Any]:
    """``records`` (page ``page``, counting from 1, of ``total`` records) with DeployHQ's
    ``pagination`` object beside them."""
    return {
        "pagination": {
            "current_page": page,
            "total_pages": max(1, -(-total // per_page)),
            "total_records": total,
            "offset": (page - 1) * per_page,
            "per_page": per_page,
        },
        "records": list(records),
    }
