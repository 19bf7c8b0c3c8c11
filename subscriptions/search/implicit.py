"""Implicit code systems: the system a primitive ``code`` element's codes belong to.

``Patient.gender`` holds ``male`` without a system, yet the code is
``http://hl7.org/fhir/administrative-gender|male``: its required binding names one code system.
A token search ``gender=http://hl7.org/fhir/administrative-gender|male`` therefore matches the
element, as HAPI and Medplum do. The table ``data/implicit_systems.json`` is generated from the
R4 definitions by :mod:`fhirbots.subscriptions.search.generate_implicit_systems`.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from fhirbots.subscriptions.search.registry import SearchParamDef, split_union

__all__ = ["DATA_PATH", "implicit_system", "implicit_systems"]

DATA_PATH = Path(__file__).resolve().parent / "data" / "implicit_systems.json"


@cache
def implicit_systems() -> dict[str, str]:
    """Element path (``Patient.gender``) -> its implicit code system (loaded once)."""
    loaded: dict[str, str] = json.loads(DATA_PATH.read_text(encoding="utf-8"))
    return loaded


def implicit_system(param: SearchParamDef) -> str | None:
    """The implicit code system of the ``code`` elements a token parameter selects, if any.

    Only when every member of the parameter's expression that is a bound ``code`` element names
    the same system (``Observation.status``); parameters over Codings only have none.
    """
    if param.type != "token" or param.expression is None:
        return None
    table = implicit_systems()
    found = {table[part] for part in split_union(param.expression) if part in table}
    return found.pop() if len(found) == 1 else None
