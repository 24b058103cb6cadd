"""A reader for keepalived.conf, just enough to check a rendered one by its meaning.

keepalived's grammar (parser.c): one statement a line, words split on
blanks, a `"..."` word keeps its blanks, `#` and `!` start a comment, a line
ending in `{` opens a block that a `}` line closes. Tests read the blocks and
compare their values with the settings, so a renderer that writes the right
words in the wrong block, or one node's value into another's file, fails.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field


class ConfError(Exception):
    """The text is not keepalived.conf as the parser reads it."""


@dataclass
class Stmt:
    """One statement: its keyword, its words, and its block's statements (None: no block)."""

    keyword: str
    args: list[str]
    block: list[Stmt] | None = None
    line: int = 0

    def all(self, keyword: str) -> list[Stmt]:
        return [s for s in self.block or [] if s.keyword == keyword]

    def one(self, keyword: str) -> Stmt:
        found = self.all(keyword)
        if len(found) != 1:
            raise ConfError(f"{len(found)} {keyword!r} in {self.keyword} {' '.join(self.args)}")
        return found[0]

    def value(self, keyword: str) -> str:
        """The single word after `keyword` (`priority 200` -> '200')."""
        stmt = self.one(keyword)
        if len(stmt.args) != 1 or stmt.block is not None:
            raise ConfError(f"{keyword}: expected one value, got {stmt.args}")
        return stmt.args[0]

    def has(self, keyword: str) -> bool:
        return bool(self.all(keyword))

    def items(self) -> list[str]:
        """A list block's entries (`unicast_peer { a b }`): each line's words joined."""
        return [" ".join([s.keyword, *s.args]) for s in self.block or []]


@dataclass
class Conf:
    top: list[Stmt] = field(default_factory=list)

    def all(self, keyword: str) -> list[Stmt]:
        return [s for s in self.top if s.keyword == keyword]

    def one(self, keyword: str, name: str | None = None) -> Stmt:
        found = [s for s in self.all(keyword) if name is None or s.args[:1] == [name]]
        if len(found) != 1:
            raise ConfError(f"{len(found)} top-level {keyword} {name or ''}")
        return found[0]


def _words(line: str, number: int) -> list[str]:
    for i, ch in enumerate(line):
        if ch in "#!" and line[:i].count('"') % 2 == 0:
            line = line[:i]
            break
    try:
        lex = shlex.shlex(line, posix=True)
        lex.whitespace_split = True
        lex.commenters = ""
        return list(lex)
    except ValueError as err:
        raise ConfError(f"line {number}: {err}") from None


def parse(text: str) -> Conf:
    """The statements of `text`, blocks nested; ConfError on unbalanced braces."""
    root: list[Stmt] = []
    stack: list[list[Stmt]] = [root]
    for number, raw in enumerate(text.splitlines(), 1):
        words = _words(raw, number)
        if not words:
            continue
        if words == ["}"]:
            if len(stack) == 1:
                raise ConfError(f"line {number}: '}}' closes nothing")
            stack.pop()
            continue
        opens = words[-1] == "{"
        if opens:
            words = words[:-1]
        if not words or "{" in words or "}" in words:
            raise ConfError(f"line {number}: unexpected brace in {raw!r}")
        stmt = Stmt(words[0], words[1:], [] if opens else None, number)
        stack[-1].append(stmt)
        if opens:
            assert stmt.block is not None
            stack.append(stmt.block)
    if len(stack) != 1:
        raise ConfError(f"{len(stack) - 1} block(s) left open")
    return Conf(root)
