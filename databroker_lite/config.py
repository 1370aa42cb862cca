"""Named catalogs: YAML config files on a search path, listed by ``databroker_lite.catalog``.

A config file is also a valid intake catalog (the intake driver lives in
:mod:`databroker_lite.intake_driver`; this module never imports intake)::

    sources:
      45id:
        driver: databroker_lite
        args: {path: /data/45id, root_map: {}}
        metadata: {beamline: 45-ID}

Relative paths (and ``{{ CATALOG_DIR }}``) are resolved against the YAML file's directory.
The search path is ``DATABROKER_LITE_CATALOG_PATH`` (directories separated by
``os.pathsep``) or, when that is unset, :func:`default_catalog_dir`. The first directory
is where :func:`install_catalog` writes.
"""
from __future__ import annotations

import ntpath
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalogs import Catalog, open_catalog
from .errors import CatalogError, CatalogNotFound, InvalidArgument, InvalidCatalogName

#: Environment variable holding the catalog search path.
ENV_VAR = "DATABROKER_LITE_CATALOG_PATH"
#: ``driver:`` values that mark a source as one of ours.
DRIVER_NAMES = ("databroker_lite", "databroker_lite.intake_driver.IntakeCatalog",
                "databroker_lite.intake_driver:IntakeCatalog")
_YAML_SUFFIXES = (".yml", ".yaml")


def _yaml():
    """PyYAML, imported when a catalog file is read or written (not by ``import databroker_lite``)."""
    import yaml
    return yaml


_ARG_KEYS = {"path", "root_map", "mode", "index"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CATALOG_DIR_RE = re.compile(r"\{\{\s*CATALOG_DIR\s*\}\}")


def default_catalog_dir() -> str:
    """The per-user directory of catalog config files for this platform.

    Linux and other Unix: ``$XDG_DATA_HOME/databroker_lite/catalogs`` (default
    ``~/.local/share/...``); macOS: ``~/Library/Application Support/databroker_lite/catalogs``;
    Windows: ``%APPDATA%\\databroker_lite\\catalogs``.
    """
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or ntpath.join(os.path.expanduser("~"), "AppData",
                                                         "Roaming")
        return ntpath.join(base, "databroker_lite", "catalogs")
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~"), "Library", "Application Support",
                            "databroker_lite", "catalogs")
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "databroker_lite", "catalogs")


def catalog_search_path() -> list[str]:
    """The directories searched for catalog config files, first one first.

    ``DATABROKER_LITE_CATALOG_PATH`` (``os.pathsep``-separated) replaces the default
    when it is set and not empty.
    """
    env = os.environ.get(ENV_VAR, "")
    dirs = [os.path.expanduser(d) for d in env.split(os.pathsep) if d.strip()]
    return dirs or [default_catalog_dir()]


@dataclass(frozen=True)
class CatalogEntry:
    """One named catalog as declared in a config file (nothing opened yet)."""

    name: str
    config_file: str
    args: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    description: str | None = None

    @property
    def path(self) -> str:
        """The catalog directory, absolute."""
        return resolve_path(self.args.get("path"), os.path.dirname(self.config_file),
                            where=f"catalog {self.name!r} in {self.config_file}")

    def open(self, mode: str | None = None, *, index: str | None = None) -> Catalog:
        """Open the catalog this entry points to; ``mode`` and ``index`` replace the
        entry's own (which default to "a" where writable, and the default index)."""
        where = f"catalog {self.name!r} (defined in {self.config_file})"
        unknown = set(self.args) - _ARG_KEYS
        if unknown:
            raise CatalogError(f"{where}: unknown args {sorted(unknown)}; "
                               f"allowed: {sorted(_ARG_KEYS)}")
        path, mode = check_directory(self.path, mode or self.args.get("mode"), where=where)
        index = self.args.get("index") if index is None else index
        if index is not None and not isinstance(index, str):
            raise CatalogError(f"{where}: index must be 'auto', 'beside', 'host' or a "
                               f"postgresql:// URL, got {index!r}")
        root_map = check_root_map(self.args.get("root_map"), where,
                                  base_dir=os.path.dirname(self.config_file))
        return open_catalog(path, mode, root_map=root_map, name=self.name, index=index)


