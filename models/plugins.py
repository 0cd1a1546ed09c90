"""Plugins: a user's Python file that registers modulation layers with ``models.register_norm``.

    names = load_plugin("examples/lowrank_clade.py")     # ("lowrank-clade",)
    G = build_generator("synthetic", "lowrank-clade")

``run_analysis.py --plugin FILE`` and ``train.py --plugin FILE`` call :func:`load_plugins` before
they read the other options, so ``--train-norms spade,clade,lowrank-clade`` accepts the name.
Every norm a file registers records the file in ``NormSpec.source``; ``generator.json`` stores it
(key ``"plugin_file"``, ``models.checkpoint.PLUGIN_FILE_KEY``) so that loading the folder without
the plugin names the file to pass.

Loading the same file twice is a no-op (the command line may repeat it, a notebook may rerun a
cell); a file that registers nothing is refused, since it was surely meant to.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path

from .registry import norm_spec, registered_norms

_LOADED: dict[Path, tuple[str, ...]] = {}  # resolved plugin file -> the norms it registered


class PluginImportError(ValueError):
    """Importing a plugin file raised; the message names the file and the line."""


def _where(exc: Exception, path: Path) -> str:
    """`` (line N)`` of the plugin file where ``exc`` arose, or ''."""
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return f" (line {exc.lineno})"
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if Path(frame.filename) == path]
    return f" (line {lines[-1]})" if lines else ""


def load_plugin(path) -> tuple[str, ...]:
    """Import the plugin file ``path`` once; returns the names of the norms it registered.

    FileNotFoundError if it does not exist, ValueError if it registers no norm,
    PluginImportError (a ValueError naming file and line) if importing it raises.
    """
    path = Path(path).expanduser().resolve()
    if path in _LOADED and all(n in registered_norms() for n in _LOADED[path]):
        return _LOADED[path]
    if not path.is_file():
        raise FileNotFoundError(f"plugin {str(path)!r} does not exist; expected a Python file that calls "
                                f"models.register_norm (see examples/)")
    if path.suffix != ".py":
        raise ValueError(f"plugin {str(path)!r} is not a .py file; expected a Python file that calls "
                         f"models.register_norm")
    before = set(registered_norms())
    # A unique module name per file: two plugins called my_norm.py in different folders both load.
    module_name = f"clade_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if not isinstance(exc, Exception):   # KeyboardInterrupt, SystemExit: not the plugin's error
            raise
        raise PluginImportError(f"plugin {str(path)!r} failed to import{_where(exc, path)}: "
                                f"{type(exc).__name__}: {exc}") from exc
    names = tuple(n for n in registered_norms() if n not in before)
    if not names:
        raise ValueError(f"plugin {str(path)!r} registered no norm; expected at least one "
                         f"models.register_norm(name, LayerClass, ...) call at module level")
    _LOADED[path] = names
    return names


def load_plugins(paths) -> tuple[str, ...]:
    """Load every file of ``paths`` (see :func:`load_plugin`); the norms they registered, in order."""
    return tuple(name for path in paths for name in load_plugin(path))


def plugin_files(norms) -> list[str]:
    """The plugin files that registered ``norms`` (built-ins have none), without repeats."""
    files = [norm_spec(n).source for n in norms]
    return list(dict.fromkeys(f for f in files if f is not None))


def loaded_plugins() -> dict[str, tuple[str, ...]]:
    """{plugin file: norms it registered} of the files loaded so far."""
    return {str(path): names for path, names in _LOADED.items()}


def split_plugin_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(plugin files, the other arguments) of a command line holding ``--plugin FILE`` /
    ``--plugin=FILE`` (repeatable), so they can be loaded before the parser is built."""
    plugins, rest, args = [], [], iter(argv)
    for token in args:
        if token == "--":
            rest += [token, *args]
            break
        if token == "--plugin":
            value = next(args, None)
            if value is None or value.startswith("--"):
                raise SystemExit("--plugin expects a file: --plugin path/to/my_norm.py")
            plugins.append(value)
        elif token.startswith("--plugin="):
            plugins.append(token.split("=", 1)[1])
        else:
            rest.append(token)
    return plugins, rest
