"""``prfaas crds``: write (or check) the CRD YAML generated from ``prfaas.api``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prfaas.commands.errors import CommandError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "crds",
        help="write the CustomResourceDefinitions generated from the pydantic models",
        description=(
            "Render PrefillPool and PDCluster (prfaas.io/v1alpha1) as CRDs with structural "
            "schemas, CEL rules, status subresource and printer columns."
        ),
    )
    p.add_argument("--out", metavar="DIR", help="write one file per CRD into DIR (default: stdout)")
    p.add_argument(
        "--check", action="store_true", help="with --out: fail (exit 1) if DIR is out of date"
    )
    p.add_argument("--reference", metavar="FILE.md", help="also write the Markdown field reference")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prfaas.api.crdgen import CRDS, filename, render
    from prfaas.api.reference import markdown

    if args.reference:
        try:
            Path(args.reference).write_text(markdown(), encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {args.reference}: {exc}") from None

    if not args.out:
        if args.check:
            raise CommandError("--check needs --out DIR")
        sys.stdout.write("---\n".join(render(info) for info in CRDS))
        return 0
    out = Path(args.out)
    stale = []
    for info in CRDS:
        path = out / filename(info)
        text = render(info)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
            continue
        try:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc}") from None
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run `make crds`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0
