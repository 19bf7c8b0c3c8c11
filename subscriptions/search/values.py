"""Typed index values: what a resource element contributes to a search parameter.

Both the SQL index (:mod:`fhirbots.engine.storage.search_index`) and the in-memory matcher work on
these entries, so a resource matches in memory exactly when its rows match in SQL. One entry becomes
one index row.

Dates become inclusive ranges of microseconds since the Unix epoch (UTC; a date-time without a
zone is read as UTC). Strings carry an exact form and a normalised form (accents removed, case
folded) for the default starts-with match.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, NamedTuple

__all__ = [
    "MAX_US",
    "MIN_US",
    "DateEntry",
    "NumberEntry",
    "QuantityEntry",
    "ReferenceEntry",
    "StringEntry",
    "TokenEntry",
    "UriEntry",
    "date_entries",
    "normalize",
    "number_entries",
    "parse_date_range",
    "parse_reference",
    "quantity_entries",
    "reference_entries",
    "string_entries",
    "token_entries",
    "uri_entries",
]

MIN_US = -(2**62)
"""Open lower bound of a date range (a Period without start); fits a signed 64-bit column."""
MAX_US = 2**62
"""Open upper bound of a date range (a Period without end, i.e. still ongoing)."""

_NORMALIZE_CACHE = 65_536
"""Normalised strings kept: displays and names repeat across resources (a few MB at most)."""
_DATE_CACHE = 65_536
"""Parsed date ranges kept: the same dates recur in one patient's resources and criteria."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class StringEntry(NamedTuple):
    """A string value: ``norm`` for starts-with/contains, ``exact`` for ``:exact``."""

    norm: str
    exact: str


class TokenEntry(NamedTuple):
    """A coded value (Coding, CodeableConcept text, Identifier, ContactPoint, code, boolean).

    ``text`` is the normalised display/text used by ``:text``; ``type_system``/``type_code``
    are one coding of ``Identifier.type`` for ``:of-type``.
    """

    system: str | None
    code: str | None
    text: str | None
    type_system: str | None = None
    type_code: str | None = None


class ReferenceEntry(NamedTuple):
    """A reference: local ``ref_type``/``ref_id``, the literal ``url``, logical identifier."""

    ref_type: str | None
    ref_id: str | None
    url: str | None
    id_system: str | None = None
    id_value: str | None = None


class DateEntry(NamedTuple):
    """An inclusive range of instants in microseconds since the epoch."""

    low: int
    high: int


class NumberEntry(NamedTuple):
    """A number (``low == high``) or a Range (open ends are infinite)."""

    low: float
    high: float


class QuantityEntry(NamedTuple):
    """A Quantity (``low == high``) or a Range, with its unit system, code and unit text."""

    low: float
    high: float
    system: str | None
    code: str | None
    unit: str | None


class UriEntry(NamedTuple):
    """A uri, url or canonical value."""

    uri: str


