"""Asking before a destructive step (STYLE rule 13): on a terminal, a question; elsewhere (a
script, a CI job, `kubectl exec` without a TTY) nothing happens without `--yes`."""

from __future__ import annotations

import sys


def confirmed(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question} - not done: add --yes to do it without a terminal")
        return False
    answer = input(f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")
