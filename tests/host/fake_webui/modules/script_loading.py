"""``modules.script_loading``: every script file runs as its own, unregistered module."""

import importlib.util
import os

loaded_scripts: dict = {}


def load_module(path):
    # module name = file name (e.g. "promptscope.py"); the module is NOT put into sys.modules
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded_scripts[path] = module
    return module
