"""`python -m idea_expansion ...` is the `idea-expansion` command."""

from .cli import main

main()
