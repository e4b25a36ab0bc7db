"""Content-addressed directory trees for the local store: a commit costs what it changes.

A tree is one node per directory, stored as an immutable object named by the sha256 of its
bytes (as git does). In a directory node a key is a name; a key ending in ``/`` is a
subdirectory (its value the subtree's id), any other key is an object (its value the blob
id). An object store lets ``a`` and ``a/b`` both exist, hence the two kinds of key.

A directory of more than ``LEAF_MAX`` entries is split into up to 16 buckets by one hex digit
of the sha256 of each key (digit 0 at the top, digit 1 below, ...), recursively: a hash
array mapped trie. Its shape depends only on its entries (a directory of at most
``LEAF_MAX`` entries is always a single leaf), so equal directories have equal ids however
they were built. Hence a commit writes only the nodes on its changed paths (a new segment in
a directory of 10,000 writes about three small nodes there, not 10,000 entries), and a diff
skips every subtree whose id is the same on both sides.

Node formats (compact JSON, sorted keys)::

    {"entries": {key: id}}              a leaf: a whole small directory, or one bucket of one
    {"buckets": {digit: [id, count]}}   a split directory; count: entries under the bucket

A root id of ``None`` is the empty tree. Nothing here knows about commits or branches.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Mapping

LEAF_MAX = 16
_MAX_DEPTH = 64  # hex digits in a sha256: past it a leaf may exceed LEAF_MAX

Node = dict


class Nodes:
    """Reads tree nodes through ``load`` and keeps new ones in memory until the caller makes
    them durable (``pending``), so a commit writes all of its nodes before its record."""

    def __init__(self, load: Callable[[str], bytes]) -> None:
        self._load = load
        self.pending: dict[str, bytes] = {}

    def read(self, node_id: str) -> Node:
        data = self.pending.get(node_id)
        return json.loads(data if data is not None else self._load(node_id))

    def write(self, node: Node) -> str:
        data = json.dumps(node, sort_keys=True, separators=(",", ":")).encode()
        node_id = hashlib.sha256(data).hexdigest()
        self.pending[node_id] = data
        return node_id


def _digit(key: str, depth: int) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[depth]


# -- one directory (a leaf or a split trie) ----------------------------------------------
def _dir_get(nodes: Nodes, dir_id: str | None, key: str) -> str | None:
    depth = 0
    while dir_id is not None:
        node = nodes.read(dir_id)
        if "entries" in node:
            return node["entries"].get(key)
        bucket = node["buckets"].get(_digit(key, depth))
        dir_id = bucket[0] if bucket else None
        depth += 1
    return None


def _dir_entries(nodes: Nodes, dir_id: str | None) -> dict[str, str]:
    if dir_id is None:
        return {}
    node = nodes.read(dir_id)
    if "entries" in node:
        return dict(node["entries"])
    out: dict[str, str] = {}
    for child, _ in node["buckets"].values():
        out.update(_dir_entries(nodes, child))
    return out


def _build_dir(nodes: Nodes, entries: dict[str, str], depth: int) -> tuple[str, int] | None:
    """The canonical node of a directory (or bucket at ``depth``) holding ``entries``."""
    if not entries:
        return None
    if len(entries) <= LEAF_MAX or depth >= _MAX_DEPTH:
        return nodes.write({"entries": entries}), len(entries)
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for key, value in entries.items():
        groups[_digit(key, depth)][key] = value
    buckets = {}
    for digit, group in groups.items():
        built = _build_dir(nodes, group, depth + 1)
        assert built is not None  # a group is never empty
        buckets[digit] = list(built)
    return nodes.write({"buckets": buckets}), len(entries)


def _update_dir(
    nodes: Nodes, dir_id: str | None, updates: Mapping[str, str | None], depth: int = 0
) -> tuple[str, int] | None:
    """Set (or, for None, remove) keys of a directory; rewrites only the buckets touched."""
    node = nodes.read(dir_id) if dir_id is not None else {"entries": {}}
    if "entries" in node:
        entries = dict(node["entries"])
        for key, value in updates.items():
            if value is None:
                entries.pop(key, None)
            else:
                entries[key] = value
        return _build_dir(nodes, entries, depth)
    groups: dict[str, dict[str, str | None]] = defaultdict(dict)
    for key, value in updates.items():
        groups[_digit(key, depth)][key] = value
    buckets = dict(node["buckets"])
    for digit, group in groups.items():
        child = buckets.get(digit)
        new = _update_dir(nodes, child[0] if child else None, group, depth + 1)
        if new is None:
            buckets.pop(digit, None)
        else:
            buckets[digit] = list(new)
    count = sum(n for _, n in buckets.values())
    if count <= LEAF_MAX:  # shrunk: back to the canonical single leaf
        merged: dict[str, str] = {}
        for child_id, _ in buckets.values():
            merged.update(_dir_entries(nodes, child_id))
        return _build_dir(nodes, merged, depth)
    return nodes.write({"buckets": buckets}), count


def _dir_diff(
    nodes: Nodes, a: str | None, b: str | None, depth: int = 0
) -> dict[str, tuple[str | None, str | None]]:
    """Keys whose value differs between two directory nodes; equal buckets are skipped."""
    if a == b:
        return {}
    na = nodes.read(a) if a is not None else {"entries": {}}
    nb = nodes.read(b) if b is not None else {"entries": {}}
    if "buckets" in na and "buckets" in nb:
        out: dict[str, tuple[str | None, str | None]] = {}
        for digit in na["buckets"].keys() | nb["buckets"].keys():
            ca, cb = na["buckets"].get(digit), nb["buckets"].get(digit)
            out.update(_dir_diff(nodes, ca and ca[0], cb and cb[0], depth + 1))
        return out
    ea, eb = _dir_entries(nodes, a), _dir_entries(nodes, b)
    return {k: (ea.get(k), eb.get(k)) for k in ea.keys() | eb.keys() if ea.get(k) != eb.get(k)}


# -- whole trees, by path -------------------------------------------------------------
def lookup(nodes: Nodes, root: str | None, path: str) -> str | None:
    """The blob id at ``path``, or None."""
    *dirs, name = path.split("/")
    for d in dirs:
        root = _dir_get(nodes, root, d + "/")
    return _dir_get(nodes, root, name)


def apply(nodes: Nodes, root: str | None, changes: Mapping[str, str | None]) -> str | None:
    """The root after setting each path to its blob id (None removes it). Directories left
    empty disappear, as in an object store. Only nodes on the changed paths are written."""
    updates: dict[str, str | None] = {}
    below: dict[str, dict[str, str | None]] = defaultdict(dict)
    for path, blob in changes.items():
        name, sep, rest = path.partition("/")
        if sep:
            below[name][rest] = blob
        else:
            updates[name] = blob
    for name, sub in below.items():
        key = name + "/"
        updates[key] = apply(nodes, _dir_get(nodes, root, key), sub)
    if not updates:
        return root
    built = _update_dir(nodes, root, updates)
    return built[0] if built else None


def paths(nodes: Nodes, root: str | None, prefix: str = "") -> list[str]:
    """Every object path under ``prefix``, sorted; reads only the subtrees under it."""
    dirs, _, partial = prefix.rpartition("/")
    base = ""
    if dirs:
        for d in dirs.split("/"):
            root = _dir_get(nodes, root, d + "/")
        base = dirs + "/"
    out: list[str] = []
    _walk(nodes, root, base, partial, out)
    return sorted(out)


def _walk(nodes: Nodes, dir_id: str | None, base: str, partial: str, out: list[str]) -> None:
    for key, value in _dir_entries(nodes, dir_id).items():
        if not key.startswith(partial):
            continue
        if key.endswith("/"):
            _walk(nodes, value, base + key, "", out)
        else:
            out.append(base + key)


def diff(nodes: Nodes, a: str | None, b: str | None) -> list[tuple[str, str | None, str | None]]:
    """(path, blob in a, blob in b) for every path that differs, sorted by path."""
    out: list[tuple[str, str | None, str | None]] = []
    _diff(nodes, a, b, "", out)
    return sorted(out)


def _diff(
    nodes: Nodes,
    a: str | None,
    b: str | None,
    base: str,
    out: list[tuple[str, str | None, str | None]],
) -> None:
    for key, (va, vb) in _dir_diff(nodes, a, b).items():
        if key.endswith("/"):
            _diff(nodes, va, vb, base + key, out)
        else:
            out.append((base + key, va, vb))
