"""``modules.api`` (only the txt2img route logic, without FastAPI)."""