def resolve_path(path: Any, base_dir: str | None, *, where: str) -> str:
    """An absolute catalog path from a config ``path`` arg, relative to ``base_dir``."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise CatalogError(f"{where}: args.path must be a directory path, got {path!r}")
    path = os.fspath(path)
    if base_dir is not None:
        path = _CATALOG_DIR_RE.sub(lambda _: base_dir, path)
    path = os.path.expanduser(path)
    if not os.path.isabs(path) and base_dir:
        path = os.path.join(base_dir, path)
    return os.path.normpath(os.path.abspath(path))


def check_directory(path: str, mode: str | None, *, where: str) -> tuple[str, str]:
    """Check a named catalog's directory exists; pick ``mode`` ("a" if writable, else "r")."""
    if not os.path.isdir(path):
        raise CatalogError(f"{where} points to {path}, which is not a directory")
    if mode is None:
        mode = "a" if os.access(path, os.W_OK) else "r"
    if mode not in ("a", "r"):
        raise CatalogError(f"{where}: mode must be 'a' or 'r', not {mode!r}")
    return path, mode


def check_root_map(root_map: Any, where: str, base_dir: str | None = None) -> dict[str, str]:
    """Validate a ``root_map`` arg: a mapping of str to str (or nothing).

    With ``base_dir`` (the YAML file's directory) a relative new root, or one using
    ``{{ CATALOG_DIR }}``, is resolved against it, as databroker does.
    """
    if root_map is None:
        return {}
    if not isinstance(root_map, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in root_map.items()):
        raise CatalogError(f"{where}: root_map must map old root (str) to new root (str), "
                           f"got {root_map!r}")
    if base_dir is None:
        return dict(root_map)
    return {old: resolve_path(new, base_dir, where=f"{where}: root_map[{old!r}]") if new else new
            for old, new in root_map.items()}


def _yaml_files(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        warnings.warn(f"cannot list catalog config directory {directory}: {exc}", stacklevel=3)
        return []
    return [os.path.join(directory, n) for n in names
            if n.endswith(_YAML_SUFFIXES) and not n.startswith(".")]


def read_config_file(filename: str) -> list[CatalogEntry]:
    """The databroker_lite sources of one YAML file; other intake sources are skipped."""
    try:
        with open(filename, encoding="utf-8") as f:
            content = _yaml().safe_load(f)
    except _yaml().YAMLError as exc:  # including tags asking for Python objects: never built
        raise CatalogError(f"{filename}: not YAML this can read ({exc})") from None
    sources = content.get("sources") if isinstance(content, dict) else None
    if not isinstance(sources, dict):
        raise CatalogError(f"{filename} has no 'sources:' mapping")
    out = []
    for name, spec in sources.items():
        if not isinstance(spec, dict) or spec.get("driver") not in DRIVER_NAMES:
            continue
        args = spec.get("args") or {}
        if not isinstance(args, dict):
            raise CatalogError(f"{filename}: source {name!r} has args that are not a mapping")
        out.append(CatalogEntry(str(name), os.path.abspath(filename), dict(args),
                                dict(spec.get("metadata") or {}), spec.get("description")))
    return out


def find_catalogs(search_path: list[str] | None = None) -> dict[str, CatalogEntry]:
    """All named catalogs on the search path, by name.

    An earlier directory wins over a later one; within a directory, files are read in
    name order and the first definition wins. An unreadable file is a warning.
    """
    found: dict[str, CatalogEntry] = {}
    for directory in catalog_search_path() if search_path is None else search_path:
        for filename in _yaml_files(directory):
            try:
                entries = read_config_file(filename)
            except (OSError, CatalogError) as exc:
                warnings.warn(f"skipping catalog config file {filename}: {exc}", stacklevel=3)
                continue
            for entry in entries:
                found.setdefault(entry.name, entry)
    return found


class NamedCatalogs(Mapping):
    """The named catalogs on the search path: ``catalog["45id"]``, ``list(catalog)``.

    The config files are read again on every access, so a catalog installed after
    import is seen at once. Looking up a name opens the catalog; an unknown name raises
    :class:`~databroker_lite.errors.CatalogNotFound` (a ``KeyError``).
    """

    def entries(self) -> dict[str, CatalogEntry]:
        """The config entries, by name, without opening anything."""
        return find_catalogs()

    @property
    def search_path(self) -> list[str]:
        """The directories searched, first one first (installs go there)."""
        return catalog_search_path()

    def __getitem__(self, name: str) -> Catalog:
        entries = self.entries()
        if name not in entries:
            known = ", ".join(repr(n) for n in sorted(entries)) or "none"
            raise CatalogNotFound(f"no named catalog {name!r}; known catalogs: {known} "
                                  f"(search path: {os.pathsep.join(self.search_path)}; "
                                  f"add one with databroker_lite.install_catalog)")
        return entries[name].open()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries()))

    def __len__(self) -> int:
        return len(self.entries())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.entries()

    def __repr__(self) -> str:
        entries = self.entries()
        lines = [f"<named catalogs ({len(entries)}) from {os.pathsep.join(self.search_path)}"]
        lines += [f"  {n}: {entries[n].path}" for n in sorted(entries)]
        return "\n".join(lines) + ">"


