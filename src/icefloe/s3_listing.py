"""ListObjectsV2 responses parsed at a fraction of botocore's cost, with botocore's result.

A no-op discovery is mostly listing, and botocore spends most of a listing in Python: it parses
each 1,000-key page twice (once only to see whether a 200 hides an S3 error) and then walks every
element through its generic shape model. Measured on one 1,000-key page from SeaweedFS
(``benchmarks/listing.py`` has the whole-run figures): the stock call took 27 ms, the error check
1.5 ms of it, the model walk about 17 ms; the XML parse itself is 1.6 ms.

Two narrow replacements, for ListObjectsV2 only, which :func:`icefloe.s3.make_client` installs:

- :class:`ListingParser`: botocore's ``RestXMLParser`` whose body parse of ``ListObjectsV2Output``
  maps elements to members through a plan compiled once from the same service model. Scalars,
  flattened lists of scalars and flattened lists of such structures (``Contents``,
  ``CommonPrefixes``) are handled; a page with anything else (``Owner`` when asked for,
  ``RestoreStatus``, an element repeated where one is expected, XML that does not parse) is parsed
  by botocore itself. Every other operation is botocore's.
- :func:`_check_200`: the "200 with an error inside" check, reading only the document's root tag
  and whether the document is complete, instead of a full parse; other operations keep botocore's.

``tests/unit/test_s3_listing.py`` holds the result equal to botocore's for real pages and for
AWS-shaped ones.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import botocore.handlers
from botocore.parsers import ResponseParserFactory, RestXMLParser

# botocore's stubs type its public surface; the 200-error check replaced here is an internal.
_botocore_handlers: Any = botocore.handlers

_LISTING_OUTPUT = "ListObjectsV2Output"
_ROOT_TAG = re.compile(rb"<\?xml[^>]*\?>\s*<([A-Za-z_][\w.:-]*)")


class _Unsupported(Exception):
    """The page has something the plan does not map: botocore parses it."""


# A plan maps an element's local name to (member name, how to read it, repeated?).
_Plan = dict[str, tuple[str, Callable[[ET.Element], Any], bool]]


class ListingParser(RestXMLParser):
    """botocore's rest-xml parser, with a fast body parse for ``ListObjectsV2Output``."""

    def __init__(self, timestamp_parser: Any = None, blob_parser: Any = None) -> None:
        super().__init__(timestamp_parser, blob_parser)
        self._plans: dict[str, _Plan | None] = {}

    def _parse_payload(self, response: Any, shape: Any, member_shapes: Any, final_parsed: Any) -> None:
        body = response["body"]
        if shape.name == _LISTING_OUTPUT and body and "payload" not in shape.serialization:
            plan = self._plan(shape)
            if plan is not None:
                try:
                    parser = ET.XMLParser(target=ET.TreeBuilder(), encoding=self.DEFAULT_ENCODING)
                    parser.feed(body)
                    final_parsed.update(_read(parser.close(), plan))
                    return
                except Exception:  # whatever the fast path cannot read, botocore's own parse
                    pass  # decides, with its own result or its own error
        super()._parse_payload(response, shape, member_shapes, final_parsed)  # type: ignore[misc]

    def _plan(self, shape: Any) -> _Plan | None:
        if shape.name not in self._plans:
            try:
                self._plans[shape.name] = self._compile(shape)
            except _Unsupported:
                self._plans[shape.name] = None
        return self._plans[shape.name]

    def _compile(self, shape: Any) -> _Plan:
        """The plan of a structure shape, from the service model (as botocore's walk reads it)."""
        if getattr(shape, "is_tagged_union", False):
            raise _Unsupported(shape.name)
        plan: _Plan = {}
        for name, member in shape.members.items():
            serialization = member.serialization
            if "location" in serialization:  # headers: botocore's _parse_non_payload_attrs
                continue
            if serialization.get("xmlAttribute") or serialization.get("xmlNamespace"):
                raise _Unsupported(name)
            element = name
            if member.type_name == "list" and serialization.get("flattened"):
                element = member.member.serialization.get("name") or serialization.get("name") or name
                plan[element] = (name, self._reader(member.member, nested=True), True)
            else:
                plan[serialization.get("name") or name] = (name, self._reader(member, nested=False), False)
        return plan

    def _reader(self, shape: Any, *, nested: bool) -> Callable[[ET.Element], Any]:
        kind = shape.type_name
        if kind == "structure" and nested:
            plan = self._compile(shape)
            return lambda node: _read(node, plan)
        if kind in ("string", "character"):
            return _text
        if kind in ("integer", "long"):
            return lambda node: int(_text(node))
        if kind == "boolean":
            return lambda node: _text(node) == "true"
        if kind in ("float", "double"):
            return lambda node: float(_text(node))
        if kind == "timestamp":
            parse = self._timestamp_parser  # type: ignore[attr-defined]
            return lambda node: parse(_text(node))
        return _unsupported  # nested structures, maps, blobs, lists that are not flattened


def _text(node: ET.Element) -> str:
    return node.text or ""


def _unsupported(node: ET.Element) -> Any:
    raise _Unsupported(node.tag)


def _read(node: ET.Element, plan: _Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in node:
        tag = child.tag
        entry = plan.get(tag[tag.rfind("}") + 1 :] if tag[0] == "{" else tag)
        if entry is None:
            continue  # botocore ignores elements its model does not name
        name, read, repeated = entry
        if repeated:
            out.setdefault(name, []).append(read(child))
        elif name in out:
            raise _Unsupported(name)
        else:
            out[name] = read(child)
    return out


class ListingParserFactory(ResponseParserFactory):
    """botocore's parser factory (a session component), making :class:`ListingParser` for rest-xml."""

    def __init__(self, timestamp_parser: Callable[[str], Any]) -> None:
        super().__init__()
        self.set_parser_defaults(timestamp_parser=timestamp_parser)
        self._timestamp_parser = timestamp_parser

    def create_parser(self, protocol_name: str) -> Any:
        if protocol_name == "rest-xml":
            return ListingParser(timestamp_parser=self._timestamp_parser)
        return super().create_parser(protocol_name)


def _check_200(operation_model: Any, response_dict: Any, **kwargs: Any) -> None:
    """botocore's "S3 error inside a 200" check (``_handle_200_error``), read cheaply for the
    ordinary ListObjectsV2 page: an XML declaration, a root that is not ``Error``, and the root's
    closing tag at the end (a cut-off document has none). Anything else is botocore's to decide."""
    stock = _botocore_handlers._handle_200_error
    if operation_model.name != "ListObjectsV2" or not response_dict or response_dict["status_code"] != 200:
        stock(operation_model, response_dict, **kwargs)
        return
    body = response_dict["body"]
    root = _ROOT_TAG.match(body) if body else None
    if root is None or root.group(1) == b"Error" or not body.rstrip().endswith(b"</" + root.group(1) + b">"):
        stock(operation_model, response_dict, **kwargs)


def use_cheap_200_check(client: Any) -> None:
    """Replace botocore's 200-error check on one client by :func:`_check_200` (a no-op if botocore
    no longer has it under that name: its own check then stays)."""
    stock = getattr(_botocore_handlers, "_handle_200_error", None)
    if stock is None:
        return
    client.meta.events.unregister("before-parse.s3.*", stock)
    client.meta.events.register_first("before-parse.s3.*", _check_200)
