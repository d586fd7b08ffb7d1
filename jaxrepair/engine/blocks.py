"""Host-side bookkeeping of the paged KV cache: block allocation and prefix reuse.

The device cache is a pool of fixed-size blocks (`block_size` token slots each); a sequence
owns a *block table*, the list of blocks that hold its tokens in order. Block 0 is never
handed out: padded rows and tokens write there and nobody reads it.

Prefix reuse. A block whose tokens are all computed is *registered* under (parent block,
its tokens): exact keys, so a match is never a hash collision. A new sequence walks the
registry from the root: every full block that matches is shared (reference counted, read
only). Where it diverges, or where its prompt ends inside a block, the longest matching
child -- a full block, or a registered *partial* tail of a finished sequence -- is copied
into a fresh block and the sequence continues writing there (copy on write). So turn k+1 of
an episode recomputes only its new tokens, and the G samples of a group compute their
shared prompt once.

Blocks nobody uses stay registered (cached) until the pool runs out; then the least recently
used is evicted together with its registered descendants (their keys name it as parent).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

ROOT = -1  # parent of a sequence's first block
NULL_BLOCK = 0


class OutOfBlocks(RuntimeError):
    """The pool cannot hold the request even after evicting every unused cached block."""


@dataclasses.dataclass
class _Entry:
    parent: int
    tokens: tuple[int, ...]  # computed tokens the block holds (block_size when full)


@dataclasses.dataclass(frozen=True)
class PrefixMatch:
    """Result of matching a token prefix: blocks to share, and a block to copy (or none).

    `shared` blocks hold `len(shared) * block_size` tokens; `copy_from` (when not None) holds
    `copy_tokens` more tokens that the sequence may reuse after copying the block.
    """

    shared: tuple[int, ...]
    copy_from: int | None
    copy_tokens: int

    def tokens(self, block_size: int) -> int:
        return len(self.shared) * block_size + self.copy_tokens


class BlockPool:
    """Allocation, reference counts and the prefix registry of the paged cache."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is reserved), got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: list[int] = list(range(num_blocks - 1, 0, -1))  # pop() gives 1, 2, ...
        self._refs = [0] * num_blocks
        self._entry: dict[int, _Entry] = {}  # registered blocks
        self._children: dict[int, dict[tuple[int, ...], int]] = {}
        self._used_at: dict[int, int] = {}  # registered blocks with no reference: LRU clock
        self._clock = itertools.count()

    # ----------------------------------------------------------------------- accounting
    @property
    def free_blocks(self) -> int:
        """Blocks obtainable now: free plus evictable cached ones."""
        return len(self._free) + len(self._used_at)

    def refs(self, block: int) -> int:
        return self._refs[block]

    def is_registered(self, block: int) -> bool:
        return block in self._entry

    # ----------------------------------------------------------------------- allocation
    def allocate(self, n: int) -> list[int]:
        """n fresh blocks (reference count 1), evicting least recently used cached blocks."""
        if n > self.free_blocks:
            raise OutOfBlocks(f"need {n} KV blocks, {self.free_blocks} obtainable")
        out = []
        for _ in range(n):
            while not self._free:
                self._evict_one()
            b = self._free.pop()
            self._refs[b] = 1
            out.append(b)
        return out

    def retain(self, blocks: Sequence[int]) -> None:
        for b in blocks:
            if self._refs[b] == 0:
                self._used_at.pop(b, None)
            self._refs[b] += 1

    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference per block; unreferenced blocks stay cached if registered."""
        for b in blocks:
            self._refs[b] -= 1
            if self._refs[b] < 0:
                raise AssertionError(f"KV block {b} released more often than retained")
            if self._refs[b] == 0:
                if b in self._entry:
                    self._used_at[b] = next(self._clock)
                else:
                    self._free.append(b)

    def _evict_one(self) -> None:
        victim = min(self._used_at, key=self._used_at.__getitem__)
        self._unregister_subtree(victim)

    def _unregister_subtree(self, block: int) -> None:
        stack = [block]
        while stack:
            b = stack.pop()
            entry = self._entry.pop(b)
            siblings = self._children.get(entry.parent)
            if siblings is not None and siblings.get(entry.tokens) == b:
                del siblings[entry.tokens]
                if not siblings:
                    del self._children[entry.parent]
            stack.extend(self._children.pop(b, {}).values())
            if self._refs[b] == 0:
                self._used_at.pop(b, None)
                self._free.append(b)

    # ------------------------------------------------------------------------- registry
    def register(self, parent: int, block: int, tokens: Sequence[int]) -> int:
        """Record that `block` (child of `parent`) holds `tokens`; returns the block to use.

        When an identical block is already registered, that one is returned and nothing
        changes (a sequence with a full duplicate switches its table to it; a partial tail
        keeps writing into its own). When `block` was registered under another key (a
        partial tail that has grown), the stale key and its descendants are dropped first.
        Registering the still-growing tail of a running sequence is safe: its first
        len(tokens) slots never change again.
        """
        key = tuple(tokens)
        if parent != ROOT and parent not in self._entry:
            return block  # the parent was evicted: nothing can reach this block by key
        siblings = self._children.setdefault(parent, {})
        existing = siblings.get(key)
        if existing is not None and existing != block:
            return existing
        old = self._entry.get(block)
        if old is not None and (old.parent, old.tokens) != (parent, key):
            self._unregister_subtree(block)  # a partial tail grew: its old key is stale
            siblings = self._children.setdefault(parent, {})
        self._entry[block] = _Entry(parent, key)
        siblings[key] = block
        return block

    def match(self, tokens: Sequence[int]) -> PrefixMatch:
        """Longest cached prefix of `tokens`: full blocks to share, then one to copy."""
        bs = self.block_size
        shared: list[int] = []
        parent = ROOT
        pos = 0
        while pos + bs <= len(tokens):
            hit = self._children.get(parent, {}).get(tuple(tokens[pos : pos + bs]))
            if hit is None:
                break
            shared.append(hit)
            parent, pos = hit, pos + bs
        rest = tuple(tokens[pos : pos + bs])
        best, best_len = None, 0
        for key, block in self._children.get(parent, {}).items():
            n = _common_prefix(key, rest)
            if n > best_len:
                best, best_len = block, n
        return PrefixMatch(tuple(shared), best, best_len)

    def clear_cache(self) -> None:
        """Forget every registered prefix (new weights make cached KV stale); blocks in use
        stay allocated to their sequences, unused cached blocks become free."""
        for parent in list(self._children.get(ROOT, {}).values()):
            self._unregister_subtree(parent)
        for block in list(self._entry):  # orphans whose parent was unregistered earlier
            if block in self._entry:
                self._unregister_subtree(block)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