#: ``databroker_lite.catalog``: the named catalogs.
catalog = NamedCatalogs()


def as_catalog(where: Catalog | str | os.PathLike, mode: str | None = None, *,
               index: str | None = None) -> Catalog:
    """A Catalog as given, or a catalog directory or named catalog opened.

    ``mode`` is "r" or "a"; by default a directory is opened read-only and a named
    catalog as its entry says. ``index`` (see :func:`open_catalog`) replaces the index
    the catalog would use (a named catalog's entry's, else ``$DATABROKER_LITE_INDEX``);
    a named catalog keeps its name, so a PostgreSQL index keys it by that name.
    """
    if isinstance(where, Catalog):
        if mode is not None or index is not None:
            raise InvalidArgument(f"{where!r} is open already: mode= and index= are for a "
                                  "catalog given as a directory or a name")
        return where
    path = os.fspath(where)
    if os.path.isdir(path):
        return open_catalog(path, mode or "r", index=index)
    entries = find_catalogs()
    if path not in entries:
        known = ", ".join(repr(n) for n in sorted(entries)) or "none"
        raise CatalogNotFound(f"no catalog directory at {path}, and no catalog named {path!r} "
                              f"(named catalogs: {known}; search path: "
                              f"{os.pathsep.join(catalog_search_path())})")
    return entries[path].open(mode, index=index)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidCatalogName(f"catalog name must be letters, digits, '_', '.' or '-' (not starting "
                         f"with '.' or '-'), got {name!r}")


def _entry_yaml(name: str, path: str, root_map: dict[str, str]) -> str:
    doc = {"sources": {name: {
        "driver": "databroker_lite",
        "description": f"databroker_lite catalog at {path}",
        "args": {"path": path, "root_map": root_map},
    }}}
    return ("# Written by databroker_lite.install_catalog; also an intake catalog.\n"
            + _yaml().safe_dump(doc, sort_keys=False, default_flow_style=False))


def _write_atomic(filename: str, text: str) -> None:
    directory = os.path.dirname(filename)
    fd, partial = tempfile.mkstemp(prefix=os.path.basename(filename) + ".", suffix=".partial",
                                   dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, filename)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise


