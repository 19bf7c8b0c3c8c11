"""Referential integrity: references to local resources must resolve, referenced resources stay.

* On write, every literal reference to a resource of this server (``Patient/1``,
  ``Patient/1/_history/2``, or an absolute URL starting with one of the server's base URLs) must
  name a live resource of the project, or one written by the same transaction. Contained
  (``#x``), logical (identifier only), conditional (``Patient?identifier=...``), ``urn:`` and
  external references are not checked. A miss is 422 naming the element and the reference.
* On delete, a resource that live resources of the project reference (as a reference search
  parameter indexes it, :meth:`fhirbots.engine.storage.port.Storage.referrers`) is not deleted:
  409 naming one referrer. ``_cascade=delete`` deletes the referrers too, and theirs, up to
  :attr:`IntegrityPolicy.cascade_limit` resources, in one transaction.
* Records of what happened (:data:`RECORD_TYPES`: AuditEvent, Provenance) are left out of both:
  their references are not checked, they never block a delete and a cascade leaves them. A
  stored Bundle's references are not checked either (:data:`UNCHECKED_ON_WRITE`).

Both checks can be turned off (:class:`IntegrityPolicy`, from the settings
``FHIRBOTS_REFERENTIAL_INTEGRITY_ON_WRITE`` and ``..._ON_DELETE``). The functions here return
problems as values; :class:`fhirbots.engine.fhir.service.FhirService` raises them and
``$validate`` reports all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence, Set
from dataclasses import dataclass
from typing import Any

from fhirbots.engine.errors import BadRequest, Conflict, FhirError, Issue, Unprocessable
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.model import CreateOp, DeleteOp, UpdateOp, WriteOp
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.validation import is_known_type

__all__ = [
    "CASCADE_LIMIT",
    "RECORD_TYPES",
    "UNCHECKED_ON_WRITE",
    "IntegrityPolicy",
    "Key",
    "LocalReference",
    "blocked_issue",
    "cascade_closure",
    "cascade_requested",
    "check_writes",
    "delete_blockers",
    "local_references",
    "parse_local",
    "unresolved_references",
]

Key = tuple[str, str]
"""``(resource type, id)``."""

CASCADE_LIMIT = 1000
"""Most resources one ``_cascade=delete`` deletes: bounds the transaction and the time it takes;
a larger cascade is refused with 409 before anything is deleted."""

RECORD_TYPES = frozenset({"AuditEvent", "Provenance"})
"""Types left out of referential integrity: they record what happened, and may name resources
deleted since (a bot's AuditEvent about a deleted Observation), without keeping them."""

UNCHECKED_ON_WRITE = RECORD_TYPES | {"Bundle"}
"""Types whose references are not checked on write: the records, and Bundles (a stored
document or collection resolves its entries' references against their ``fullUrl``s)."""

_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$")
"""``Type/id`` with an optional version (FHIR R4 ids: 1 to 64 of letters, digits, '-', '.')."""


@dataclass(frozen=True, slots=True)
class IntegrityPolicy:
    """Which referential integrity checks run, and what counts as this server.

    Attributes:
        on_write: references to local resources must resolve (default True;
            ``FHIRBOTS_REFERENTIAL_INTEGRITY_ON_WRITE``).
        on_delete: a referenced resource cannot be deleted (default True;
            ``FHIRBOTS_REFERENTIAL_INTEGRITY_ON_DELETE``).
        base_urls: absolute URLs starting with one of these (the server's base URLs, without a
            trailing slash) are local references.
        cascade_limit: most resources one ``_cascade=delete`` deletes.
    """

    on_write: bool = True
    on_delete: bool = True
    base_urls: tuple[str, ...] = ()
    cascade_limit: int = CASCADE_LIMIT

    def __post_init__(self) -> None:
        if self.cascade_limit < 1:
            raise ValueError(f"cascade_limit must be at least 1, not {self.cascade_limit}")

    @classmethod
    def from_settings(cls, settings: Settings) -> IntegrityPolicy:
        """The policy the settings ask for; the server's base URL is
        :meth:`Settings.base_url` (``FHIRBOTS_PUBLIC_URL`` when set)."""
        return cls(
            on_write=settings.referential_integrity_on_write,
            on_delete=settings.referential_integrity_on_delete,
            base_urls=(settings.base_url(),),
            cascade_limit=settings.cascade_delete_limit,
        )

    def target_texts(self, key: Key) -> list[str]:
        """How a reference to ``key`` is indexed: ``Type/id`` and each absolute form."""
        relative = f"{key[0]}/{key[1]}"
        return [relative, *(f"{base}/{relative}" for base in self.base_urls)]


@dataclass(frozen=True, slots=True)
class LocalReference:
    """A literal reference to a resource of this server, where it was found."""

    path: str
    """The element holding it (``Observation.subject``, ``Observation.performer[0]``)."""
    reference: str
    """The reference as written."""
    key: Key
    """The resource it names."""


def parse_local(reference: str, base_urls: Iterable[str] = ()) -> Key | None:
    """The ``(type, id)`` a literal reference names on this server, or None when it is not a
    reference to a local resource (contained, conditional, ``urn:``, external)."""
    text = reference
    if "://" in text:
        for base in base_urls:
            if text.startswith(base + "/"):
                text = text[len(base) + 1 :]
                break
        else:
            return None
    match = _RELATIVE.match(text)
    if match is None or not is_known_type(match.group(1)):
        return None
    return match.group(1), match.group(2)


def _walk(value: Any, path: str, base_urls: Sequence[str]) -> Iterator[LocalReference]:
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            key = parse_local(reference, base_urls)
            if key is not None:
                yield LocalReference(path, reference, key)
        for name, item in value.items():
            if isinstance(item, (dict, list)):
                yield from _walk(item, f"{path}.{name}", base_urls)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, (dict, list)):
                yield from _walk(item, f"{path}[{index}]", base_urls)


