"""String ops. String tensors never enter the compiled numeric graph: these converters run on
the host, on NumPy object arrays of ``str``, as a pre-stage before it (``split_host`` below
decides which nodes form that stage, and refuses a numeric op that reads a string).

``StringNormalizer`` follows onnxruntime: stopwords are removed first (compared exactly, or
case-folded by the locale's per-character lower-case mapping when ``is_case_sensitive=0``),
then each kept string is mapped to upper or lower case character by character with the
locale's *simple* case mapping, as C's ``towupper``/``towlower`` do (so ``ß`` stays ``ß`` and
``İ`` lowers to ``i``). The ``C``/``POSIX`` locales map ASCII letters only; every other glibc
locale uses the Unicode mappings, except the Turkic ones (dotted and dotless i), which are
refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import GpuGraphError, UnsupportedError
from .table import NodeCtx, register

# The op types that run in the host pre-stage (their inputs and outputs are strings).
HOST_OPS: frozenset[str] = frozenset({"StringNormalizer"})

_LOCALE = re.compile(r"^([a-z]{2,3})(_[A-Z]{2})?(\.[A-Za-z0-9-]+)?(@[a-z]+)?$")
# glibc locales whose LC_CTYPE case tables are not the Unicode ones: tr_TR and the locales
# that copy it (az_AZ, crh_UA, ku_TR, tr_CY, tt_RU@iqtelif): i <-> İ and ı <-> I.
_TURKIC = ("tr", "az", "crh", "ku")


def _upper_char(c: str) -> str:
    u = c.upper()
    if len(u) == 1:
        return u
    t = c.title()  # a one-char title case is the simple upper mapping (ᾀ -> ᾈ); ß has none
    return t if len(t) == 1 else c


def _lower_char(c: str) -> str:
    low = c.lower()
    return low if len(low) == 1 else ("i" if c == "\u0130" else c)  # İ: simple mapping is i


def _ascii_only(f: Callable[[str], str]) -> Callable[[str], str]:
    return lambda c: f(c) if c.isascii() else c


def _case_maps(node: NodeCtx, locale: str) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """The (lower, upper) per-character maps of ``locale``; an unsupported one is refused."""
    if locale in ("C", "POSIX"):
        return _ascii_only(_lower_char), _ascii_only(_upper_char)
    if locale in ("", "C.UTF-8", "C.utf8"):
        return _lower_char, _upper_char
    m = _LOCALE.match(locale)
    if not m:
        raise node.unsupported(f"locale {locale!r} (not a language[_TERRITORY][.UTF-8] name)")
    lang, _, codeset, modifier = m.groups()
    if lang in _TURKIC or modifier == "@iqtelif":
        raise node.unsupported(f"locale {locale!r} (Turkic dotted/dotless i case rules)")
    if codeset and codeset[1:].lower().replace("-", "") != "utf8":
        raise node.unsupported(f"locale {locale!r} (codeset {codeset[1:]}: only UTF-8)")
    return _lower_char, _upper_char


def _text(v: object) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _strings(node: NodeCtx, x: object) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "OUS":
        raise node.unsupported(
            "a string op on a value computed by the compiled graph (string ops run on the "
            "host, on string graph inputs and constants)"
        )
    return x


@register("StringNormalizer")
def _string_normalizer(node: NodeCtx, ins: list, attrs: dict) -> np.ndarray:
    x = _strings(node, ins[0])
    action = _text(attrs.get("case_change_action", "NONE"))
    if action not in ("NONE", "LOWER", "UPPER"):
        raise node.unsupported(f"case_change_action={action!r}")
    lower, upper = _case_maps(node, _text(attrs.get("locale", "")))
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[0] != 1) or x.shape[-1] == 0:
        raise GpuGraphError(
            f"{node.where()}: the input must have shape [C] or [1, C] with C > 0, "
            f"got {list(x.shape)}"
        )

    def fold(s: str) -> str:
        return "".join(map(lower, s))

    sensitive = int(attrs.get("is_case_sensitive", 0))
    stop = {_text(w) if sensitive else fold(_text(w)) for w in attrs.get("stopwords", [])}
    change = {"LOWER": lower, "UPPER": upper}.get(action)
    kept = []
    for s in map(_text, x.reshape(-1)):
        if (s if sensitive else fold(s)) in stop:
            continue
        kept.append("".join(map(change, s)) if change else s)
    out = np.empty(len(kept) or 1, dtype=object)
    out[:] = kept or [""]  # everything removed: one empty string, as onnxruntime gives
    return out.reshape((1, -1)) if x.ndim == 2 else out


def as_strings(x: Any) -> np.ndarray:
    """A NumPy object array of ``str`` (bytes are decoded as UTF-8), as ONNX strings are."""
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=object)
    out.reshape(-1)[:] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in x.flat]
    return out


def split_host(nodes: list, inputs, constants: dict) -> tuple[list, list, set[str]]:
    """(host-stage nodes, numeric-graph nodes, string value names). String tensors never enter
    the numeric graph: the string ops (``HOST_OPS``) run before it, on string inputs and
    constants; a numeric op reading a string, or a string op reading a computed value, is an
    UnsupportedError naming the node."""
    strings = {s.name for s in inputs if s.dtype == object}
    strings |= {k for k, v in constants.items() if np.dtype(v.dtype).kind in "OUS"}
    host, graph = [], []
    for n in nodes:
        read = [x for x in n.inputs if x]
        if n.ctx.op_type in HOST_OPS:
            bad = [x for x in read if x not in strings]
            if bad:
                raise UnsupportedError(
                    f"{n.ctx.where()}: reads {bad[0]!r}, which is not a string graph input or "
                    "constant (string ops run on the host before the compiled graph)"
                )
            host.append(n)
            strings.update(o for o in n.outputs if o)
            continue
        bad = [x for x in read if x in strings]
        if bad:
            raise UnsupportedError(
                f"{n.ctx.where()}: reads the string tensor {bad[0]!r}; string tensors run "
                f"only through the host-side string ops ({', '.join(sorted(HOST_OPS))})"
            )
        graph.append(n)
    return host, graph, strings
