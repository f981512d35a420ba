"""Text made storable at the store boundary: nothing a caller hands in fails to encode.

A Python `str` may hold lone surrogates (U+D800..U+DFFF) that no UTF-8 encoder
accepts: a model's stream cut mid-pair, a `json.loads` of `"\\ud800"`, a tool's
output. Stored as they are, they make the store call fail, and a run that keeps
appending the same event fails for ever. At the boundary each lone surrogate
becomes U+FFFD and a surrogate pair written as two code points becomes the one
character it encodes; text with no surrogate is handed on untouched (the same object).
"""

from __future__ import annotations

__all__ = ["clean", "clean_args"]


def clean(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (the same object if it has none)."""
    if text.isascii():  # O(1) on CPython
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 joins well-formed pairs; what is left alone becomes U+FFFD.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


# Types whose values hold no text: passed over at once.
_TEXTLESS = frozenset({int, float, bool, type(None), bytes})


def clean_args(args: tuple[object, ...]) -> tuple[object, ...]:
    """Operation arguments with every string in them (one list or tuple deep) cleaned
    (`args` itself when all of them are ASCII, as nearly every call's are)."""
    for arg in args:  # every store call passes here: exact types first, then a look inside
        if type(arg) not in _TEXTLESS and _has_text(arg):
            return tuple(_clean_arg(a) for a in args)
    return args


def _has_text(arg: object) -> bool:
    """Whether `arg` is, or (one list or tuple deep) holds, a string that is not ASCII."""
    if isinstance(arg, str):
        return not arg.isascii()
    if isinstance(arg, list | tuple):
        for item in arg:
            if isinstance(item, str) and not item.isascii():
                return True
    return False


def _clean_arg(arg: object) -> object:
    if isinstance(arg, str):
        return clean(arg)
    if isinstance(arg, (list, tuple)):
        cleaned = [clean(a) if isinstance(a, str) else a for a in arg]
        if all(a is b for a, b in zip(cleaned, arg, strict=True)):
            return arg
        return type(arg)(cleaned)
    return arg
