"""Beat classes: the six-class map and the AAMI map of DESIGN.md, in one place."""

from __future__ import annotations

__all__ = [
    "AAMI_CLASSES",
    "BEAT_SYMBOLS",
    "CLASSES",
    "SYMBOL_TO_AAMI",
    "SYMBOL_TO_CLASS",
    "class_of",
]

#: The six trained classes, in model output order.
CLASSES: tuple[str, ...] = ("N", "L", "R", "A", "V", "/")

#: MIT-BIH annotation symbol -> one of CLASSES. Symbols not here are outside the six.
SYMBOL_TO_CLASS: dict[str, str] = {
    "N": "N",
    "e": "N",
    "j": "N",
    "L": "L",
    "R": "R",
    "A": "A",
    "a": "A",
    "J": "A",
    "S": "A",
    "V": "V",
    "E": "V",
    "/": "/",
}

AAMI_CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")

#: MIT-BIH symbol -> AAMI EC57 class.
SYMBOL_TO_AAMI: dict[str, str] = {
    "N": "N",
    "L": "N",
    "R": "N",
    "e": "N",
    "j": "N",
    "B": "N",
    "A": "S",
    "a": "S",
    "J": "S",
    "S": "S",
    "V": "V",
    "E": "V",
    "F": "F",
    "/": "Q",
    "f": "Q",
    "Q": "Q",
}

#: Annotation symbols that mark a beat (the 16 MIT-BIH beat labels, plus "B", the
#: unspecified bundle-branch-block beat that occurs once in svdb: it is a real QRS, so a
#: detector that finds it must not be charged a false positive).
BEAT_SYMBOLS: frozenset[str] = frozenset("NLRAaJSVFejE/fQ!B")


def class_of(symbol: str) -> str | None:
    """Return the six-class label of an annotation symbol, or None when outside the six."""
    return SYMBOL_TO_CLASS.get(symbol)
