"""Miniature of the Stable Diffusion repositories the WebUI imports (fake_webui test double)."""
