"""Text normalisation and stable ids, so identical texts are one document everywhere."""

from __future__ import annotations

import hashlib
import unicodedata


def normalize_text(text: str) -> str:
    """Case-, width- and whitespace-insensitive form used to compare texts (NFKC, casefold).

    Runs of whitespace become one space by split/join: the same characters as the regex `\\s+`
    (str.isspace, checked over every code point), and cheaper; tests pin one hash."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_id(text: str, prefix: str = "") -> str:
    """A stable id from the normalized text: 16 hex chars of BLAKE2b."""
    digest = hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=8).hexdigest()
    return prefix + digest


def document_text(title: str | None, text: str | None) -> str:
    """The string a model sees for a document: title and body joined, as BEIR and ST do."""
    title = (title or "").strip()
    text = (text or "").strip()
    if title and text:
        return f"{title} {text}"
    return title or text


def text_hash(text: str) -> int:
    """64-bit hash of the normalized text (the integer form of `text_id`)."""
    return int.from_bytes(hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=8).digest(), "big")