def local_references(
    resource: dict[str, Any], base_urls: Sequence[str] = ()
) -> list[LocalReference]:
    """Every literal reference to a local resource in ``resource``, contained resources too."""
    return list(_walk(resource, str(resource.get("resourceType", "Resource")), base_urls))


async def unresolved_references(
    storage: Storage,
    project: str,
    resources: Sequence[dict[str, Any]],
    policy: IntegrityPolicy,
    *,
    written: Set[Key] = frozenset(),
    deleted: Set[Key] = frozenset(),
) -> list[list[Issue]]:
    """Per resource, an issue for each local reference that names no live resource.

    Args:
        storage: The datastore.
        project: The project written to.
        resources: The resources about to be written.
        policy: Gives the base URLs.
        written: Resources the same transaction creates or updates (they count as existing).
        deleted: Resources the same transaction deletes (they count as missing).

    Returns:
        One list per resource, in order; empty lists when every reference resolves.
    """
    found = [
        []
        if resource.get("resourceType") in UNCHECKED_ON_WRITE
        else local_references(resource, policy.base_urls)
        for resource in resources
    ]
    wanted = {ref.key for refs in found for ref in refs} - written
    live = await storage.existing(project, wanted) if wanted else set()
    live = (live | set(written)) - set(deleted)
    return [
        [
            Issue(
                f"{ref.path}: the reference {ref.reference!r} names no resource of the project",
                code="not-found",
                expression=(ref.path,),
            )
            for ref in refs
            if ref.key not in live
        ]
        for refs in found
    ]


async def delete_blockers(
    storage: Storage,
    project: str,
    targets: Iterable[Key],
    policy: IntegrityPolicy,
    *,
    exempt: Set[Key] = frozenset(),
    limit: int = 1,
) -> list[tuple[Key, Key]]:
    """``(target, referrer)``: live resources that reference one of ``targets`` and are not
    themselves in ``targets`` or ``exempt`` (written by the same transaction), at most
    ``limit``."""
    by_text = {text: key for key in targets for text in policy.target_texts(key)}
    if not by_text:
        return []
    skip = set(exempt) | set(by_text.values())
    # Referrers that are skipped still count against the storage's limit: ask for enough.
    rows = await storage.referrers(
        project, list(by_text), limit=limit + len(skip), skip_types=RECORD_TYPES
    )
    blockers: list[tuple[Key, Key]] = []
    for source_type, source_id, text in rows:
        source = (source_type, source_id)
        if source not in skip and (by_text[text], source) not in blockers:
            blockers.append((by_text[text], source))
    return blockers[:limit]


