"""Near-duplicate detection for curation: MinHash signatures and LSH banding, streamed.

A row is a near duplicate of an earlier kept row when both its prompt and its
answer are: the Jaccard similarity of their word 3-gram shingles (lower-cased)
is at least ``threshold`` for each. Prompt and answer are compared apart
because one long shared part (a P3 passage, a toolformer tool description)
would otherwise make "the square root of 81" a duplicate of "of 49".
datasketch computes the MinHash signatures; LSH banding finds candidates
(rows sharing one band of ``rows_per_band`` hash values, half the prompt's,
half the answer's), and each candidate is checked by the signatures'
estimated Jaccard, so banding luck matches nothing.

Memory per kept row is a signature (2 x ``num_perm`` 16-bit values: 256 bytes
at 64), a 4-byte link per band (14 bands at the default threshold) and at most
one 12-byte entry per band in sorted NumPy arrays, so 437,605 rows need about
220 MB; no text is held. Why MinHash and not embeddings: measured by
``benchmarks/bench_curate.py neardup`` (docs/training-data.md).
"""

from __future__ import annotations

import re
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

WORDS = re.compile(r"\w+")
SHINGLE_WORDS = 3
NUM_PERM = 64
SEED = 1
BLOCK = 4096
"""Kept rows' signatures are stacked in arrays of this many rows."""
MAX_CANDIDATES = 64
"""Kept rows checked per band of a row, newest first."""


def shingle_hashes(text: str, size: int = SHINGLE_WORDS) -> npt.NDArray[np.uint32]:
    """32-bit hashes of the distinct word ``size``-grams of ``text``, lower-cased.

    Words are hashed once (CRC-32) and combined per n-gram with NumPy, which
    is ~5x faster than hashing each n-gram's text. Example:
    ``len(shingle_hashes("a b c d")) == 2``
    """
    import numpy as np

    words = WORDS.findall(text.lower())
    if len(words) <= size:
        return np.array([zlib.crc32(" ".join(words).encode("utf-8"))], dtype=np.uint32)
    hashes = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), np.uint32, len(words))
    combined = np.zeros(len(words) - size + 1, dtype=np.uint32)
    for offset in range(size):
        combined = (
            combined * np.uint32(0x01000193) ^ hashes[offset : len(hashes) - size + 1 + offset]
        )
    return np.unique(combined)


class _SortedTable:
    """uint64 -> int32, append-only: new keys in a dict, merged into sorted arrays now and then.

    A Python dict of 2 million ints costs ~200 MB; sorted arrays cost 12 bytes an entry.
    """

    MERGE_AT = 65_536

    def __init__(self) -> None:
        import numpy as np

        self._np = np
        self._recent: dict[int, int] = {}
        self._keys = np.empty(0, dtype=np.uint64)
        self._values = np.empty(0, dtype=np.int32)

    def _find(self, keys: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.intp], Any]:
        """Each key's index in the sorted arrays, and whether it is there."""
        index = self._keys.searchsorted(keys)
        clipped = self._np.minimum(index, max(len(self._keys) - 1, 0))
        present = (
            (index < len(self._keys)) & (self._keys[clipped] == keys)
            if len(self._keys)
            else (self._np.zeros(len(keys), dtype=bool))
        )
        return clipped, present

    def get(self, keys: npt.NDArray[np.uint64]) -> list[int]:
        """The value of each key, -1 where it has none."""
        index, present = self._find(keys)
        values = self._values[index] if len(self._keys) else index
        found = []
        for key, there, value in zip(keys.tolist(), present.tolist(), values.tolist(), strict=True):
            recent = self._recent.get(key)
            found.append(recent if recent is not None else value if there else -1)
        return found

    def put(self, keys: npt.NDArray[np.uint64], value: int) -> list[int]:
        """Set every key to ``value``; returns the values they had (-1: none)."""
        previous = self.get(keys)
        index, present = self._find(keys)
        for key, there, at in zip(keys.tolist(), present.tolist(), index.tolist(), strict=True):
            if there and key not in self._recent:
                self._values[at] = value
            else:
                self._recent[key] = value
        if len(self._recent) >= self.MERGE_AT:
            self._merge()
        return previous

    def _merge(self) -> None:
        np = self._np
        keys = np.fromiter(self._recent.keys(), dtype=np.uint64, count=len(self._recent))
        values = np.fromiter(self._recent.values(), dtype=np.int32, count=len(self._recent))
        keys, values = np.concatenate([self._keys, keys]), np.concatenate([self._values, values])
        order = np.argsort(keys, kind="stable")
        self._keys, self._values, self._recent = keys[order], values[order], {}


