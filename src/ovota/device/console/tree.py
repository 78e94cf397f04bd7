"""OVMS's command tree (``OvmsCommand``): its lookup, its ``?`` help and the usage lines it generates.

The rules, as ``OvmsCommand::Execute`` / ``PutUsage`` / ``ExpandUsage`` apply them (OVMS 3.3.006):

- Children are kept in byte order. A word selects the child it names exactly, else the one child it is a
  prefix of; a prefix of several children selects none (``FindUniquePrefix``).
- A command with a handler runs it when it has no children or no words are left; outside its argument range,
  or with a last argument ``?``, it prints its usage line instead.
- Without a handler and without words: ``Subcommand required`` and the usage line. A word ``?`` prints the
  usage line (unless the template is empty and there is no handler) and a ``%-20.20s %s`` line per child.
  A word that selects nothing: ``Unrecognised command``, and the usage line below the root.
- The usage line is ``Usage: `` + the ancestors' names + the command's name + one space + its expanded
  template. An empty template stands for the children (``$C``, or ``[$C]`` with a handler); ``$C`` expands to
  the children's names joined by ``|``, ``$Gname$`` (``$G$`` = the first child) to that child's expanded
  template, ``$L`` to a full line per child; what follows a newline is help text printed as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ovota.device.console.session import Session

Handler = Callable[[Session, list[str]], None]


def unique_prefix(word: str, names: Iterable[str]) -> str | None:
    """FindUniquePrefix: the name ``word`` is, else the only name it begins; None if none or several."""
    found = [name for name in names if name.startswith(word)]
    if word in found:
        return word
    return found[0] if len(found) == 1 else None


@dataclass(eq=False)
class Command:
    name: str
    title: str
    handler: Handler | None = None
    usage: str = ""
    min_args: int = 0
    max_args: int = 0
    children: dict[str, Command] = field(default_factory=dict)
    parent: Command | None = field(default=None, repr=False)

    def add(self, child: Command) -> Command:
        """Register ``child`` (a second registration of a name keeps the first, as OVMS does)."""
        if child.name in self.children:
            return self.children[child.name]
        child.parent = self
        self.children = dict(sorted({**self.children, child.name: child}.items(), key=lambda kv: kv[0].encode()))
        return child

    def find(self, word: str) -> Command | None:
        """The child ``word`` names exactly, else the only child it is a prefix of."""
        name = unique_prefix(word, self.children)
        return None if name is None else self.children[name]

    @property
    def path(self) -> list[str]:
        """The names from the root's child down to this command."""
        names: list[str] = []
        node: Command | None = self
        while node is not None and node.parent is not None:
            names.insert(0, node.name)
            node = node.parent
        return names

    def execute(self, session: Session, args: list[str]) -> None:
        """OvmsCommand::Execute of the words after this command's name (the rules in the module docstring)."""
        if self.handler is not None and (not self.children or not args):
            if not self.min_args <= len(args) <= self.max_args or (args and args[-1] == "?"):
                self.put_usage(session, error=not (args and args[-1] == "?"))
                return
            # Handlers read the command line with every word spelled out, whatever prefix was typed.
            session.words = self.path + args
            self.handler(session, args)
            return
        if not args:
            session.out.puts("Subcommand required")
            self.put_usage(session)
            return
        if args[0] == "?":
            if self.usage or self.handler is not None:
                self.put_usage(session, error=False)
            for name, child in self.children.items():
                session.out.write(f"{name[:20]:<20} {child.title}\n", counted=False)
            return
        chosen = self.find(args[0])
        if chosen is None:
            session.out.puts("Unrecognised command")
            if self.parent is not None:
                self.put_usage(session)
            return
        chosen.execute(session, args[1:])

    def put_usage(self, session: Session, error: bool = True) -> None:
        """Print the usage line; ``error`` False when it was asked for with ``?`` (not a failed command)."""
        session.out.write(self.usage_line() + "\n", counted=error)

    def usage_line(self) -> str:
        """``Usage: <path> <expanded template>``, help lines included."""
        return self.expand(self.usage, "Usage: " + "".join(f"{name} " for name in self.path))

    def _template(self, template: str) -> str:
        if template or not self.children:
            return template
        return "[$C]" if self.handler is not None else "$C"

    def expand(self, template: str, result: str) -> str:
        """ExpandUsage: ``result`` (the line so far) followed by the template with $L, $C and $G…$ filled in
        from the children."""
        usage = self._template(template)
        if (pos := usage.find("$L")) >= 0:
            start = result + usage[:pos]
            lines = [child.expand(child.usage, start + name + " ") for name, child in self.children.items()]
            return "\n".join(lines) + usage[pos + 2 :] if lines else "All subcommands require 'enable' mode"
        pos = usage.find("$C")
        if pos >= 0:
            result += usage[:pos] + "|".join(self.children)
            pos += 2
        else:
            pos = 0
        pos2 = usage.find("$G", pos)
        if pos2 >= 0:
            result += usage[pos:pos2]
            pos2 += 2
            pos3 = usage.find("$", pos2)
            child: Command | None = None
            if pos3 >= 0:
                name = usage[pos2:pos3]
                child = next(iter(self.children.values()), None) if name == "" else self.children.get(name)
                pos = pos3 + 1
                if child is not None:
                    result = child.expand(child.usage, result)
            else:
                pos = pos2
            if child is None:
                result += "ERROR IN USAGE TEMPLATE"
        return result + usage[pos:]