def check_install(path: str | os.PathLike, name: str, *, root_map: Mapping[str, str] | None = None,
                  overwrite: bool = False) -> str | None:
    """Check that :func:`install_catalog` may install ``path`` as ``name``, writing nothing.

    Returns the existing config file when the same catalog is already installed, None
    when it can be installed; raises InvalidCatalogName or CatalogError when it cannot.
    """
    _check_name(name)
    where = f"catalog {name!r}"
    path = os.path.abspath(os.fspath(path))
    root_map = check_root_map(root_map, where)
    target_dir = catalog_search_path()[0]
    target = os.path.join(target_dir, f"{name}.yml")
    existing = find_catalogs().get(name)
    if existing is None:
        return None
    try:
        same = (existing.path == path
                and check_root_map(existing.args.get("root_map"), where) == root_map)
    except CatalogError:
        same = False
    if same:
        return existing.config_file
    if not overwrite:
        raise CatalogError(f"a catalog named {name!r} already exists (defined in "
                           f"{existing.config_file}, path {existing.args.get('path')!r}); "
                           f"pass overwrite=True to replace it")
    if (os.path.dirname(existing.config_file) == os.path.abspath(target_dir)
            and existing.config_file != os.path.abspath(target)):
        raise CatalogError(f"{where} is defined in {existing.config_file}, which "
                           f"install_catalog did not write; edit or remove that file")
    return None


def install_catalog(path: str | os.PathLike, name: str, *,
                    root_map: Mapping[str, str] | None = None, overwrite: bool = False) -> str:
    """Make the catalog directory ``path`` available as ``databroker_lite.catalog[name]``.

    Writes ``<first search directory>/<name>.yml`` atomically. Installing the same
    path and root_map again is a no-op.

    Parameters
    ----------
    path : an existing catalog directory (stored as an absolute path).
    name : the catalog's name: letters, digits, ``_ . -``.
    root_map : ``{old_root: new_root}`` for external files that moved.
    overwrite : replace (or, for one defined in a later search directory, shadow) an
        existing catalog of this name that points elsewhere.

    Returns
    -------
    The config file written.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        _check_name(name)
        raise CatalogError(f"cannot install catalog {name!r}: {path} is not a directory")
    same = check_install(path, name, root_map=root_map, overwrite=overwrite)
    if same is not None:
        return same
    target = os.path.join(catalog_search_path()[0], f"{name}.yml")
    root_map = check_root_map(root_map, f"catalog {name!r}")
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _write_atomic(target, _entry_yaml(name, path, root_map))
    except OSError as exc:
        raise CatalogError(f"cannot write catalog config {target}: {exc}") from exc
    return target


def uninstall_catalog(name: str) -> str:
    """Remove the config file :func:`install_catalog` wrote for ``name``; returns its path.

    Raises :class:`~databroker_lite.errors.CatalogNotFound` if no catalog has that
    name, and :class:`~databroker_lite.errors.CatalogError` if it is defined in a file
    this function did not write (that file is left alone).
    """
    _check_name(name)
    existing = find_catalogs().get(name)
    if existing is None:
        raise CatalogNotFound(f"no named catalog {name!r} to uninstall; known catalogs: "
                              f"{', '.join(sorted(find_catalogs())) or 'none'}")
    target = os.path.abspath(os.path.join(catalog_search_path()[0], f"{name}.yml"))
    sources = _sources_in(existing.config_file)
    if existing.config_file != target or sources != [name]:
        raise CatalogError(f"catalog {name!r} is defined in {existing.config_file}, which "
                           f"install_catalog did not write; edit or remove that file by hand")
    try:
        os.remove(target)
    except OSError as exc:
        raise CatalogError(f"cannot remove {target}: {exc}") from exc
    return target


def _sources_in(filename: str) -> list[str]:
    with open(filename, encoding="utf-8") as f:
        content = _yaml().safe_load(f)
    return [str(k) for k in (content.get("sources") or {})]
