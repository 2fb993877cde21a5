import pytest
import torch

from lib_ext.patches import PatchSet


class Thing:
    def method(self) -> str:
        return "class"


def test_set_attr_restores_missing_instance_attribute_by_deleting_it():
    t = Thing()
    ps = PatchSet()
    assert ps.set_attr(t, "method", lambda: "patched")
    assert t.method() == "patched"
    ps.restore()
    assert "method" not in vars(t)
    assert t.method() == "class"


def test_set_attr_restores_existing_value_and_class_attribute():
    t = Thing()
    t.value = 1
    ps = PatchSet()
    ps.set_attr(t, "value", 2)
    original = Thing.method
    ps.set_attr(Thing, "method", lambda self: "patched")
    assert t.value == 2 and t.method() == "patched"
    ps.restore()
    assert t.value == 1
    assert Thing.method is original


def test_installing_twice_is_installing_once():
    t = Thing()
    ps = PatchSet()
    assert ps.wrap_method(t, "method", lambda orig: lambda: orig() + "+1")
    assert not ps.wrap_method(t, "method", lambda orig: lambda: orig() + "+1")
    assert t.method() == "class+1"
    assert len(ps) == 1
    ps.restore()
    assert t.method() == "class"


def test_torch_hook_handles_are_removed_and_duplicates_dropped():
    lin = torch.nn.Linear(2, 2)
    ps = PatchSet()
    calls = []
    h1 = lin.register_forward_hook(lambda m, a, o: calls.append(1))
    h2 = lin.register_forward_hook(lambda m, a, o: calls.append(2))
    assert ps.add_handle(h1, key=("same",))
    assert not ps.add_handle(h2, key=("same",))  # the duplicate is removed at once
    lin(torch.zeros(1, 2))
    assert calls == [1]
    ps.restore()
    assert not lin._forward_hooks


def test_restore_keeps_going_after_a_failing_undo_and_is_idempotent():
    t = Thing()
    ps = PatchSet()
    ps.set_attr(t, "a", 1)

    def boom() -> None:
        raise RuntimeError("host object broken")

    ps.on_restore(boom, key=("boom",))
    ps.set_attr(t, "b", 2)
    errors = ps.restore()
    assert len(errors) == 1
    assert not hasattr(t, "a") and not hasattr(t, "b")
    assert ps.restore() == []
    assert len(ps) == 0


def test_scope_restores_on_exception():
    t = Thing()
    ps = PatchSet()
    with pytest.raises(KeyError), ps.scope():
        ps.set_attr(t, "method", lambda: "patched")
        raise KeyError("during sampling")
    assert t.method() == "class"


def test_undo_order_is_reverse_of_install():
    t = Thing()
    ps = PatchSet()
    ps.wrap_method(t, "method", lambda orig: lambda: orig() + "A")
    ps2 = PatchSet()
    ps2.wrap_method(t, "method", lambda orig: lambda: orig() + "B")
    assert t.method() == "classAB"
    ps2.restore()
    assert t.method() == "classA"
    ps.restore()
    assert t.method() == "class"
