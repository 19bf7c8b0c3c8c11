"""The subscription index: which subscriptions can match an event, without trying them all.

Subscriptions are bucketed by resource type and interaction (a project has one index). Inside a
bucket, a subscription whose criteria hold an equality clause (a token code, a local reference
id or ``_id``, with no ``:not``/``:text`` modifier) is filed under each value of that clause;
the others sit in the bucket's *unkeyed* list. For an event the index extracts, once per
indexed parameter, the values the resource has and looks them up, so the cost per event grows
with the subscriptions that can match it, not with all of them. Candidates are then evaluated
fully (:func:`fhirbots.subscriptions.evaluation.evaluate`): the index only ever narrows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhirbots.schemas.events import ChangeEvent, Interaction
from fhirbots.subscriptions.evaluation import subject_of
from fhirbots.subscriptions.model import ALL_INTERACTIONS, Criterion, SubscriptionSpec, Topic
from fhirbots.subscriptions.search import SearchParamDef
from fhirbots.subscriptions.search.entries import ENTRY_BUILDERS
from fhirbots.subscriptions.search.extraction import Extractor
from fhirbots.subscriptions.search.query import ParamClause, ReferenceValue, TokenValue

__all__ = ["IndexKey", "SubscriptionIndex", "index_key"]


@dataclass(frozen=True, slots=True)
class IndexKey:
    """The equality clause a subscription is filed under.

    Attributes:
        param: The parameter (its code identifies the lookup table in a bucket).
        values: Token codes or reference ids; the subscription can only match a resource that
            has one of them.
        extract: The parameter's compiled extractor.
    """

    param: SearchParamDef
    values: frozenset[str]
    extract: Extractor = field(compare=False, hash=False, repr=False)


_SELECTIVITY = {"_id": 4, "reference": 3, "token-system": 2, "token": 1}
"""Preference between keyable clauses: ids and references name few resources, a bare code
(``status=final``) many."""


def _clause_key(clause: ParamClause) -> tuple[int, IndexKey] | None:
    param = clause.param
    if param.type == "token" and clause.modifier is None:
        codes = []
        with_system = True
        for value in clause.values:
            if not isinstance(value, TokenValue) or value.code is None:
                return None
            codes.append(value.code)
            with_system = with_system and bool(value.system)
        rank = "_id" if param.code == "_id" else ("token-system" if with_system else "token")
        return _SELECTIVITY[rank], IndexKey(param, frozenset(codes), clause.extract)
    if param.type == "reference" and clause.modifier in (None, *param.targets):
        ids = []
        for value in clause.values:
            if not isinstance(value, ReferenceValue) or value.ref_id is None:
                return None
            ids.append(value.ref_id)
        return _SELECTIVITY["reference"], IndexKey(param, frozenset(ids), clause.extract)
    return None


def index_key(criteria: Iterable[Criterion]) -> IndexKey | None:
    """The most selective equality clause of ``criteria`` (all ANDed), or None."""
    best: tuple[int, IndexKey] | None = None
    for criterion in criteria:
        for clause in criterion.query.clauses:
            if not isinstance(clause, ParamClause):
                continue
            found = _clause_key(clause)
            if found is not None and (best is None or found[0] > best[0]):
                best = found
    return best[1] if best is not None else None


def _entry_key(param_type: str, entry: Any) -> str | None:
    if param_type == "token":
        code: str | None = entry.code
        return code
    ref_id: str | None = entry.ref_id
    return ref_id


@dataclass
class _Table:
    param: SearchParamDef
    extract: Extractor
    by_value: dict[str, list[SubscriptionSpec]] = field(default_factory=dict)


@dataclass
class _Bucket:
    unkeyed: list[SubscriptionSpec] = field(default_factory=list)
    tables: dict[str, _Table] = field(default_factory=dict)

    def add(self, spec: SubscriptionSpec, key: IndexKey | None) -> None:
        if key is None:
            self.unkeyed.append(spec)
            return
        table = self.tables.get(key.param.code)
        if table is None:
            table = self.tables[key.param.code] = _Table(key.param, key.extract)
        for value in key.values:
            table.by_value.setdefault(value, []).append(spec)


class SubscriptionIndex:
    """Active subscriptions of one project, by resource type, interaction and equality values.

    Args:
        specs: Parsed subscriptions; only those whose status lets them fire are indexed.
        topics: The project's topics by canonical URL (topic subscriptions are filed under
            each of their topic's triggers).
    """

    def __init__(self, specs: Iterable[SubscriptionSpec], topics: Mapping[str, Topic]) -> None:
        self._buckets: dict[tuple[str, Interaction], _Bucket] = {}
        self._disabled: set[str] = set()
        self.size = 0
        """Number of indexed subscriptions."""
        for spec in specs:
            if not spec.fires:
                continue
            self.size += 1
            for resource_type, interaction, criteria in self._placements(spec, topics):
                bucket = self._buckets.setdefault((resource_type, interaction), _Bucket())
                bucket.add(spec, index_key(criteria))

    @staticmethod
    def _placements(
        spec: SubscriptionSpec, topics: Mapping[str, Topic]
    ) -> list[tuple[str, Interaction, list[Criterion]]]:
        if spec.criteria is not None:
            return [
                (spec.criteria.resource_type, interaction, [spec.criteria])
                for interaction in sorted(spec.interactions)
            ]
        topic = topics.get(spec.topic_url or "")
        if topic is None:
            return []
        out: list[tuple[str, Interaction, list[Criterion]]] = []
        for trigger in topic.triggers:
            filters = [f for f in spec.filters if f.resource_type == trigger.resource_type]
            for interaction in sorted(trigger.interactions & ALL_INTERACTIONS):
                out.append((trigger.resource_type, interaction, filters))
        return out

    def disable(self, subscription_id: str) -> None:
        """Stop offering a subscription (it failed at run time) until the index is rebuilt."""
        self._disabled.add(subscription_id)

    def candidates(self, event: ChangeEvent) -> list[SubscriptionSpec]:
        """Subscriptions that can match ``event`` (a superset of those that do), each once."""
        bucket = self._buckets.get((event.resource_type, event.interaction))
        if bucket is None:
            return []
        found: list[SubscriptionSpec] = list(bucket.unkeyed)
        subject = subject_of(event)
        if subject is not None:
            for table in bucket.tables.values():
                selected = table.extract(subject)
                if not selected:
                    continue
                for entry in ENTRY_BUILDERS[table.param.type](selected):
                    key = _entry_key(table.param.type, entry)
                    if key is not None:
                        found.extend(table.by_value.get(key, ()))
        if len(found) < 2 and not self._disabled:
            return found
        seen: set[str] = set()
        unique: list[SubscriptionSpec] = []
        for spec in found:
            if spec.id not in seen and spec.id not in self._disabled:
                seen.add(spec.id)
                unique.append(spec)
        return unique
