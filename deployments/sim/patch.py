"""The three PATCH dialects of the Kubernetes API, applied to plain JSON documents.

- strategic merge patch (``application/strategic-merge-patch+json``): a merge patch in which
  lists of named things (containers, env, ports, volumes ...) are merged by their key instead
  of replaced, with the ``$patch: delete|replace`` directives. The real server reads merge
  keys from the OpenAPI schema; here they come from a table keyed by field name, which is
  right for everything inside a Deployment.
- JSON merge patch (RFC 7386, ``application/merge-patch+json``): lists are replaced.
- JSON patch (RFC 6902, ``application/json-patch+json``): add, remove, replace, move, copy
  and test operations addressed by JSON pointers.

Every function returns a new document and leaves its inputs untouched.
"""

from __future__ import annotations

import copy
from typing import Any

# Field name -> the key its list items are merged on (the patchMergeKey of the schema).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "conditions": "type",
    "ownerReferences": "uid",
}

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class PatchError(ValueError):
    """A patch that cannot be applied. ``malformed`` tells a bad document from a bad fit."""

    def __init__(self, message: str, malformed: bool = False):
        super().__init__(message)
        self.malformed = malformed


def apply_patch(content_type: str, document: dict, patch: Any) -> dict:
    """Apply ``patch`` of the given media type; raise PatchError or LookupError (unknown type)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == STRATEGIC:
        if not isinstance(patch, dict):
            raise PatchError("a strategic merge patch must be a JSON object", malformed=True)
        return strategic_merge(document, patch)
    if media_type == MERGE:
        return merge_patch(document, patch)
    if media_type == JSON_PATCH:
        return json_patch(document, patch)
    raise LookupError(media_type)


# -- strategic merge patch -----------------------------------------------------------------


def strategic_merge(original: Any, patch: dict) -> Any:
    """Merge ``patch`` into ``original``; returns None when the patch deletes the whole map."""
    # One copy up front; the merge below then works in place on what it owns.
    return _merge(copy.deepcopy(original), patch)


def _merge(target: Any, patch: dict) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip_directives(patch)
    if directive is not None:
        raise PatchError(f"unknown patch directive {directive!r}", malformed=True)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [item for item in result[field] if item not in value]
            continue
        if key.startswith("$"):
            # $setElementOrder/... and $retainKeys only refine ordering and pruning.
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and MERGE_KEYS.get(key) and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
        elif isinstance(value, dict):
            merged = _merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = _strip_directives(value)
    return result


def _merge_list(result: list, patch: list, merge_key: str) -> list:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            _strip_directives(item)
            for item in patch
            if not (isinstance(item, dict) and item.get("$patch") == "replace")
        ]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            if item not in result:
                result.append(_strip_directives(item))
            continue
        position = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
            continue
        if position is None:
            result.append(_strip_directives(item))
        else:
            result[position] = _merge(result[position], item)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


# -- JSON merge patch (RFC 7386) -----------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- JSON patch (RFC 6902) -----------------------------------------------------------------


def json_patch(document: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations", malformed=True)
    result = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"invalid JSON patch operation: {operation!r}", malformed=True)
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f'operation "{op}" needs a "value"', malformed=True)
        if op == "add":
            result = _add(result, path, copy.deepcopy(operation["value"]))
        elif op == "remove":
            result, _ = _remove(result, path)
        elif op == "replace":
            result, _ = _remove(result, path)
            result = _add(result, path, copy.deepcopy(operation["value"]))
        elif op == "move":
            result, value = _remove(result, _from(operation))
            result = _add(result, path, value)
        elif op == "copy":
            result = _add(result, path, copy.deepcopy(_get(result, _from(operation))))
        elif op == "test":
            if _get(result, path) != operation["value"]:
                raise PatchError(f'test operation failed at "{path}"')
        else:
            raise PatchError(f'unknown JSON patch operation "{op}"', malformed=True)
    return result


def _from(operation: dict) -> str:
    if "from" not in operation:
        raise PatchError(f'operation "{operation["op"]}" needs a "from"', malformed=True)
    return operation["from"]


def _pointer_steps(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise PatchError(f"invalid JSON pointer {pointer!r}", malformed=True)
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def _index(container: list, step: str, path: str, allow_end: bool) -> int:
    if step == "-" and allow_end:
        return len(container)
    if not step.isdigit():
        raise PatchError(f'"{path}": not a list index')
    index = int(step)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f'"{path}": index out of range')
    return index


def _parent(document: Any, path: str) -> tuple[Any, str]:
    steps = _pointer_steps(path)
    if not steps:
        raise PatchError("the whole document cannot be the target here")
    parent = document
    for step in steps[:-1]:
        if isinstance(parent, dict) and step in parent:
            parent = parent[step]
        elif isinstance(parent, list):
            parent = parent[_index(parent, step, path, allow_end=False)]
        else:
            raise PatchError(f'"{path}": path does not exist')
    return parent, steps[-1]


def _get(document: Any, path: str) -> Any:
    value = document
    for step in _pointer_steps(path):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list):
            value = value[_index(value, step, path, allow_end=False)]
        else:
            raise PatchError(f'"{path}": path does not exist')
    return value


def _add(document: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    parent, step = _parent(document, path)
    if isinstance(parent, dict):
        parent[step] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, step, path, allow_end=True), value)
    else:
        raise PatchError(f'"{path}": parent is not a container')
    return document


def _remove(document: Any, path: str) -> tuple[Any, Any]:
    parent, step = _parent(document, path)
    if isinstance(parent, dict) and step in parent:
        return document, parent.pop(step)
    if isinstance(parent, list):
        return document, parent.pop(_index(parent, step, path, allow_end=False))
    raise PatchError(f'"{path}": path does not exist')
