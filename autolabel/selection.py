"""Parsing feature selections: ``SAE:IDX`` references and ``0:512,7`` range specs.

These are pure functions at the bottom of the import layers, so that every command can validate
its options before it loads a model or opens anything heavy.
"""

from __future__ import annotations

from autolabel.errors import InputError

NO_LIMIT = 1 << 31  # an SAE width bound for specs checked before the SAE is known


def parse_feature_ref(ref: str) -> tuple[str | None, int]:
    """Split ``SAE:IDX`` (or a bare ``IDX``) into its parts; the SAE name may contain ':'."""
    head, _, tail = ref.rpartition(":")
    if not tail.isdigit():
        raise InputError(f"bad feature reference {ref!r}; use SAE:INDEX, e.g. default:12")
    return (head or None), int(tail)


def parse_feature_range(spec: str, d_sae: int = NO_LIMIT) -> list[int]:
    """Parse ``0:512``, ``1,5,9``, ``0:64,100`` or ``all`` into sorted unique indices.

    ``d_sae`` bounds the indices; with the default (the SAE is not known yet) only the syntax,
    negative numbers and empty ranges are checked, and ``all`` or an open range cannot expand.
    """
    if spec.strip() == "all":
        return list(range(d_sae)) if d_sae != NO_LIMIT else []
    indices: set[int] = set()
    for part in spec.split(","):
        indices.update(_part(spec, part.strip(), d_sae))
    bad = [i for i in sorted(indices) if not 0 <= i < d_sae]
    if bad or not indices:
        what = "nothing" if not indices else f"index {bad[0]}"
        bound = f"features 0..{d_sae - 1}" if d_sae != NO_LIMIT else "features from 0 up"
        raise InputError(f"--features {spec!r} selects {what}; this SAE has {bound}")
    return sorted(indices)


def _part(spec: str, part: str, d_sae: int) -> range | list[int]:
    """One comma-separated part: ``lo:hi``, ``:hi``, ``lo:`` or a single index."""
    try:
        if ":" in part:
            lo_text, hi_text = part.split(":")
            lo = int(lo_text or 0)
            hi = int(hi_text) if hi_text else (d_sae if d_sae != NO_LIMIT else lo + 1)
            if lo < 0 or hi <= lo:
                raise ValueError
            return range(lo, hi)
        return [int(part)] if part else []
    except ValueError:
        raise InputError(f"bad --features {spec!r}; use e.g. 0:512, 1,5,9 or all "
                         "(ranges are LO:HI with 0 <= LO < HI)") from None


def check_feature_spec(spec: str | None) -> None:
    """Validate a ``--features`` value's syntax before anything heavy is loaded."""
    if spec is not None and spec.strip() != "all":
        parse_feature_range(spec)


def range_spec(indices: list[int]) -> str:
    """Compress sorted indices into a range spec: ``[0, 1, 2, 5]`` -> ``"0:3,5"``."""
    parts: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if prev == start else f"{start}:{prev + 1}")
        if i is not None:
            start = prev = i
    return ",".join(parts)
