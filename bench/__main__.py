"""`python -m bench NAME [--quick]`: runs `bench/NAME.py`'s `main(quick: bool) -> dict`.

The benchmark prints its human-readable table; this dispatcher then prints the returned dict as ONE JSON object
on the LAST line of stdout, so scripts can read `tail -n 1`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def _jsonable(value: Any) -> Any:
    """NaN/inf become null (JSON has neither); tuples become lists; numpy/torch scalars become numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", help=f"benchmark to run: {', '.join(available()) or '(none)'}")
    parser.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    args = parser.parse_args(argv)
    if not _NAME_RE.match(args.name) or args.name not in available():
        parser.error(f"unknown benchmark {args.name!r}; available: {', '.join(available())}")
    module = importlib.import_module(f"bench.{args.name}")
    result = module.main(quick=args.quick)
    if not isinstance(result, dict):
        raise TypeError(f"bench.{args.name}.main must return a dict, got {type(result).__name__}")
    sys.stdout.flush()
    print(json.dumps(_jsonable(result), allow_nan=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
