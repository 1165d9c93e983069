"""Counts in messages people read: "1 memory", "2 memories", never "1 memories".

In the lowest layer so that every layer's messages (a full queue, an upload over a limit,
the app's status line) count the same way; a limit a deployment sets to 1 must not read
"at most 1 memories".
"""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """A count with its noun in the right number: "1 memory", "2 memories" (English plurals)."""
    if count == 1:
        return f"1 {noun}"
    consonant_y = len(noun) > 1 and noun[-1] == "y" and noun[-2] not in "aeiou"  # memory -> memories, day -> days
    return f"{count} {noun[:-1]}ies" if consonant_y else f"{count} {noun}s"
