# PromptScope's entry point; the code lives in promptscope_a1111 (host glue) and lib_ext (library).
# A1111 registers the Script subclass it finds in this module's namespace.
from promptscope_a1111.entry import PromptScopeScript, start  # noqa: F401

lifetime = start()  # callbacks for as long as this script module is loaded; all removed on script unload
