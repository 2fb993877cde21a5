# PromptScope's entry point; the code lives in promptscope_a1111 (host glue) and lib_ext (library).
from promptscope_a1111.entry import PromptScopeScript, lifetime  # noqa: F401
