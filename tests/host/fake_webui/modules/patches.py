"""``modules.patches`` of v1.10.1: replace a function of a module or class once per key; patching the same
(object, field) again under the same key before ``undo`` raises ``RuntimeError("patch for <field> is already
applied")`` (what the built-in LoRA extension runs into when its unload callback was skipped)."""

from collections import defaultdict

originals: defaultdict = defaultdict(dict)


def patch(key, obj, field, replacement):
    if (obj, field) in originals[key]:
        raise RuntimeError(f"patch for {field} is already applied")
    original_func = getattr(obj, field)
    originals[key][(obj, field)] = original_func
    setattr(obj, field, replacement)
    return original_func


def undo(key, obj, field):
    if (obj, field) not in originals[key]:
        raise RuntimeError(f"there is no patch for {field} to undo")
    setattr(obj, field, originals[key].pop((obj, field)))


def original(key, obj, field):
    return originals[key].get((obj, field), None)
