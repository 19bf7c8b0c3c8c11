"""The three PATCH formats, applied to a resource's current version.

- JSON Patch (RFC 6902, ``application/json-patch+json``): an array of operations.
- JSON Merge Patch (RFC 7386, ``application/merge-patch+json``): an object merged into the
  resource, ``null`` removing an element. A PATCH sent as ``application/json`` is taken as a
  merge patch when its body is an object (what ``fhirpy`` sends) and as a JSON Patch when it is
  an array.
- FHIRPath Patch (``application/fhir+json``): a ``Parameters`` resource with one
  ``operation`` parameter per change, ``type`` add, insert, delete, replace or move, as the
  R4 specification and HAPI FHIR define it; paths are FHIRPath expressions.

Whatever the format, the result may not change ``resourceType`` or ``id``; it is then
validated like an update by :class:`~fhirbots.engine.fhir.service.FhirService`. A malformed
patch is a 400, one that cannot be applied to this resource a 422.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import fhirpathpy
import jsonpatch

from fhirbots.engine.errors import BadRequest, Unprocessable, UnsupportedMediaType
from fhirbots.engine.storage.model import StoredResource
from fhirbots.schemas.validation import fhir_model

__all__ = [
    "FHIRPATH_PATCH",
    "JSON_PATCH",
    "MERGE_PATCH",
    "PATCH_MEDIA_TYPES",
    "apply_json_patch",
    "apply_patch",
]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
FHIRPATH_PATCH = "application/fhir+json"
PLAIN_JSON = "application/json"

PATCH_MEDIA_TYPES = frozenset({JSON_PATCH, MERGE_PATCH, FHIRPATH_PATCH, PLAIN_JSON})
"""The Content-Types a PATCH may have."""

_NODE = "__fhirbots_patch_node__"
"""Key marking each object of the copy FHIRPath evaluates, to find where its results live."""

_ROOT = "$"
"""Key of the resource in the holder that makes it a slot like any other."""

_TRAILING_NAME = re.compile(
    r"^(?P<parent>.+)\.(?P<name>[A-Za-z][A-Za-z0-9]*)(?:\[(?P<index>\d+)\])?$"
)


def apply_patch(current: StoredResource, document: Any, media_type: str) -> dict[str, Any]:
    """``current``'s content with ``document`` (a patch of ``media_type``) applied.

    Raises:
        UnsupportedMediaType: ``media_type`` is no patch format.
        BadRequest: a malformed patch.
        Unprocessable: a patch that does not apply, or changes ``resourceType`` or ``id``.
    """
    if media_type == JSON_PATCH or (media_type == PLAIN_JSON and isinstance(document, list)):
        return apply_json_patch(current, document)
    if media_type in (MERGE_PATCH, PLAIN_JSON):
        return _checked(current, _merge(_content(current), _object(document, "a merge patch")))
    if media_type == FHIRPATH_PATCH:
        return _checked(current, _fhirpath_patch(_content(current), document))
    wanted = ", ".join(sorted(PATCH_MEDIA_TYPES))
    raise UnsupportedMediaType(f"PATCH Content-Type {media_type!r} is not supported; send {wanted}")


def apply_json_patch(current: StoredResource, patch: Any) -> dict[str, Any]:
    """``current``'s content with a JSON Patch (RFC 6902) applied; 422 if it fails."""
    if not isinstance(patch, list):
        raise BadRequest("a JSON Patch body must be an array of operations")
    try:
        patched: dict[str, Any] = jsonpatch.apply_patch(_content(current), patch)
    except jsonpatch.InvalidJsonPatch as exc:
        raise BadRequest(f"malformed JSON Patch: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise Unprocessable(f"JSON Patch failed: {exc}") from exc
    except (TypeError, KeyError, AttributeError) as exc:
        raise BadRequest(f"malformed JSON Patch: {exc!r}") from exc
    return _checked(current, patched)


def _content(current: StoredResource) -> dict[str, Any]:
    return copy.deepcopy(current.content or {})


def _object(document: Any, what: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return document


def _checked(current: StoredResource, patched: Any) -> dict[str, Any]:
    if not isinstance(patched, dict):
        raise Unprocessable("the patched resource is not a JSON object")
    if patched.get("id") != current.id or patched.get("resourceType") != current.resource_type:
        raise Unprocessable("a patch may not change resourceType or id")
    return patched


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged.get(key), value)
    return merged


# -- FHIRPath Patch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """Where a value lives: ``container[key]``, and, for an item of a list, its index."""

    container: dict[str, Any]
    key: str
    index: int | None = None

    @property
    def is_root(self) -> bool:
        return self.key == _ROOT

    def get(self) -> Any:
        value = self.container[self.key]
        return value if self.index is None else value[self.index]


def _fhirpath_patch(resource: dict[str, Any], document: Any) -> dict[str, Any]:
    params = _object(document, "a FHIRPath Patch")
    if params.get("resourceType") != "Parameters":
        raise BadRequest(
            "a PATCH in application/fhir+json must be a Parameters resource (FHIRPath Patch)"
        )
    for i, parameter in enumerate(params.get("parameter") or []):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            raise BadRequest(f"{where}: a FHIRPath Patch has only 'operation' parameters")
        parts = _parts(parameter, where)
        try:
            _operate(resource, parts)
        except (BadRequest, Unprocessable) as exc:
            raise exc.located(where) from None
    return resource


def _parts(parameter: dict[str, Any], where: str) -> dict[str, Any]:
    """The operation's parts by name; ``value`` is the FHIR value (a primitive or an object)."""
    out: dict[str, Any] = {}
    for part in parameter.get("part") or []:
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise BadRequest(f"{where}: every part needs a name")
        out[part["name"]] = _value_of(part)
    if out.get("type") not in ("add", "insert", "delete", "replace", "move"):
        raise BadRequest(f"{where}: type must be add, insert, delete, replace or move")
    if not isinstance(out.get("path"), str) or not out["path"]:
        raise BadRequest(f"{where}: the operation needs a path")
    return out


def _value_of(part: dict[str, Any]) -> Any:
    for key, value in part.items():
        if key.startswith("value") and len(key) > len("value"):
            return value
    if part.get("resource") is not None:
        return part["resource"]
    if part.get("part"):
        # A complex value given part by part (HAPI's form): a repeated name makes a list.
        built: dict[str, Any] = {}
        for sub in part["part"]:
            if not isinstance(sub, dict) or not isinstance(sub.get("name"), str):
                raise BadRequest("every part of a complex value needs a name")
            value = _value_of(sub)
            if sub["name"] in built:
                previous = built[sub["name"]]
                built[sub["name"]] = [
                    *(previous if isinstance(previous, list) else [previous]),
                    value,
                ]
            else:
                built[sub["name"]] = value
        return built
    return None


def _operate(resource: dict[str, Any], op: dict[str, Any]) -> None:
    kind, path = op["type"], op["path"]
    if kind == "delete":
        slots = _locate(resource, path)
        if len(slots) > 1:
            raise Unprocessable(
                f"delete: {path} names {len(slots)} elements, at most one is allowed"
            )
        for slot in slots:
            _remove(_not_root(slot, kind))
        return
    if kind == "replace":
        slot = _one(resource, path, kind)
        _set(_not_root(slot, kind), _required(op, "value", kind))
        return
    if kind == "add":
        name = op.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("add: the operation needs a name")
        value = _required(op, "value", kind)
        owner = _one(resource, path, kind).get()
        if not isinstance(owner, dict):
            raise Unprocessable(f"add: {path} is not an element that can have children")
        if isinstance(owner.get(name), list):
            owner[name].append(value)
        elif name in owner:
            raise Unprocessable(f"add: {path}.{name} already has a value; use replace")
        else:
            owner[name] = [value]
            if not _fits(resource):
                owner[name] = value  # a single-valued element
        return
    items = _list_at(resource, path, kind)
    if kind == "insert":
        index = _index(op, "index", len(items) + 1, kind)
        items.insert(index, _required(op, "value", kind))
        return
    source = _index(op, "source", len(items), kind)
    destination = _index(op, "destination", len(items), kind)
    items.insert(destination, items.pop(source))


def _not_root(slot: _Slot, kind: str) -> _Slot:
    if slot.is_root:
        raise Unprocessable(f"{kind}: the resource itself cannot be the target")
    return slot


def _required(op: dict[str, Any], name: str, kind: str) -> Any:
    if op.get(name) is None:
        raise BadRequest(f"{kind}: the operation needs a {name}")
    return op[name]


def _index(op: dict[str, Any], name: str, bound: int, kind: str) -> int:
    value = op.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{kind}: the operation needs an integer {name}")
    if not 0 <= value < bound:
        raise Unprocessable(f"{kind}: {name} {value} is outside the list (0 to {bound - 1})")
    return value


def _one(resource: dict[str, Any], path: str, kind: str) -> _Slot:
    slots = _locate(resource, path)
    if len(slots) != 1:
        raise Unprocessable(f"{kind}: {path} names {len(slots)} elements, not exactly one")
    return slots[0]


def _list_at(resource: dict[str, Any], path: str, kind: str) -> list[Any]:
    slots = _locate(resource, path)
    owners = {(id(s.container), s.key) for s in slots}
    if len(owners) != 1:
        raise Unprocessable(f"{kind}: {path} does not name one list")
    slot = slots[0]
    value = slot.container[slot.key]
    if not isinstance(value, list):
        slot.container[slot.key] = value = [value]
    return value


def _set(slot: _Slot, value: Any) -> None:
    if slot.index is None:
        slot.container[slot.key] = value
    else:
        slot.container[slot.key][slot.index] = value


def _remove(slot: _Slot) -> None:
    if slot.index is None:
        del slot.container[slot.key]
        return
    items = slot.container[slot.key]
    del items[slot.index]
    if not items:
        del slot.container[slot.key]


def _fits(resource: dict[str, Any]) -> bool:
    """Whether the resource's model accepts it (tells a list element from a single one)."""
    model = fhir_model(str(resource.get("resourceType")))
    if model is None:
        return True
    try:
        model.model_validate(resource)
    except ValueError:
        return False
    return True


def _locate(resource: dict[str, Any], path: str) -> list[_Slot]:
    """The slots the FHIRPath ``path`` selects in ``resource``.

    FHIRPath answers with copies, so it runs on a copy whose every object carries a mark
    naming its slot; a path ending in a primitive element (``Patient.birthDate``,
    ``Patient.name[0].given[1]``) is found through the object its last step starts from.
    """
    marked, slots = _marked(resource)
    results = _evaluate(marked, path)
    if all(isinstance(r, dict) and _NODE in r for r in results):
        return [slots[r[_NODE]] for r in results]
    match = _TRAILING_NAME.match(path)
    if match is None:
        raise Unprocessable(f"{path} selects values that cannot be changed in place")
    name, index = match.group("name"), match.group("index")
    found: list[_Slot] = []
    for owner in _evaluate(marked, match.group("parent")):
        if not isinstance(owner, dict) or _NODE not in owner:
            raise Unprocessable(f"{path} selects values that cannot be changed in place")
        container = slots[owner[_NODE]].get()
        if name not in container:
            continue
        value = container[name]
        if isinstance(value, list):
            positions = range(len(value)) if index is None else [int(index)]
            found += [_Slot(container, name, i) for i in positions if i < len(value)]
        elif index in (None, "0"):
            found.append(_Slot(container, name))
    return found


def _marked(resource: dict[str, Any]) -> tuple[dict[str, Any], list[_Slot]]:
    """A copy of ``resource`` with every object marked by its number in the returned slots
    (the first, :data:`_ROOT` of a holder, is the resource itself)."""
    slots = [_Slot({_ROOT: resource}, _ROOT)]

    def mark(value: Any, slot: _Slot) -> Any:
        if isinstance(value, dict):
            slots.append(slot)
            number = len(slots) - 1
            inner = slot.get()
            out = {k: walk(v, inner, k) for k, v in value.items()}
            out[_NODE] = number
            return out
        return value

    def walk(value: Any, container: dict[str, Any], key: str) -> Any:
        if isinstance(value, list):
            return [mark(item, _Slot(container, key, i)) for i, item in enumerate(value)]
        return mark(value, _Slot(container, key))

    root = {k: walk(v, resource, k) for k, v in resource.items()}
    root[_NODE] = 0
    return root, slots


def _evaluate(resource: dict[str, Any], path: str) -> list[Any]:
    try:
        result = fhirpathpy.evaluate(resource, path)
    except Exception as exc:  # fhirpathpy raises many kinds for a bad expression
        raise BadRequest(f"invalid FHIRPath {path!r}: {exc}") from exc
    return list(result)