@lru_cache(maxsize=_NORMALIZE_CACHE)
def normalize(text: str) -> str:
    """Fold ``text`` for the string default match: strip accents, fold case, squeeze spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


# --- strings -------------------------------------------------------------------------------

_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _string_items(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for item in value for v in _string_items(item)]
    if isinstance(value, dict):
        is_address = any(key in value for key in ("line", "city", "postalCode", "country"))
        parts = _ADDRESS_PARTS if is_address else _NAME_PARTS
        return [s for key in parts if key in value for s in _string_items(value[key])]
    return []


def string_entries(value: Any) -> list[StringEntry]:
    """Entries of a string, HumanName or Address value (one per textual part)."""
    return [StringEntry(normalize(s), s) for s in _string_items(value) if s]


# --- tokens --------------------------------------------------------------------------------

_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


def _coding_entry(coding: dict[str, Any]) -> TokenEntry | None:
    system = coding.get("system")
    code = coding.get("code")
    display = coding.get("display")
    if system is None and code is None and display is None:
        return None
    return TokenEntry(system, code, normalize(display) if isinstance(display, str) else None)


def _identifier_entries(ident: dict[str, Any]) -> list[TokenEntry]:
    system = ident.get("system")
    value = ident.get("value")
    id_type = ident.get("type") or {}
    text = id_type.get("text")
    norm = normalize(text) if isinstance(text, str) else None
    codings = [c for c in id_type.get("coding", []) if isinstance(c, dict)]
    if not codings:
        return [TokenEntry(system, value, norm)]
    return [TokenEntry(system, value, norm, c.get("system"), c.get("code")) for c in codings]


def token_entries(value: Any) -> list[TokenEntry]:
    """Entries of a token value, recognised by shape.

    A CodeableConcept gives one entry per coding plus one for its text; an Identifier one per
    type coding (or one); a ContactPoint its value with its kind as system; a primitive code,
    string or boolean the code alone.
    """
    if isinstance(value, bool):
        return [TokenEntry(None, "true" if value else "false", None)]
    if isinstance(value, str | int | float):
        return [TokenEntry(None, str(value), None)]
    if isinstance(value, list):
        return [e for item in value for e in token_entries(item)]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "value" not in value and "code" not in value):
        found: list[TokenEntry] = []
        for coding in value.get("coding", []):
            entry = _coding_entry(coding) if isinstance(coding, dict) else None
            if entry is not None:
                found.append(entry)
        text = value.get("text")
        if isinstance(text, str):
            found.append(TokenEntry(None, None, normalize(text)))
        return found
    if "value" in value:
        system = value.get("system")
        is_contact = (
            isinstance(system, str)
            and system in _CONTACT_SYSTEMS
            and "type" not in value
            and "assigner" not in value
        ) or "rank" in value
        if is_contact:
            return [TokenEntry(system, str(value["value"]), None)]
        return _identifier_entries(value)
    entry = _coding_entry(value)
    return [entry] if entry is not None else []


# --- references ----------------------------------------------------------------------------

_LOCAL_REF = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_ABSOLUTE_REF = re.compile(r"/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def parse_reference(text: str) -> ReferenceEntry:
    """Split a literal reference into its local type/id (relative references only) and url.

    A version suffix (``/_history/n``) is dropped; absolute and ``urn:`` references keep only
    their url, since they are not known to be local.
    """
    match = _LOCAL_REF.match(text)
    if match:
        ref_type, ref_id = match.group(1), match.group(2)
        return ReferenceEntry(ref_type, ref_id, f"{ref_type}/{ref_id}")
    if "/_history/" in text:
        text = text.split("/_history/", 1)[0]
    return ReferenceEntry(None, None, text)


def reference_type(text: str, declared: str | None) -> str | None:
    """The resource type a reference points to, from its text or its ``type`` element."""
    match = _LOCAL_REF.match(text) or _ABSOLUTE_REF.search(text)
    if match:
        return match.group(1)
    return declared


def reference_entries(value: Any) -> list[ReferenceEntry]:
    """Entries of a Reference (literal and/or logical) or a canonical/uri value."""
    if isinstance(value, list):
        return [e for item in value for e in reference_entries(item)]
    if isinstance(value, str):
        return [parse_reference(value.split("|", 1)[0])]
    if not isinstance(value, dict):
        return []
    found: list[ReferenceEntry] = []
    ref = value.get("reference")
    if isinstance(ref, str):
        found.append(parse_reference(ref))
    ident = value.get("identifier")
    if isinstance(ident, dict) and ("system" in ident or "value" in ident):
        found.append(ReferenceEntry(None, None, None, ident.get("system"), ident.get("value")))
    return found


# --- dates ---------------------------------------------------------------------------------


def _to_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


@lru_cache(maxsize=_DATE_CACHE)
def parse_date_range(text: str) -> DateEntry | None:
    """The implicit range of a FHIR date, dateTime or instant, or None if malformed.

    ``2020`` covers the whole year, ``2020-03`` the month, ``2020-03-04`` the day, and a time
    the minute, second or fraction it is written to. A time without zone is read as UTC.
    """
    match = _DATE_RE.match(text)
    if match is None:
        return None
    g = match.groupdict()
    try:
        year = int(g["y"])
        month = int(g["m"] or 1)
        day = int(g["d"] or 1)
        tz: timezone = UTC
        if g["tz"] and g["tz"] != "Z":
            sign = 1 if g["tz"][0] == "+" else -1
            hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
            tz = timezone(timedelta(minutes=sign * (hours * 60 + minutes)))
        frac = g["f"] or ""
        micro = int((frac + "000000")[:6]) if frac else 0
        start = datetime(
            year, month, day, int(g["H"] or 0), int(g["M"] or 0), int(g["S"] or 0), micro, tz
        )
    except ValueError:
        return None
    low = _to_us(start)
    if g["H"] is not None:
        if g["S"] is None:
            width = 60_000_000
        elif frac:
            width = 10 ** max(0, 6 - len(frac))
        else:
            width = 1_000_000
        return DateEntry(low, low + width - 1)
    if g["d"] is not None:
        return DateEntry(low, low + 86_400_000_000 - 1)
    if g["m"] is not None:
        ny, nm = _add_months(year, month, 1)
        return DateEntry(low, _to_us(datetime(ny, nm, 1, tzinfo=UTC)) - 1)
    return DateEntry(low, _to_us(datetime(year + 1, 1, 1, tzinfo=UTC)) - 1)


def date_entries(value: Any) -> list[DateEntry]:
    """Entries of a date, dateTime, instant, Period or Timing value."""
    if isinstance(value, list):
        return [e for item in value for e in date_entries(item)]
    if isinstance(value, str):
        entry = parse_date_range(value)
        return [entry] if entry is not None else []
    if not isinstance(value, dict):
        return []
    if "start" in value or "end" in value:
        start = parse_date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = parse_date_range(value["end"]) if isinstance(value.get("end"), str) else None
        if start is None and end is None:
            return []
        return [DateEntry(start.low if start else MIN_US, end.high if end else MAX_US)]
    if "event" in value or "repeat" in value:
        found = date_entries(value.get("event", []))
        bounds = (value.get("repeat") or {}).get("boundsPeriod")
        if bounds is not None:
            found.extend(date_entries(bounds))
        return found
    return []


# --- numbers and quantities ----------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def number_entries(value: Any) -> list[NumberEntry]:
    """Entries of a decimal/integer, a Quantity's value or a Range."""
    if isinstance(value, list):
        return [e for item in value for e in number_entries(item)]
    number = _number(value)
    if number is not None:
        return [NumberEntry(number, number)]
    if isinstance(value, dict):
        return [NumberEntry(q.low, q.high) for q in quantity_entries(value)]
    return []


