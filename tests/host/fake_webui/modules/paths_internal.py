from modules.paths import cwd, data_path, extensions_builtin_dir, extensions_dir, models_path, script_path  # noqa: F401