def blocked_issue(target: Key, referrer: Key) -> Issue:
    """The issue of a delete that ``referrer`` blocks."""
    return Issue(
        f"{target[0]}/{target[1]} is referenced by {referrer[0]}/{referrer[1]}: delete or"
        " change the referrer first, or delete with _cascade=delete",
        code="conflict",
    )


def cascade_requested(value: str | None) -> bool:
    """Whether a delete's ``_cascade`` parameter asks to delete the referrers too.

    Raises:
        BadRequest: a value other than ``delete``.
    """
    if value is None:
        return False
    if value != "delete":
        raise BadRequest(f"_cascade must be 'delete', not {value!r}")
    return True


async def cascade_closure(
    storage: Storage, project: str, root: Key, policy: IntegrityPolicy
) -> list[Key]:
    """``root`` and every live resource that references it, directly or through others:
    what ``_cascade=delete`` deletes, ``root`` first.

    Raises:
        Conflict: more than ``policy.cascade_limit`` resources would be deleted.
    """
    closure: dict[Key, None] = {root: None}
    frontier = [root]
    while frontier:
        texts = [text for key in frontier for text in policy.target_texts(key)]
        rows = await storage.referrers(
            project, texts, limit=policy.cascade_limit + 1, skip_types=RECORD_TYPES
        )
        frontier = []
        for source_type, source_id, _ in rows:
            source = (source_type, source_id)
            if source not in closure:
                closure[source] = None
                frontier.append(source)
        if len(closure) > policy.cascade_limit:
            raise Conflict(
                f"_cascade=delete of {root[0]}/{root[1]} would delete more than"
                f" {policy.cascade_limit} resources; delete some referrers first"
            )
    return list(closure)


def _written_key(op: WriteOp) -> Key | None:
    if isinstance(op, UpdateOp):
        return op.resource_type, op.id
    if isinstance(op, CreateOp) and op.id is not None:
        return str(op.resource.get("resourceType")), op.id
    return None


async def check_writes(
    storage: Storage,
    project: str,
    ops: Sequence[WriteOp],
    policy: IntegrityPolicy,
    where: Sequence[str] | None = None,
) -> None:
    """Refuse ``ops`` (validated operations applied together) that break referential
    integrity, as the policy asks.

    Args:
        storage: The datastore.
        project: The project written to.
        ops: The operations, in order.
        policy: Which checks run.
        where: A label per operation (``Bundle.entry[3]``) put before its errors.

    Raises:
        Unprocessable: a written resource holds a local reference that names no resource
            (every such reference of the first resource with any is named).
        Conflict: a deleted resource is referenced by a resource that stays (one is named).
    """
    written = {key for op in ops if (key := _written_key(op)) is not None}
    deleted = {(op.resource_type, op.id) for op in ops if isinstance(op, DeleteOp)}

    def located(error: FhirError, index: int) -> FhirError:
        return error.located(where[index]) if where is not None else error

    if policy.on_write:
        writes = [(i, op) for i, op in enumerate(ops) if not isinstance(op, DeleteOp)]
        found = await unresolved_references(
            storage,
            project,
            [op.resource for _, op in writes],
            policy,
            written=written,
            deleted=deleted,
        )
        for (index, _), issues in zip(writes, found, strict=True):
            if issues:
                message = "; ".join(issue.diagnostics for issue in issues)
                raise located(Unprocessable(message, issues=tuple(issues)), index)
    if policy.on_delete and deleted:
        # Deleting what does not exist changes nothing, whoever names it.
        live = await storage.existing(project, deleted)
        blockers = await delete_blockers(storage, project, live, policy, exempt=written)
        if blockers:
            target, referrer = blockers[0]
            issue = blocked_issue(target, referrer)
            index = next(
                i
                for i, op in enumerate(ops)
                if isinstance(op, DeleteOp) and (op.resource_type, op.id) == target
            )
            raise located(Conflict(issue.diagnostics, issues=(issue,)), index)
