"""PromptScope's standalone app: a Gradio page on the toy-world host (`python -m lib_ext.app`)."""
