# PromptScope's entry point; the code lives in promptscope_a1111 (host glue) and lib_ext (library).
from promptscope_a1111.entry import start

lifetime = start()  # callbacks for as long as this script module is loaded; all removed on script unload
