"""Paths of the fake WebUI installation (``modules.paths`` / ``modules.paths_internal``)."""

import os
import tempfile

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data_path = os.path.join(tempfile.gettempdir(), "promptscope-fake-webui")
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
cwd = os.getcwd()
