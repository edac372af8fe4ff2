"""Resource limits of the triage decoders: file size, pixel count, decode time, decode memory.

Decode memory is bounded by :class:`MemoryBudget`, one per run and shared by every decode worker:
before a file's pixels are decoded, its peak decode memory is estimated from its header (file bytes
plus pixels x the bytes per pixel its decoder and grayscale conversion need at most) and reserved;
the worker waits while other files hold the budget and gives it back when the image has been cut
down to the model's window. One file alone may use the whole budget, so the largest image accepted
is the one whose estimate fits in it; peak memory is the runner's baseline plus the budget.
"""

from __future__ import annotations

import threading

MAX_PIXELS = 80_000_000  # ~9000x9000: larger than any radiograph detector, far below a bomb
MAX_FILE_BYTES = 512 * 1024 * 1024
#: a file whose decode takes longer becomes an error row (its decode is abandoned)
DECODE_TIMEOUT_S = 60.0
#: decode memory shared by all workers of a run (bytes); see the module docstring
DEFAULT_MEMORY_BUDGET = 1024 * 1024 * 1024


class BudgetExceeded(ValueError):
    """An image whose decode would need more memory than the whole budget."""


class MemoryBudget:
    """A counting budget of bytes: ``reserve(n)`` waits until ``n`` bytes are free."""

    def __init__(self, total: int = DEFAULT_MEMORY_BUDGET):
        self.total = int(total)
        self.used = 0
        self.peak = 0
        self._free = threading.Condition()

    def reserve(self, amount: int) -> "Reservation":
        """Hold ``amount`` bytes until the returned reservation is released (or exits)."""
        amount = max(0, int(amount))
        if amount > self.total:
            raise BudgetExceeded(f"decoding it needs about {amount / 2**20:.0f} MiB, more than the "
                                 f"{self.total / 2**20:.0f} MiB decode memory limit")
        with self._free:
            while self.used + amount > self.total:
                self._free.wait()
            self.used += amount
            self.peak = max(self.peak, self.used)
        return Reservation(self, amount)

    def _release(self, amount: int) -> None:
        with self._free:
            self.used -= amount
            self._free.notify_all()


class Reservation:
    """Bytes held in a :class:`MemoryBudget`; released once (idempotent)."""

    def __init__(self, budget: MemoryBudget, amount: int):
        self.budget, self.amount = budget, amount

    def release(self) -> None:
        if self.amount:
            self.budget._release(self.amount)
            self.amount = 0

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
