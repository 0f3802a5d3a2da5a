"""`telesurg keys --name NAME --out DIR`: create a site's key pair and self-signed certificate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from telesurg.link.keys import IdentityError, generate_identity


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="site name, becomes the certificate CN (e.g. robot)")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for NAME.key and NAME.crt")


def run(args: argparse.Namespace) -> int:
    try:
        ident = generate_identity(args.out, args.name)
    except IdentityError as exc:
        print(f"telesurg keys: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {ident.key_path} and {ident.cert_path}")
    print(f"fingerprint (SHA-256 of the certificate): {ident.fingerprint}")
    return 0
