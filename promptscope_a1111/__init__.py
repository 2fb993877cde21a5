"""PromptScope's glue for the AUTOMATIC1111 WebUI: the only package that imports the host's `modules`.

A1111 runs every extension's scripts with the extension folder first on `sys.path` and caches imported packages
in `sys.modules` by name, so two extensions that both ship a `lib_ext` package would share whichever loaded
first. We therefore never import our library as `lib_ext` inside the host: it is mounted from its folder under
the private name below, and every module of the library imports its siblings relatively. Another extension's
`lib_ext` can neither shadow ours nor be shadowed by it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXTENSION_DIR = Path(__file__).resolve().parent.parent
LIB_NAME = "promptscope_lib_ext"
CHOOSER = "promptscope_adapter"  # scripts/ load their classes through it (reloaded with us)


def mount_library() -> ModuleType:
    """Import our `lib_ext/` folder as the package `promptscope_lib_ext` (once)."""
    mounted = sys.modules.get(LIB_NAME)
    if mounted is not None:
        return mounted
    folder = EXTENSION_DIR / "lib_ext"
    spec = importlib.util.spec_from_file_location(
        LIB_NAME, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"PromptScope: cannot load its library from {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[LIB_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(LIB_NAME, None)
        raise
    return module


lib = mount_library()


def forget_modules() -> None:
    """Drop our packages from `sys.modules` so a script reload imports the code on disk afresh."""
    for name in list(sys.modules):
        if name == LIB_NAME or name.startswith(LIB_NAME + ".") or name.split(".", 1)[0] in (__name__, CHOOSER):
            sys.modules.pop(name, None)
