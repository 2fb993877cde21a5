# PromptScope's entry point; promptscope_adapter picks the host glue (promptscope_a1111 or promptscope_forge).
from promptscope_adapter import load  # the host registers the Script subclass it finds in this namespace

PromptScopeScript, start = load("entry", "PromptScopeScript", "start")
lifetime = start()  # callbacks for as long as this script module is loaded; all removed on script unload
