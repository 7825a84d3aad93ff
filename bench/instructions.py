#!/usr/bin/env python3
"""Instructions per proxied request (callgrind, the plain `bench.local` route) of one or more
Portico binaries, twice each, in one setup: the before/after figure for a request-path change.

    cargo build --release --bin portico && cp target/release/portico /tmp/after
    git stash / checkout the base; build; cp target/release/portico /tmp/before
    python3 bench/instructions.py /tmp/before /tmp/after
    python3 bench/instructions.py --rewrite /tmp/after    (the "rewrite" scenario's route)
    python3 bench/instructions.py --allowlist /tmp/after  (a route with an allowlist)

Needs valgrind, nginx (the backends) and h2load, as bench/run does."""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def main():
    args = sys.argv[1:]
    # `--rewrite`: the "rewrite" scenario's route (regex host, capture rewrite, snippet header).
    host, path = (harness.REWRITE_HOST, "/app/") if "--rewrite" in args else (None, "/")
    # `--allowlist`: a route like the plain one with an allowlist that admits the client.
    if "--allowlist" in args:
        host = harness.ALLOW_HOST
    binaries = [Path(b).resolve() for b in args if not b.startswith("--")]
    if not binaries:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory(prefix="portico-instructions-") as work:
        harness.PORTICO = binaries[0]
        setup = harness.Setup(work)
        try:
            for binary in binaries:
                harness.PORTICO = binary
                for run in (1, 2):
                    n = harness.instructions_per_request(setup, "portico", host, path)
                    print(f"{binary} run {run}: {n:,.0f} instructions/request", flush=True)
        finally:
            setup.stop()


if __name__ == "__main__":
    main()
