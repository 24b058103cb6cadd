"""The one exception for input a user must fix.

Every reader of user input (stack settings, stack files, the rendered pod
spec the lab runs, the lab's plan, CLI flags the lab checks) raises a
`InputError`: one line per problem, each naming its key or flag and the fix.
The CLI has one handler for it: the lines on stderr, exit 2.
"""

from __future__ import annotations


class InputError(Exception):
    """Everything wrong with one input, one problem a line."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
