"""A command tree like OVMS's OvmsCommand: words select children; a leaf handler gets the remaining args."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ovota.device.console.session import Session

Handler = Callable[[Session, list[str]], None]


@dataclass
class Command:
    name: str
    title: str
    handler: Handler | None = None
    usage: str = ""
    min_args: int = 0
    max_args: int = 0
    children: dict[str, Command] = field(default_factory=dict)

    def add(self, child: Command) -> Command:
        self.children[child.name] = child
        return child

    def execute(self, session: Session, words: list[str], path: str) -> None:
        if words and words[0] in self.children:
            self.children[words[0]].execute(session, words[1:], f"{path} {words[0]}".strip())
            return
        if self.handler is None or (words and self.children and self.max_args == 0):
            if words:
                session.out.puts("Unrecognised command")
                return
            session.out.puts(f"Usage: {path} [{'|'.join(self.children)}]")
            return
        if not self.min_args <= len(words) <= self.max_args:
            session.out.puts(f"Usage: {path} {self.usage}".rstrip())
            return
        self.handler(session, words)
