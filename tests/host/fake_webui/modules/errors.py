"""Error reporting as in the WebUI: print and carry on. The double also records every report for tests."""

import sys
import traceback

reported: list[tuple[str, BaseException | None]] = []


def report(message: str, *, exc_info: bool = False) -> None:
    exc = sys.exc_info()[1] if exc_info else None
    reported.append((message, exc))
    print(message, file=sys.stderr)
    if exc_info:
        traceback.print_exc(file=sys.stderr)


def display(e: Exception, task: str, *, full_traceback: bool = False) -> None:
    reported.append((task, e))
    print(f"{task or 'error'}: {type(e).__name__}", file=sys.stderr)
    print(traceback.format_exc(), file=sys.stderr)


def print_error_explanation(message: str) -> None:
    print(message, file=sys.stderr)
