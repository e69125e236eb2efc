"""Reading what an untrusted job wrote: a JSON schema, validation as data, and text made harmless.

The measuring gate job runs a pull request's code, so whatever it uploads may have been written by that
code. The reporting job (which alone holds a token) reads it here:

- `gate_report_schema()` is the JSON schema of `gate.json`, derived from the `GateReport` dataclasses,
  so a field added there is covered without a second list to keep in step; every object is closed
  (`additionalProperties: false`), every string and list has a length limit.
- `load_gate_artifact` reads a folder with a size limit, parses JSON (no other format, nothing
  executed), validates it, and returns the report with every string passed through `neutralize`.
- `neutralize` keeps text readable but inert in GitHub Markdown: no @mention, no #123 or owner/repo#1
  cross-reference, no link, image, autolink or HTML tag, no way out of a table cell or code span.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

from autokernel_ci.errors import AutokernelError

MAX_ARTIFACT_BYTES = 8 * 1024 * 1024
MAX_STRING = 4000
MAX_ITEMS = 10_000
SHA_RE = r"^[0-9a-f]{40}$"

_ZW = "\u200b"  # zero-width space: breaks a mention, a reference or an autolink without changing what is read
_LOOKALIKES = str.maketrans({
    "<": "\uff1c", ">": "\uff1e",  # fullwidth: no HTML tag, no <autolink>
    "[": "\uff3b", "]": "\uff3d",  # no link or image syntax
    "`": "\u02cb",  # no way out of a code span
    "|": "\u2223",  # no way out of a table cell
    "\\": "\u29f5",  # no escape of what follows
})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


class ArtifactError(AutokernelError):
    """The artifact of the measuring job is missing, too large, not JSON or not of the expected shape."""


def neutralize(text: str, limit: int = MAX_STRING) -> str:
    """`text` as inert Markdown: shown as the same characters, never acting as markup or a notification."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.translate(_LOOKALIKES)
    text = text.replace("@", "@" + _ZW)  # @user, @org/team
    text = re.sub(r"#(?=\d)", "#" + _ZW, text)  # #123, owner/repo#123
    text = re.sub(r"(?i)(\w)(://)", lambda m: m.group(1) + ":" + _ZW + "//", text)  # https://…
    text = re.sub(r"(?i)\bwww\.", "www" + _ZW + ".", text)
    text = re.sub(r"!(?=\S)", "!" + _ZW, text)
    return text.replace("&", "&" + _ZW)  # no &lt; entities that become markup


def neutralize_all(value: Any) -> Any:
    """Every string in a JSON value (keys included) through `neutralize`."""
    if isinstance(value, str):
        return neutralize(value)
    if isinstance(value, list):
        return [neutralize_all(v) for v in value]
    if isinstance(value, dict):
        return {neutralize(str(k), 200): neutralize_all(v) for k, v in value.items()}
    return value


# -- the schema -----------------------------------------------------------------------------------------


def dataclass_schema(cls: type) -> dict[str, Any]:
    """A closed JSON schema for a dataclass, from its type hints."""
    hints = typing.get_type_hints(cls)
    properties = {f.name: type_schema(hints[f.name]) for f in dataclasses.fields(cls)}
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def type_schema(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if hint is Any:
        return {"$ref": "#/$defs/json"}
    if hint is type(None):
        return {"type": "null"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string", "maxLength": MAX_STRING * 4}
    if dataclasses.is_dataclass(hint):
        return dataclass_schema(hint)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [type_schema(a) for a in typing.get_args(hint)]}
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return {"type": "array", "maxItems": MAX_ITEMS, "items": type_schema(args[0]) if args else {}}
    if origin is dict:
        _, value = typing.get_args(hint) or (str, Any)
        return {"type": "object", "maxProperties": MAX_ITEMS, "additionalProperties": type_schema(value)}
    raise TypeError(f"no JSON schema for the type {hint!r}")


_JSON_VALUE = {"anyOf": [{"type": ["null", "boolean", "number"]}, {"type": "string", "maxLength": MAX_STRING * 4},
                         {"type": "array", "maxItems": MAX_ITEMS, "items": {"$ref": "#/$defs/json"}},
                         {"type": "object", "maxProperties": MAX_ITEMS,
                          "additionalProperties": {"$ref": "#/$defs/json"}}]}


def gate_report_schema() -> dict[str, Any]:
    from autokernel_ci.gate import GateReport

    schema = dataclass_schema(GateReport)
    schema["properties"]["head_sha"] = {"type": "string", "pattern": SHA_RE}
    schema["properties"]["base_sha"] = {"type": "string", "pattern": SHA_RE}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "autokernel-ci gate.json",
            "$defs": {"json": _JSON_VALUE}, **schema}


PULL_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["number", "head_sha", "base_sha"],
    "properties": {"number": {"type": "integer", "minimum": 1}, "head_sha": {"type": "string", "pattern": SHA_RE},
                   "base_sha": {"type": "string", "pattern": SHA_RE},
                   "head_repo": {"type": "string", "maxLength": 200}},
}


# -- reading --------------------------------------------------------------------------------------------


def read_json_file(path: Path) -> Any:
    if not path.is_file() or path.is_symlink():
        raise ArtifactError(f"the artifact has no {path.name}")
    size = path.stat().st_size
    if size > MAX_ARTIFACT_BYTES:
        raise ArtifactError(f"{path.name} is {size} bytes, more than the {MAX_ARTIFACT_BYTES} a gate report can be")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"{path.name} is not valid JSON: {neutralize(str(exc), 200)}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def validate(data: Any, schema: dict[str, Any], name: str) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(the top level)"
        raise ArtifactError(f"{name} does not match its schema at {neutralize(where, 200)}: "
                            f"{neutralize(error.message, 300)}")


@dataclasses.dataclass
class GateArtifact:
    """The measuring job's upload, validated and neutralized."""

    pull_request: dict[str, Any]
    report: Any  # GateReport


def load_gate_artifact(folder: Path) -> GateArtifact:
    from autokernel_ci.gate import GateReport

    if not folder.is_dir():
        raise ArtifactError(f"no artifact folder at {folder}")
    pull_request = read_json_file(folder / "pull_request.json")
    validate(pull_request, PULL_REQUEST_SCHEMA, "pull_request.json")
    data = read_json_file(folder / "gate.json")
    validate(data, gate_report_schema(), "gate.json")
    try:
        report = GateReport.from_dict(neutralize_all(data))
    except (TypeError, ValueError, KeyError) as exc:
        raise ArtifactError(f"gate.json holds values the gate never writes: {neutralize(str(exc), 300)}") from None
    return GateArtifact(pull_request, report)