def quantity_entries(value: Any) -> list[QuantityEntry]:
    """Entries of a Quantity (Age, Duration, ...), a Range, or a bare number."""
    if isinstance(value, list):
        return [e for item in value for e in quantity_entries(item)]
    number = _number(value)
    if number is not None:
        return [QuantityEntry(number, number, None, None, None)]
    if not isinstance(value, dict):
        return []
    if "low" in value or "high" in value:
        low = value.get("low") or {}
        high = value.get("high") or {}
        lo = _number(low.get("value"))
        hi = _number(high.get("value"))
        if lo is None and hi is None:
            return []
        unit_of = low if lo is not None else high
        return [
            QuantityEntry(
                lo if lo is not None else -math.inf,
                hi if hi is not None else math.inf,
                unit_of.get("system"),
                unit_of.get("code"),
                unit_of.get("unit"),
            )
        ]
    number = _number(value.get("value"))
    if number is None:
        return []
    return [
        QuantityEntry(number, number, value.get("system"), value.get("code"), value.get("unit"))
    ]


# --- uris ----------------------------------------------------------------------------------


def uri_entries(value: Any) -> list[UriEntry]:
    """Entries of a uri, url or canonical value (a canonical's ``|version`` is kept)."""
    if isinstance(value, list):
        return [e for item in value for e in uri_entries(item)]
    if isinstance(value, str) and value:
        return [UriEntry(value)]
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return [UriEntry(value["reference"])]
    return []
