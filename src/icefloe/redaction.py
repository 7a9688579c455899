"""Secrets never leave icefloe: not in a log line, a ledger row, an API answer, an alert or the CLI.

Two kinds of text carry them. A URI written by a user may hold credentials: ``s3://key:secret@b/``
or a Spark Connect ``;token=``; :func:`redact_uri` masks them where a definition is shown. Error
text from libraries may hold a live presigned URL (urllib3 names the URL it failed on, with its
``X-Amz-Credential`` and ``X-Amz-Signature``: fetchable for 15 minutes); :func:`redact_text`
masks every query string of a URL and every signing parameter, and is applied where such text is
stored or shown (the ledger's ``error_message``, the logs, alerts, the API).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# abfs[s]://container@account... names a container, not a user: left as it is.
_USERINFO_AT_START = re.compile(r"^(?!abfss?://)([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)
_USERINFO = re.compile(r"\b(?!abfss?://)([a-z][a-z0-9+.-]*://)[^/@\s'\"<>]*@", re.IGNORECASE)
_CONNECT_TOKEN = re.compile(r"(;\s*token\s*=)[^;\s'\"]*", re.IGNORECASE)
# The query string of an HTTP URL: "http://h/b/k?X-Amz-...": everything after "?" (not of an
# s3:// URI, whose "?" is part of the key).
_URL_QUERY = re.compile(r"(\bhttps?://[^\s?#'\"<>]*)\?[^\s'\"<>)]*", re.IGNORECASE)
# A relative one ("url: /bucket/key?X-Amz-Algorithm=..." in urllib3's messages) holding a signature.
_SIGNED_QUERY = re.compile(
    r"\?(?=[^\s'\"<>]*(?:X-Amz-|AWSAccessKeyId=|Signature=|Credential=))[^\s'\"<>)]*", re.IGNORECASE
)
# Signing parameters found anywhere else (a header dump, a query string split from its URL).
_SIGNING_PARAM = re.compile(
    r"\b(X-Amz-(?:Signature|Credential|Security-Token)|AWSAccessKeyId|Signature)=[^&\s'\"<>)]*", re.IGNORECASE
)


def redact_uri(uri: str) -> str:
    """A user's URI with its credentials masked: ``s3://***@bucket/p/``, ``sc://h:15002/;token=***``."""
    return _CONNECT_TOKEN.sub(rf"\1{MASK}", _USERINFO_AT_START.sub(rf"\1{MASK}@", uri))


def redact_text(text: str) -> str:
    """Free text (an error message, a log line) with URL query strings, signing parameters and
    credentials in URLs masked; text without them is returned unchanged."""
    if "?" not in text and "=" not in text and "@" not in text:
        return text  # the common case, cheaply
    text = _URL_QUERY.sub(rf"\1?{MASK}", text)
    text = _SIGNED_QUERY.sub(f"?{MASK}", text)
    text = _SIGNING_PARAM.sub(rf"\1={MASK}", text)
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    return _CONNECT_TOKEN.sub(rf"\1{MASK}", text)


def redact_optional(text: str | None) -> str | None:
    return None if text is None else redact_text(text)


def redact_json(value: Any) -> Any:
    """Every string inside a JSON-like value (an alert's body) through :func:`redact_text`."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return value
