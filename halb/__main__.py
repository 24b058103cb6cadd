"""`python -m halb`: the same as the `halb` command (halb.entry)."""

from halb.entry import main

main()