class NearDuplicates:
    """Streaming near-duplicate finder: :meth:`find` a match among kept rows, :meth:`add` a kept row.

    Example::

        index = NearDuplicates(threshold=0.7)
        sig = index.signature("a prompt", "its answer")
        if index.find(sig) is None:
            index.add(sig, "row-id")
    """

    def __init__(self, threshold: float = 0.7, num_perm: int = NUM_PERM) -> None:
        import numpy as np
        from datasketch import MinHash  # type: ignore[import-untyped,unused-ignore]
        from datasketch.lsh import _optimal_param  # type: ignore[import-untyped,unused-ignore]

        if not 0 < threshold <= 1:
            raise ValueError("the near-duplicate threshold must be in (0, 1]")
        self.threshold = threshold
        self._np = np
        # One sketch, cleared per text: building a MinHash parses its permutations each time.
        self._sketch = MinHash(num_perm=num_perm, seed=SEED, hashfunc=int)  # shingles come hashed
        self.num_perm = num_perm
        # Bands over the interleaved signature hold prompt and answer values alike, so a
        # band matches with probability about (Jp * Ja) ** (r / 2): both must be similar.
        self.bands, self.rows_per_band = _optimal_param(threshold, 2 * num_perm, 0.5, 0.5)
        # Each band's values are folded into one 64-bit key with fixed odd multipliers.
        rng = np.random.default_rng(SEED)
        self._mix = rng.integers(1, 2**63, size=(self.bands, self.rows_per_band), dtype=np.uint64)
        self._mix |= np.uint64(1)
        self._salt = rng.integers(0, 2**63, size=self.bands, dtype=np.uint64)
        self._table = _SortedTable()
        self._signatures: list[npt.NDArray[np.uint16]] = []
        self._previous: list[npt.NDArray[np.int32]] = []
        self._block: list[npt.NDArray[np.uint16]] = []
        self._block_previous: list[npt.NDArray[np.int32]] = []
        self._ids: list[str] = []

    def _minhash_of(self, text: str) -> npt.NDArray[np.uint32]:
        minhash = self._sketch
        minhash.clear()
        minhash.update_batch(shingle_hashes(text).tolist())
        values: npt.NDArray[np.uint32] = minhash.hashvalues.copy()
        return values

    def signature(self, prompt: str, response: str) -> npt.NDArray[np.uint32]:
        """The MinHash signatures of the prompt's and the answer's shingles, interleaved."""
        signature = self._np.empty(2 * self.num_perm, dtype=self._np.uint32)
        signature[0::2] = self._minhash_of(prompt)
        signature[1::2] = self._minhash_of(response)
        return signature

    def _band_keys(self, signature: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint64]:
        used = self.bands * self.rows_per_band
        uint64 = self._np.uint64
        bands = signature[:used].astype(uint64).reshape(self.bands, self.rows_per_band)
        with self._np.errstate(over="ignore"):
            keys: Any = (bands * self._mix).sum(axis=1, dtype=uint64) ^ self._salt
        return keys  # type: ignore[no-any-return]

    def _stored(self, ordinal: int) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.int32]]:
        """A kept row's signature and, per band, the previous kept row with the same band key."""
        block, offset = divmod(ordinal, BLOCK)
        if block < len(self._signatures):
            return self._signatures[block][offset], self._previous[block][offset]
        return self._block[offset], self._block_previous[offset]

    def similarity(self, a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
        """Estimated Jaccard similarity of two rows: the lower of the prompts' and the answers'."""
        same = a.astype(self._np.uint16) == b.astype(self._np.uint16)
        return float(min(same[0::2].mean(), same[1::2].mean()))

    def find(self, signature: npt.NDArray[np.uint32]) -> tuple[str, float] | None:
        """The id of a kept row this one nearly duplicates, and the estimated similarity.

        Each band's kept rows are chained, newest first; at most ``MAX_CANDIDATES``
        are checked per band, which bounds the time a huge template group costs.
        """
        best: tuple[str, float] | None = None
        checked: set[int] = set()
        for band, ordinal in enumerate(self._table.get(self._band_keys(signature))):
            for _ in range(MAX_CANDIDATES):
                if ordinal < 0:
                    break
                stored, previous = self._stored(ordinal)
                if ordinal not in checked:
                    checked.add(ordinal)
                    similarity = self.similarity(signature, stored)
                    if similarity >= self.threshold and (best is None or similarity > best[1]):
                        best = (self._ids[ordinal], similarity)
                ordinal = int(previous[band])
        return best

    def add(self, signature: npt.NDArray[np.uint32], row_id: str) -> None:
        """Remember a kept row, so later near duplicates of it are found."""
        np = self._np
        ordinal = len(self._ids)
        self._ids.append(row_id)
        previous = self._table.put(self._band_keys(signature), ordinal)
        self._block.append(signature.astype(np.uint16))
        self._block_previous.append(np.array(previous, np.int32))
        if len(self._block) == BLOCK:
            self._signatures.append(np.stack(self._block))
            self._previous.append(np.stack(self._block_previous))
            self._block, self._block_previous = [], []
