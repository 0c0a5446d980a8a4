"""LPM_TRIE (the kernel's ``lpm_trie.c``): the same trie, node for node, so longest-prefix lookups
and the post-order of ``get_next_key`` (more specific prefixes first) are the kernel's.

Keys are a native-order u32 prefix length followed by the data bytes, most significant first.
Releases differ: before Linux 6.14 an update of a full trie fails with ENOSPC even when it
replaces an existing prefix, NOEXIST and EXIST are ignored, and ``get_next_key`` can take a
prefix of the same length for the (deleted) one asked about; from 6.14 on the trie honours the
flags, replaces in place when full, and restarts from the leftmost prefix instead.
"""

from __future__ import annotations

import errno
import sys
from typing import TYPE_CHECKING

from ..._sys.constants import Cmd, MapFlags, MapType
from .maps import ACCESS_MASK, EXIST, NOEXIST, CreateRequest, MemMap, access_ok, register
from .objects import Errno
from .releases import LPM_FLAGS

if TYPE_CHECKING:
    from .kernel import MemoryKernel

_FLAGS = int(MapFlags.NO_PREALLOC | MapFlags.NUMA_NODE) | ACCESS_MASK
_VALUE_MAX = (1 << 22) - 256 - 40
ENOENT, EEXIST, EINVAL, ENOSPC = errno.ENOENT, errno.EEXIST, errno.EINVAL, errno.ENOSPC


class _Node:
    __slots__ = ("child", "prefixlen", "bits", "value", "im")

    def __init__(self, prefixlen: int, bits: int, value: bytes | None) -> None:
        self.child: list[_Node | None] = [None, None]
        self.prefixlen = prefixlen
        self.bits = bits
        self.value = value
        self.im = value is None
        """An intermediate node: only there to tell its two children apart, never returned."""


