"""Names users give: table identifiers and ingestion names, checked before anything uses them.

Pure string rules, apart from the Iceberg boundary (:mod:`icefloe.tables`), so that defining or
naming something never imports pyiceberg.
"""

from __future__ import annotations

import unicodedata

from icefloe.errors import ConfigurationError

# Characters that change what text looks like or where it ends: controls (Cc), format characters
# (Cf, incl. the bidi overrides that make "elif" show as "file"), line and paragraph separators
# (Zl, Zp), surrogates (Cs), private use (Co).
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})
# A table's name becomes a path segment of its location and part of URIs.
_PATH_CHARACTERS = frozenset("/\\?#%*")


def invisible_character(text: str) -> str | None:
    """The first control, format (bidi) or separator character of ``text``, as ``U+202E``; or None."""
    bad = next((c for c in text if unicodedata.category(c) in _INVISIBLE), None)
    return None if bad is None else f"U+{ord(bad):04X}"


def split_identifier(identifier: str) -> tuple[str, str]:
    """``namespace.table`` → (namespace, table); nested namespaces keep their dots.

    Refuses, with one line, what pyiceberg or the table's location would refuse later: an empty or
    blank part, blanks around a part, invisible characters, path characters, parts over 255 bytes.
    """
    namespace, _, name = identifier.rpartition(".")
    if not namespace or not name:
        raise ConfigurationError(f"table must be namespace.table, got {identifier!r}")
    invisible = invisible_character(identifier)
    if invisible is not None:
        raise ConfigurationError(f"table {identifier!r} holds the invisible character {invisible}")
    for part in identifier.split("."):
        if not part.strip() or part != part.strip():
            raise ConfigurationError(f"table {identifier!r} has an empty part or blanks around a part")
        if len(part.encode()) > 255:
            raise ConfigurationError(f"table {identifier!r} has a part longer than 255 bytes")
        if _PATH_CHARACTERS.intersection(part):
            raise ConfigurationError(f"table {identifier!r} holds one of / \\ ? # % * (it names a path)")
    return namespace, name
