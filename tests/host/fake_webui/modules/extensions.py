"""Installed extensions (``modules.extensions``): just enough for callback naming and ``find_extension``."""

import os


class ExtensionMetadata:
    """metadata.ini is not read: no Requires/Before/After and no callback order instructions."""

    def get_script_requirements(self, field, section, extra_section=None):
        return []

    def list_callback_order_instructions(self):
        return []


class Extension:
    def __init__(self, name: str, path: str, enabled: bool = True, is_builtin: bool = False):
        self.name = name
        self.canonical_name = name.lower()
        self.path = path
        self.enabled = enabled
        self.is_builtin = is_builtin
        self.metadata = ExtensionMetadata()

    def list_files(self, subdir: str, extension: str):
        """``scripts.ScriptFile(basedir, filename, path)`` for every ``<subdir>/*<extension>`` file, sorted."""
        from modules import scripts

        dirpath = os.path.join(self.path, subdir)
        if not os.path.isdir(dirpath):
            return []
        res = [scripts.ScriptFile(self.path, f, os.path.join(dirpath, f)) for f in sorted(os.listdir(dirpath))]
        return [x for x in res if os.path.splitext(x.path)[1].lower() == extension and os.path.isfile(x.path)]


extensions: list[Extension] = []


def active() -> list[Extension]:
    return [x for x in extensions if x.enabled]


def find_extension(filename: str) -> Extension | None:
    parent = os.path.dirname(os.path.realpath(filename))
    for ext in extensions:
        if os.path.realpath(ext.path) == parent or parent.startswith(os.path.realpath(ext.path) + os.sep):
            return ext
    return None
