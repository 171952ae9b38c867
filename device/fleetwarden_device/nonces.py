"""The replay guard on disk: every accepted command's nonce, kept until its `not_after`.

`commands.verify` calls `check_and_add` last, once the signature, time and target hold (a refused document
never burns its nonce). After `not_after` a nonce can be forgotten: `verify` refuses the document as expired
anyway. The file is rewritten atomically (temporary file, fsync, rename), so a power cut leaves the old or the
new set, never a torn one; an unreadable file is an error (the agent refuses commands) rather than an empty
set, which would let every past command be replayed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path


class NonceStore:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.path = path
        self.clock = clock

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
            raise ValueError(f"nonce store {self.path} is corrupt")
        return data

    def check_and_add(self, nonce: str, not_after: int) -> bool:
        now = self.clock()
        seen = {key: until for key, until in self._read().items() if until > now}
        if nonce in seen:
            return False
        seen[nonce] = int(not_after)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "w") as handle:
            json.dump(seen, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)
        return True
