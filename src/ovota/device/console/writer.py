"""Console output: lines to a stream, remembering whether any said a command failed: an ``Error:`` line, a
``Usage:`` line (wrong arguments) or ``Unrecognised command`` (a typo a script must not pass)."""

from __future__ import annotations

from typing import Protocol


class TextSink(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class Writer:
    def __init__(self, stream: TextSink) -> None:
        self.stream = stream
        self.errors = 0

    def puts(self, text: str) -> None:
        """OVMS writer->puts: the text and a newline."""
        self.write(text + "\n")

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.startswith(("Error:", "Usage: ")) or line == "Unrecognised command":
                self.errors += 1
        self.stream.write(text)
        self.stream.flush()
