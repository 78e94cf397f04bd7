"""Console output: lines to a stream, remembering whether any said a command failed: an ``Error:`` line, a
``Usage:`` line (wrong arguments), a line the console could not split, ``Subcommand required`` or
``Unrecognised command`` (a typo a script must not pass). Help asked for with ``?`` prints usage lines that do not
count."""

from __future__ import annotations

import threading
from typing import Protocol

FAILURES = ("Subcommand required", "Unrecognised command")


class TextSink(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class Writer:
    def __init__(self, stream: TextSink) -> None:
        self.stream = stream
        self.errors = 0
        # The auto-flash task logs from its own thread while the console prints: whole writes, never mixed.
        self._lock = threading.Lock()

    @property
    def colour(self) -> bool:
        """Whether log lines get ESP-IDF's colour codes: on a terminal, as the module's USB console shows them."""
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def puts(self, text: str) -> None:
        """OVMS writer->puts: the text and a newline."""
        self.write(text + "\n")

    def write(self, text: str, counted: bool = True) -> None:
        """Print ``text``; ``counted`` False for text that is not the console's verdict (help, file contents,
        echoed words, a changelog, log lines), so its ``Error:`` lines do not fail a script."""
        with self._lock:
            if counted:
                for line in text.splitlines():
                    if line.startswith(("Error:", "ERROR:", "Usage: ")) or line in FAILURES:
                        self.errors += 1
            self.stream.write(text)
            self.stream.flush()
