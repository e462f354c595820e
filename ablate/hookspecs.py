"""One pluggy hook per plugin kind; each returns a list of plugin classes.

The hooks are declared by the kinds table (``ablate.interfaces.KINDS``: each row names its hook and
what the hook's classes do), so this module holds only the markers and how a hook's results combine.

Each implementation is called once per :func:`ablate.load_registry`, with no arguments, and on its
own: every plugin's list counts (no hook is ``firstresult``) and one that raises is reported with its
origin instead of stopping the others. The lists are merged into one registry per kind, keyed by each
class's ``name``:

- two classes with one name, from any two origins (built-in, package, file), are an error;
- a class that is not a subclass of the kind's base, has no ``name`` or ``Params``, or leaves out a
  method in its base's ``required``, rejects the plugin that returned it, as does a hook that raises
  or returns something else than a list: an error for a local file the user named, a warning for an
  installed package (the other plugins still load).

Return classes, not instances: the core constructs ``cls(cls.Params.model_validate(table))`` for
each study table that names one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("ablate")
hookimpl = pluggy.HookimplMarker("ablate")


def hookspecs(kinds: Iterable[Any]) -> type:
    """A namespace holding one hookspec per kind (rows of ``ablate.interfaces.KINDS``), documented
    from the row, for ``PluginManager.add_hookspecs``."""
    specs = {}
    for kind in kinds:
        def spec() -> list[type]: ...

        spec.__name__ = spec.__qualname__ = kind.hook
        spec.__doc__ = (f"{kind.summary}\n\n:return: subclasses of :class:`ablate.{kind.base.__name__}` "
                        "(merged with every other plugin's by ``name``).")
        specs[kind.hook] = hookspec(spec)
    return type("AblateHookspecs", (), specs)
