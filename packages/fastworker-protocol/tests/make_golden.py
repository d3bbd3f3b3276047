"""Write golden files for the current protocol version from ``protocol_samples.py``.

Usage: python packages/fastworker-protocol/tests/make_golden.py

Only missing files are written: an existing golden file is a record of what peers of
that version sent and is never overwritten.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fastworker.protocol import PROTOCOL_VERSION, encode_frame

sys.path.insert(0, str(Path(__file__).parent))
from protocol_samples import SAMPLES_BY_VERSION

CURRENT = "{}.{}".format(*PROTOCOL_VERSION)
GOLDEN_DIR = Path(__file__).parent / "golden" / CURRENT


def main() -> None:
    """Write every missing golden file."""
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for kind, message in SAMPLES_BY_VERSION[CURRENT].items():
        path = GOLDEN_DIR / f"{kind}.msgpack"
        if path.exists():
            continue
        path.write_bytes(encode_frame([message]))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
