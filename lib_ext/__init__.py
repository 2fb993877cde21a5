"""PromptScope's library: plain torch/numpy code that never imports the WebUI's `modules`.

Inside this package every import of a sibling is relative, so the package works under whatever name it is
mounted: `lib_ext` in tests and the standalone app, a private name inside the WebUI (see promptscope_a1111).
"""

__version__ = "0.1.0"
