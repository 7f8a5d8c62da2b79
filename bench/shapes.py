#!/usr/bin/env python3
"""The shapes of the sweep (issue 12) and the --shapes syntax that scripts/bench.sh --sweep,
bench/torch_baseline.py and bench/modelnew_bench.py share: "N,Cin,Cout,HW,k,G;..." (batch, input
and output channels, H = W, kernel size, GroupNorm groups; ';' between shapes).

    python3 bench/shapes.py [--shapes LIST] [--no-default-shapes]

prints the resolved list, one shape a line as "N Cin Cout HW k G" (for the shell), or exits 2
naming the bad entry.
"""
import argparse
import sys

# (N, Cin, Cout, HxW, k, G): the reference and small sizes first, then the unfused shapes.
SWEEP = [
    (128, 8, 32, 256, 3, 8), (128, 3, 16, 32, 3, 8), (64, 8, 64, 128, 3, 8),
    (32, 16, 32, 192, 3, 4), (128, 4, 32, 128, 5, 8), (64, 32, 64, 96, 3, 16),
    (16, 3, 32, 320, 7, 8), (256, 8, 16, 64, 1, 4), (8, 64, 128, 128, 3, 32),
]
FIELDS = ("N", "Cin", "Cout", "HW", "k", "G")


def parse_shape(text):
    """One "N,Cin,Cout,HW,k,G" entry as a tuple of ints; ValueError naming what is wrong."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != len(FIELDS):
        raise ValueError(f"shape {text!r}: expected 6 comma-separated integers "
                         f"{','.join(FIELDS)}, got {len(parts)} values")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"shape {text!r}: expected integers {','.join(FIELDS)}") from None
    for name, v in zip(FIELDS, vals):
        if v < 1:
            raise ValueError(f"shape {text!r}: {name} must be >= 1, got {v}")
    n, cin, cout, hw, k, g = vals
    if k > hw:
        raise ValueError(f"shape {text!r}: kernel k = {k} exceeds HW = {hw}")
    if cout % g:
        raise ValueError(f"shape {text!r}: G = {g} must divide Cout = {cout}")
    return vals


def parse_shapes(text):
    """A ';'-separated list of shapes (empty entries, such as a trailing ';', are skipped)."""
    return [parse_shape(s) for s in text.split(";") if s.strip()]


def resolve(extra="", defaults=True):
    """The sweep's shapes (unless defaults is False) followed by extra's, without repeats."""
    out = list(SWEEP) if defaults else []
    for s in parse_shapes(extra):
        if s not in out:
            out.append(s)
    if not out:
        raise ValueError("no shapes: --no-default-shapes needs --shapes N,Cin,Cout,HW,k,G;...")
    return out


def label(shape):
    """The shape as "N,Cin,Cout,HW,k,G": the key of the JSON results."""
    return ",".join(str(v) for v in shape)


def title(shape):
    """The shape as the tables print it: "128, 8 -> 32, 256, k3, G8"."""
    n, cin, cout, hw, k, g = shape
    return f"{n}, {cin} -> {cout}, {hw}, k{k}, G{g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shapes", default="", help="more shapes: N,Cin,Cout,HW,k,G;...")
    ap.add_argument("--no-default-shapes", action="store_true", help="only the --shapes given")
    args = ap.parse_args()
    try:
        shapes = resolve(args.shapes, not args.no_default_shapes)
    except ValueError as e:
        print(f"shapes: --shapes: {e}", file=sys.stderr)
        return 2
    for s in shapes:
        print(" ".join(str(v) for v in s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