@register
class LpmTrie(MemMap):
    """A longest-prefix-match trie over ``data_size`` bytes of data per key."""

    types = (MapType.LPM_TRIE,)
    batch_commands = frozenset({Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_UPDATE_BATCH, Cmd.MAP_DELETE_BATCH})

    def __init__(self, req: CreateRequest, kernel: MemoryKernel) -> None:
        super().__init__(req, kernel)
        self.data_size = req.key_size - 4
        self.max_prefixlen = self.data_size * 8
        self.root: _Node | None = None
        self.n_entries = 0
        self.fixed = LPM_FLAGS.in_release(kernel.version)
        """The 6.14 behaviour (flags honoured, in-place update of a full trie, exact next key)."""

    @classmethod
    def check(cls, req: CreateRequest) -> None:
        if (req.max_entries == 0 or not req.flags & MapFlags.NO_PREALLOC or req.flags & ~_FLAGS
                or not access_ok(req.flags) or not 5 <= req.key_size <= 260 or not 1 <= req.value_size <= _VALUE_MAX):
            raise Errno(EINVAL)

    def _split(self, key: bytes) -> tuple[int, int]:
        """(prefix length, data as a big integer) of a key."""
        return int.from_bytes(key[:4], sys.byteorder), int.from_bytes(key[4:], "big")

    def _match(self, node: _Node, prefixlen: int, bits: int) -> int:
        """``longest_prefix_match``: leading bits of ``node`` and the key that agree, up to the
        shorter prefix."""
        limit = min(node.prefixlen, prefixlen)
        diff = node.bits ^ bits
        common = self.max_prefixlen - diff.bit_length()
        return min(common, limit)

    def _bit(self, bits: int, index: int) -> int:
        return (bits >> (self.max_prefixlen - 1 - index)) & 1

    def _key(self, node: _Node) -> bytes:
        return node.prefixlen.to_bytes(4, sys.byteorder) + node.bits.to_bytes(self.data_size, "big")

    def lookup(self, key: bytes | None, flags: int = 0) -> bytes:
        assert key is not None
        prefixlen, bits = self._split(key)
        if prefixlen > self.max_prefixlen:
            raise Errno(ENOENT)
        node, found = self.root, None
        while node is not None:
            matchlen = self._match(node, prefixlen, bits)
            if matchlen == self.max_prefixlen:
                found = node
                break
            if matchlen < node.prefixlen:
                break
            if not node.im:
                found = node
            node = node.child[self._bit(bits, node.prefixlen)]
        if found is None:
            raise Errno(ENOENT)
        assert found.value is not None
        return found.value

    def _check_add(self, flags: int) -> None:
        """``trie_check_add_elem`` (6.14+): room for one more prefix."""
        if flags == EXIST:
            raise Errno(ENOENT)
        if self.n_entries == self.max_entries:
            raise Errno(ENOSPC)
        self.n_entries += 1

    def update(self, key: bytes | None, value: bytes, flags: int) -> None:
        assert key is not None
        if flags > EXIST:
            raise Errno(EINVAL)
        prefixlen, bits = self._split(key)
        if prefixlen > self.max_prefixlen:
            raise Errno(EINVAL)
        if not self.fixed:
            if self.n_entries == self.max_entries:
                raise Errno(ENOSPC)
            self.n_entries += 1
        new = _Node(prefixlen, bits, value)
        slot_owner: _Node | None = None
        slot_index = 0
        node = self.root
        matchlen = 0
        while node is not None:
            matchlen = self._match(node, prefixlen, bits)
            if node.prefixlen != matchlen or node.prefixlen == prefixlen or node.prefixlen == self.max_prefixlen:
                break
            slot_owner, slot_index = node, self._bit(bits, node.prefixlen)
            node = node.child[slot_index]

        def assign(target: _Node) -> None:
            if slot_owner is None:
                self.root = target
            else:
                slot_owner.child[slot_index] = target

        if node is None:
            if self.fixed:
                self._check_add(flags)
            assign(new)
            return
        if node.prefixlen == matchlen:
            if self.fixed:
                if not node.im:
                    if flags == NOEXIST:
                        raise Errno(EEXIST)
                else:
                    self._check_add(flags)
            elif not node.im:
                self.n_entries -= 1
            new.child = node.child
            assign(new)
            return
        if self.fixed:
            self._check_add(flags)
        if matchlen == prefixlen:
            new.child[self._bit(node.bits, matchlen)] = node
            assign(new)
            return
        im = _Node(matchlen, node.bits, None)
        if self._bit(bits, matchlen):
            im.child = [node, new]
        else:
            im.child = [new, node]
        assign(im)

    def delete(self, key: bytes | None) -> None:
        assert key is not None
        prefixlen, bits = self._split(key)
        if prefixlen > self.max_prefixlen:
            raise Errno(EINVAL)
        # (owner, index) of the slot holding node, and of the slot holding its parent
        trim: tuple[_Node | None, int] = (None, 0)
        trim2 = trim
        parent: _Node | None = None
        node = self.root
        matchlen = 0
        while node is not None:
            matchlen = self._match(node, prefixlen, bits)
            if node.prefixlen != matchlen or node.prefixlen == prefixlen:
                break
            parent = node
            trim2 = trim
            trim = (node, self._bit(bits, node.prefixlen))
            node = node.child[trim[1]]
        if node is None or node.prefixlen != prefixlen or node.prefixlen != matchlen or node.im:
            raise Errno(ENOENT)
        self.n_entries -= 1
        if node.child[0] is not None and node.child[1] is not None:
            node.im, node.value = True, None
            return

        def assign(slot: tuple[_Node | None, int], target: _Node | None) -> None:
            owner, index = slot
            if owner is None:
                self.root = target
            else:
                owner.child[index] = target

        if parent is not None and parent.im and node.child[0] is None and node.child[1] is None:
            assign(trim2, parent.child[1] if node is parent.child[0] else parent.child[0])
            return
        assign(trim, node.child[0] if node.child[0] is not None else node.child[1])

    def next_key(self, key: bytes | None) -> bytes:
        search_root = self.root
        if search_root is None:
            raise Errno(ENOENT)
        if key is not None:
            prefixlen, bits = self._split(key)
            if prefixlen <= self.max_prefixlen:
                found = self._next_after(search_root, prefixlen, bits)
                if found is not None:
                    return found
        return self._key(self._leftmost(search_root))

    def _next_after(self, root: _Node, prefixlen: int, bits: int) -> bytes | None:
        """The key after an exact match of (prefixlen, bits) in post-order; None: start over.
        Raises ENOENT when the match is the last key."""
        stack: list[_Node] = []
        node: _Node | None = root
        matchlen = 0
        while node is not None:
            stack.append(node)
            matchlen = self._match(node, prefixlen, bits)
            if node.prefixlen != matchlen or node.prefixlen == prefixlen:
                break
            node = node.child[self._bit(bits, node.prefixlen)]
        exact = matchlen if self.fixed else prefixlen
        if node is None or node.prefixlen != exact or node.im:
            return None
        node = stack[-1]
        i = len(stack) - 1
        while i > 0:
            parent = stack[i - 1]
            if parent.child[0] is node and parent.child[1] is not None:
                return self._key(self._leftmost(parent.child[1]))
            if not parent.im:
                return self._key(parent)
            node = parent
            i -= 1
        raise Errno(ENOENT)

    @staticmethod
    def _leftmost(node: _Node | None) -> _Node:
        """The first non-intermediate node in post-order under ``node``."""
        found = None
        while node is not None:
            if node.im:
                node = node.child[0]
            else:
                found = node
                node = node.child[0] if node.child[0] is not None else node.child[1]
        assert found is not None
        return found
