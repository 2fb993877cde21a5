"""One mechanism for every hook, wrapper and callback PromptScope installs.

A `PatchSet` records each change it makes together with the exact way to undo it, so that `restore()` puts
every object back as it was: an instance attribute that did not exist is deleted again (not set to the class's
value), a torch hook is removed through its handle, a callback is unregistered. Installing the same patch twice
(same target, same key) is a no-op, so callers may install defensively on every step. `restore()` is idempotent,
undoes in reverse order and keeps going when one undo fails, so a broken host object cannot leave others patched.

The hosts open one PatchSet per sampling call and restore it in a `finally` (success, exception, interrupt), one
per model for model-bound patches (restored on model switch), and one for the extension's lifetime (restored on
script reload).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("promptscope")

_MISSING = object()


@dataclass
class _Undo:
    key: tuple[Any, ...]
    undo: Callable[[], None]
    what: str


@dataclass
class PatchSet:
    """An ordered, idempotent record of reversible changes."""

    name: str = "patches"
    _undos: list[_Undo] = field(default_factory=list)
    _keys: set[tuple[Any, ...]] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._undos)

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        return key in self._keys

    def describe(self) -> list[str]:
        return [u.what for u in self._undos]

    def _record(self, key: tuple[Any, ...], undo: Callable[[], None], what: str) -> None:
        self._keys.add(key)
        self._undos.append(_Undo(key, undo, what))

    def set_attr(self, obj: Any, name: str, value: Any, *, key: str = "") -> bool:
        """Set `obj.name = value`, remembering whether `obj` had its own attribute. Returns False if already done."""
        k = ("attr", id(obj), name, key)
        if k in self._keys:
            return False
        own = vars(obj) if hasattr(obj, "__dict__") and not isinstance(obj, type) else None
        if isinstance(obj, type):
            previous = obj.__dict__.get(name, _MISSING)
        else:
            previous = own.get(name, _MISSING) if own is not None else getattr(obj, name, _MISSING)
        setattr(obj, name, value)

        def undo() -> None:
            if previous is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(obj, name)
            else:
                setattr(obj, name, previous)

        self._record(k, undo, f"{type(obj).__name__}.{name}")
        return True

    def wrap_method(
        self, obj: Any, name: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]
    ) -> bool:
        """Replace the bound method `obj.name` on this instance only by `make_wrapper(original_bound_method)`.

        The original is looked up at install time through normal attribute access, so a wrapper composes with
        whatever the host or another extension already put there.
        """
        if ("attr", id(obj), name, "wrap") in self._keys:
            return False
        original = getattr(obj, name)
        return self.set_attr(obj, name, make_wrapper(original), key="wrap")

    def add_handle(self, handle: Any, *, key: tuple[Any, ...] | None = None, what: str = "hook") -> bool:
        """Adopt a removable handle (torch hook handles, or anything with `.remove()`)."""
        k = ("handle", *(key if key is not None else (id(handle),)))
        if k in self._keys:
            handle.remove()
            return False
        self._record(k, handle.remove, what)
        return True

    def on_restore(self, undo: Callable[[], None], *, key: tuple[Any, ...], what: str = "callback") -> bool:
        """Register an arbitrary undo action (e.g. unregistering a host callback) under a unique key."""
        k = ("call", *key)
        if k in self._keys:
            return False
        self._record(k, undo, what)
        return True

    def restore(self) -> list[BaseException]:
        """Undo everything in reverse order. Returns the errors met (already logged); never raises."""
        errors: list[BaseException] = []
        while self._undos:
            item = self._undos.pop()
            self._keys.discard(item.key)
            try:
                item.undo()
            except Exception as exc:  # keep undoing the rest: one bad object must not leave others patched
                log.warning("PromptScope: could not undo %s in %s: %s", item.what, self.name, exc)
                errors.append(exc)
        return errors

    @contextlib.contextmanager
    def scope(self) -> Iterator[PatchSet]:
        """`with patches.scope():` restores on every way out of the block, exceptions included."""
        try:
            yield self
        finally:
            self.restore()
