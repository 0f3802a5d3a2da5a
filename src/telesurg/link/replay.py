"""Sliding anti-replay window (RFC 6479): a ring of 64-bit blocks, O(1) per packet, no shifting.

With 128 blocks the window tolerates 8128 packets of reordering (one block is the one being
recycled), the figure WireGuard uses. Also used to drop the later copies of a multi-path message.
"""

from __future__ import annotations

_BLOCK_BITS = 64
_BLOCK_SHIFT = 6
_BIT_MASK = _BLOCK_BITS - 1


class ReplayWindow:
    """Accept each counter value at most once; reject values older than the window."""

    __slots__ = ("_blocks", "_ring_mask", "_top", "size")

    def __init__(self, blocks: int = 128) -> None:
        if blocks < 2 or blocks & (blocks - 1):
            raise ValueError("blocks: expected a power of two >= 2")
        self._blocks = [0] * blocks
        self._ring_mask = blocks - 1
        self._top = -1  # highest counter accepted so far
        self.size = (blocks - 1) * _BLOCK_BITS  # guaranteed window in packets

    def check(self, counter: int) -> str | None:
        """Why this counter would be refused ("replay" / "too_old"), or None if it is new. No update."""
        if counter > self._top:
            return None
        if self._top - counter >= self.size:
            return "too_old"
        block = self._blocks[(counter >> _BLOCK_SHIFT) & self._ring_mask]
        return "replay" if block >> (counter & _BIT_MASK) & 1 else None

    def accept(self, counter: int) -> None:
        """Mark counter as seen; call only after check() returned None and the packet authenticated."""
        blocks = self._blocks
        index = counter >> _BLOCK_SHIFT
        top = self._top
        if counter > top:
            current = top >> _BLOCK_SHIFT if top >= 0 else -1
            if index != current:  # entering new blocks: clear the ones being recycled
                mask = self._ring_mask
                for i in range(current + 1, current + 1 + min(index - current, len(blocks))):
                    blocks[i & mask] = 0
            self._top = counter
        blocks[index & self._ring_mask] |= 1 << (counter & _BIT_MASK)

    def check_and_accept(self, counter: int) -> str | None:
        reason = self.check(counter)
        if reason is None:
            self.accept(counter)
        return reason
