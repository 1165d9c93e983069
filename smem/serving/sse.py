"""Reading the API's Server-Sent Events stream, for Python clients and the tests.

Each event of `POST /chat/stream` is one `data:` line holding one JSON object, then a blank
line; `: ping` comment lines keep a quiet stream open. JSON never holds a raw newline (it is
escaped inside strings), so text with newlines, markup or any script survives intact.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator


def decode(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON payload of each event in a stream's lines (line endings stripped).

    Follows the SSE rules this API needs: `data:` lines of one event are joined with
    newlines, a blank line dispatches the event, comments and other fields are skipped, and
    an event cut off before its blank line is dropped.
    """
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield json.loads("\n".join(data))
                data = []
        elif line.startswith("data:"):
            value = line[len("data:"):]
            data.append(value[1:] if value.startswith(" ") else value)
