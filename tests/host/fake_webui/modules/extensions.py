"""Installed extensions (``modules.extensions``): just enough for callback naming and ``find_extension``."""

import os


class Extension:
    def __init__(self, name: str, path: str, enabled: bool = True, is_builtin: bool = False):
        self.name = name
        self.canonical_name = name.lower()
        self.path = path
        self.enabled = enabled
        self.is_builtin = is_builtin

    def list_files(self, subdir: str, extension: str):
        dirpath = os.path.join(self.path, subdir)
        if not os.path.isdir(dirpath):
            return []
        return [
            os.path.join(dirpath, f)
            for f in sorted(os.listdir(dirpath))
            if os.path.splitext(f)[1].lower() == extension and os.path.isfile(os.path.join(dirpath, f))
        ]


extensions: list[Extension] = []


def active() -> list[Extension]:
    return [x for x in extensions if x.enabled]


def find_extension(filename: str) -> Extension | None:
    parent = os.path.dirname(os.path.realpath(filename))
    for ext in extensions:
        if os.path.realpath(ext.path) == parent or parent.startswith(os.path.realpath(ext.path) + os.sep):
            return ext
    return None
