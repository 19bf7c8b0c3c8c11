"""What bot code can reach: the members of each allowed module and the attributes of each class.

The sandbox allow-lists *members*, not modules. :data:`MODULE_MEMBERS` names, for every
default module, the exact members a bot may import or read from it; a module an operator adds
(``FHIRBOTS_BOT_ALLOWED_MODULES``) without an entry here exposes its public functions,
classes and constants, but no attribute of the objects they return unless listed below.

:data:`CLASS_ATTRIBUTES` names, for each class whose objects a bot can hold, the attributes
that class *itself defines* which a bot may read (methods, properties, class constants);
:data:`INSTANCE_ATTRIBUTES` the attributes its instances carry in their own ``__dict__``.
:func:`attribute_allowed` is the rule the attribute guard applies: an attribute is readable
when the class of the object's MRO that defines it is the bot's own, or lists it here.
Everything else is refused, so a class or method added by a new Python release is closed
until someone lists it.

Left out on purpose, with the reason:

* ``str.format``, ``str.format_map`` and every class whose methods call them
  (``collections.UserString``), ``string.Formatter``: a format field such as
  ``{0.__class__.__init__.__globals__}`` walks attributes with the unguarded ``getattr``;
* ``register`` of ABC classes (``collections.ChainMap``; never listed on ``ABCMeta``), class
  attribute writes and caches such as ``zoneinfo.ZoneInfo.clear_cache`` and ``re.purge``:
  process-wide state that one execution would leave to the next;
* ``with_traceback``, ``AttributeError.obj``, ``ImportError.path``, ``gi_*``/``cr_*`` and
  ``Pattern.scanner``: frames, other objects or internals;
* ``functools.update_wrapper``/``wraps`` (get and set attributes named by the caller),
  ``singledispatch`` (evaluates string annotations), ``ZoneInfo.from_file``,
  ``zoneinfo.reset_tzpath``/``available_timezones`` (files), ``uuid.getnode``/``uuid1``
  (hardware address, may run programs), ``decimal.setcontext`` and the shared contexts.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import functools
import itertools
import json
import re
import statistics
import string
import time
import uuid
import zoneinfo
from collections.abc import Iterable

__all__ = [
    "BOT_MODULE_NAME",
    "CLASS_ATTRIBUTES",
    "INSTANCE_ATTRIBUTES",
    "MODULE_MEMBERS",
    "allowed_classes",
    "attribute_allowed",
    "is_bot_class",
]

BOT_MODULE_NAME = "bot"
"""``__module__`` of classes bot code defines (the ``__name__`` of its globals)."""


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


MODULE_MEMBERS: dict[str, frozenset[str]] = {
    "collections": _names("ChainMap Counter OrderedDict defaultdict deque namedtuple"),
    "datetime": _names("MAXYEAR MINYEAR UTC date datetime time timedelta timezone tzinfo"),
    "decimal": _names(
        "Clamped Context ConversionSyntax Decimal DecimalException DecimalTuple DivisionByZero "
        "DivisionImpossible DivisionUndefined FloatOperation Inexact InvalidContext "
        "InvalidOperation MAX_EMAX MAX_PREC MIN_EMIN MIN_ETINY Overflow ROUND_05UP "
        "ROUND_CEILING ROUND_DOWN ROUND_FLOOR ROUND_HALF_DOWN ROUND_HALF_EVEN ROUND_HALF_UP "
        "ROUND_UP Rounded Subnormal Underflow getcontext localcontext"
    ),
    "functools": _names(
        "cache cached_property cmp_to_key lru_cache partial partialmethod reduce total_ordering"
    ),
    "itertools": _names(
        "accumulate chain combinations combinations_with_replacement compress count cycle "
        "dropwhile filterfalse groupby islice pairwise permutations product repeat starmap "
        "takewhile tee zip_longest"
    ),
    "json": _names("JSONDecodeError JSONDecoder JSONEncoder dumps loads"),
    "math": _names(
        "acos acosh asin asinh atan atan2 atanh cbrt ceil comb copysign cos cosh degrees dist "
        "e erf erfc exp exp2 expm1 fabs factorial floor fmod frexp fsum gamma gcd hypot inf "
        "isclose isfinite isinf isnan isqrt lcm ldexp lgamma log log10 log1p log2 modf nan "
        "nextafter perm pi pow prod radians remainder sin sinh sqrt tan tanh tau trunc ulp"
    ),
    "re": _names(
        "A ASCII DOTALL I IGNORECASE M MULTILINE NOFLAG S U UNICODE VERBOSE X Match Pattern "
        "RegexFlag compile error escape findall finditer fullmatch match search split sub subn"
    ),
    "statistics": _names(
        "NormalDist StatisticsError correlation covariance fmean geometric_mean harmonic_mean "
        "linear_regression mean median median_grouped median_high median_low mode multimode "
        "pstdev pvariance quantiles stdev variance"
    ),
    "string": _names(
        "Template ascii_letters ascii_lowercase ascii_uppercase capwords digits hexdigits "
        "octdigits printable punctuation whitespace"
    ),
    "uuid": _names(
        "NAMESPACE_DNS NAMESPACE_OID NAMESPACE_URL NAMESPACE_X500 RESERVED_FUTURE "
        "RESERVED_MICROSOFT RESERVED_NCS RFC_4122 SafeUUID UUID uuid3 uuid4 uuid5"
    ),
    "zoneinfo": _names("ZoneInfo ZoneInfoNotFoundError"),
}
"""Exactly what a bot can import from each default module (members absent from the running
Python are skipped)."""

_STR_METHODS = (
    "capitalize casefold center count encode endswith expandtabs find index isalnum isalpha "
    "isascii isdecimal isdigit isidentifier islower isnumeric isprintable isspace istitle "
    "isupper join ljust lower lstrip maketrans partition removeprefix removesuffix replace "
    "rfind rindex rjust rpartition rsplit rstrip split splitlines startswith strip swapcase "
    "title translate upper zfill"
)
_BYTES_METHODS = (
    "capitalize center count decode endswith expandtabs find fromhex hex index isalnum "
    "isalpha isascii isdigit islower isspace istitle isupper join ljust lower lstrip maketrans "
    "partition removeprefix removesuffix replace rfind rindex rjust rpartition rsplit rstrip "
    "split splitlines startswith strip swapcase title translate upper zfill"
)
_DATE = (
    "ctime day fromisocalendar fromisoformat fromordinal fromtimestamp isocalendar isoformat "
    "isoweekday max min month replace resolution strftime timetuple today toordinal weekday year"
)
_DECIMAL_SHARED = (
    "compare compare_signal compare_total compare_total_mag copy_abs copy_negate copy_sign exp "
    "fma is_canonical is_finite is_infinite is_nan is_normal is_qnan is_signed is_snan "
    "is_subnormal is_zero ln log10 logb logical_and logical_invert logical_or logical_xor max "
    "max_mag min min_mag next_minus next_plus next_toward normalize number_class quantize radix "
    "remainder_near rotate same_quantum scaleb shift sqrt to_eng_string to_integral "
    "to_integral_exact to_integral_value"
)

_EMPTY: dict[str, int] = {}
_GENERATOR = type(x for x in "")
_DICT_KEYS = type(_EMPTY.keys())
_DICT_ITEMS = type(_EMPTY.items())
_LRU_WRAPPER = type(functools.lru_cache(lambda: None))
_KEY_WRAPPER = type(functools.cmp_to_key(lambda *_: 0)(1))
_ISO_CALENDAR = type(datetime.date(2000, 1, 1).isocalendar())
_LINEAR_REGRESSION = type(statistics.linear_regression([1.0, 2.0], [1.0, 2.0]))
_ENUM_BASE = type(re.RegexFlag.A).__mro__[-2]  # enum.Enum, without importing enum

CLASS_ATTRIBUTES: dict[type, frozenset[str]] = {
    # --- builtins ---------------------------------------------------------------------------
    str: _names(_STR_METHODS),  # never format / format_map
    bytes: _names(_BYTES_METHODS),
    bytearray: _names(_BYTES_METHODS + " append clear copy extend insert pop remove reverse"),
    int: _names(
        "as_integer_ratio bit_count bit_length conjugate denominator from_bytes imag numerator "
        "real to_bytes"
    ),
    float: _names("as_integer_ratio conjugate fromhex hex imag is_integer real"),
    complex: _names("conjugate imag real"),
    dict: _names("clear copy fromkeys get items keys pop popitem setdefault update values"),
    list: _names("append clear copy count extend index insert pop remove reverse sort"),
    tuple: _names("count index"),
    set: _names(
        "add clear copy difference difference_update discard intersection intersection_update "
        "isdisjoint issubset issuperset pop remove symmetric_difference "
        "symmetric_difference_update union update"
    ),
    frozenset: _names(
        "copy difference intersection isdisjoint issubset issuperset symmetric_difference union"
    ),
    range: _names("count index start step stop"),
    slice: _names("indices start step stop"),
    _DICT_KEYS: _names("isdisjoint"),
    _DICT_ITEMS: _names("isdisjoint"),
    _GENERATOR: _names("send throw close"),
    property: _names("fget fset fdel getter setter deleter"),
    BaseException: _names("args add_note"),
    AttributeError: _names("name"),
    ImportError: _names("msg name"),
    NameError: _names("name"),
    StopIteration: _names("value"),
    UnicodeDecodeError: _names("encoding end object reason start"),
    UnicodeEncodeError: _names("encoding end object reason start"),
    # --- collections ------------------------------------------------------------------------
    collections.ChainMap: _names("clear copy fromkeys get new_child parents pop popitem"),
    collections.Counter: _names("copy elements fromkeys most_common subtract total update"),
    collections.OrderedDict: _names(
        "clear copy fromkeys items keys move_to_end pop popitem setdefault update values"
    ),
    collections.defaultdict: _names("copy default_factory"),
    collections.deque: _names(
        "append appendleft clear copy count extend extendleft index insert maxlen pop popleft "
        "remove reverse rotate"
    ),
    # --- datetime ---------------------------------------------------------------------------
    datetime.date: _names(_DATE),
    datetime.datetime: _names(
        "astimezone combine ctime date dst fold fromisoformat fromtimestamp hour isoformat max "
        "microsecond min minute now replace resolution second strptime time timestamp "
        "timetuple timetz tzinfo tzname utcfromtimestamp utcnow utcoffset utctimetuple"
    ),
    datetime.time: _names(
        "dst fold fromisoformat hour isoformat max microsecond min minute replace resolution "
        "second strftime tzinfo tzname utcoffset"
    ),
    datetime.timedelta: _names("days max microseconds min resolution seconds total_seconds"),
    datetime.timezone: _names("dst fromutc max min tzname utc utcoffset"),
    datetime.tzinfo: _names("dst fromutc tzname utcoffset"),
    _ISO_CALENDAR: _names("year week weekday"),
    time.struct_time: _names(
        "tm_year tm_mon tm_mday tm_hour tm_min tm_sec tm_wday tm_yday tm_isdst tm_zone tm_gmtoff"
    ),
    # --- decimal ----------------------------------------------------------------------------
    decimal.Decimal: _names(
        _DECIMAL_SHARED + " adjusted as_integer_ratio as_tuple canonical conjugate from_float "
        "imag real"
    ),
    decimal.Context: _names(
        _DECIMAL_SHARED + " Emax Emin Etiny Etop abs add canonical capitals clamp clear_flags "
        "clear_traps copy copy_decimal create_decimal create_decimal_from_float divide "
        "divide_int divmod is_canonical minus multiply plus power prec remainder rounding "
        "subtract to_sci_string"
    ),
    decimal.DecimalTuple: _names("digits exponent sign"),
    # --- functools --------------------------------------------------------------------------
    functools.partial: _names("args func keywords"),
    _LRU_WRAPPER: _names("cache_info cache_clear"),
    _KEY_WRAPPER: _names("obj"),
    # --- itertools, json, re, statistics, string, uuid, zoneinfo ----------------------------
    itertools.chain: _names("from_iterable"),
    json.JSONDecoder: _names("decode raw_decode"),
    json.JSONEncoder: _names("default encode item_separator iterencode key_separator"),
    re.Pattern: _names(
        "findall finditer flags fullmatch groupindex groups match pattern search split sub subn"
    ),
    re.Match: _names(
        "end endpos expand group groupdict groups lastgroup lastindex pos re regs span start string"
    ),
    re.RegexFlag: _names("A ASCII DOTALL I IGNORECASE M MULTILINE NOFLAG S U UNICODE VERBOSE X"),
    _ENUM_BASE: _names("name value"),
    statistics.NormalDist: _names(
        "cdf from_samples inv_cdf mean median mode overlap pdf quantiles samples stdev variance "
        "zscore"
    ),
    _LINEAR_REGRESSION: _names("slope intercept"),
    string.Template: _names(
        "braceidpattern delimiter flags get_identifiers idpattern is_valid pattern "
        "safe_substitute substitute"
    ),
    uuid.UUID: _names(
        "bytes bytes_le clock_seq clock_seq_hi_variant clock_seq_low fields hex int is_safe "
        "node time time_hi_version time_low time_mid urn variant version"
    ),
    uuid.SafeUUID: _names("safe unknown unsafe"),
    zoneinfo.ZoneInfo: _names("dst fromutc key no_cache tzname utcoffset"),
}
"""Attributes each class defines itself (in its own ``__dict__``) that bots may read."""

INSTANCE_ATTRIBUTES: dict[type, frozenset[str]] = {
    json.JSONEncoder: _names("skipkeys ensure_ascii check_circular allow_nan sort_keys indent"),
    json.JSONDecoder: _names("strict"),
    json.JSONDecodeError: _names("msg doc pos lineno colno"),
    re.error: _names("msg pattern pos lineno colno"),
    string.Template: _names("template"),
    decimal.Context: _names("flags traps"),
    functools.partialmethod: _names("func args keywords"),
    functools.cached_property: _names("func attrname"),
    _LRU_WRAPPER: _names("cache_parameters"),
}
"""Attributes instances of a class carry in their own ``__dict__`` that bots may read."""


def is_bot_class(cls: type) -> bool:
    """Whether bot code defined ``cls`` (its own classes, namedtuples it made)."""
    return cls.__dict__.get("__module__") == BOT_MODULE_NAME


def _owner(mro: Iterable[type], name: str) -> type | None:
    for klass in mro:
        if name in klass.__dict__:
            return klass
    return None


def _listed(owner: type, name: str) -> bool:
    return is_bot_class(owner) or name in CLASS_ATTRIBUTES.get(owner, ())


def attribute_allowed(obj: object, name: str) -> bool:
    """Whether bot code may read ``obj.<name>`` (``name`` has no leading underscore).

    The class of ``obj``'s MRO (or, for a class, of its own MRO and then its metaclass's) that
    defines ``name`` decides: the bot's own classes allow everything, others what
    :data:`CLASS_ATTRIBUTES` lists for them. An attribute no class defines lives in the
    instance's ``__dict__``: allowed on the bot's own objects and where
    :data:`INSTANCE_ATTRIBUTES` lists it.
    """
    if isinstance(obj, type):
        owner = _owner(obj.__mro__, name)
        if owner is not None:
            return _listed(owner, name)
        # Metaclass attributes (type.mro, ABCMeta.register) are never listed.
        return False
    cls = type(obj)
    owner = _owner(cls.__mro__, name)
    if owner is not None:
        return _listed(owner, name)
    for klass in cls.__mro__:
        if is_bot_class(klass) or name in INSTANCE_ATTRIBUTES.get(klass, ()):
            return True
    return False


def allowed_classes() -> list[type]:
    """Every class the tables name (for the tests that walk them)."""
    return sorted({*CLASS_ATTRIBUTES, *INSTANCE_ATTRIBUTES}, key=lambda c: c.__qualname__)
