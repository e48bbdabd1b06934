/* diskshelf: which blocks an xz layer decodes ahead of a sequential
 * reader.
 *
 * The window is counted in blocks that cost something: a block known to
 * decode to zeroes is free (no decode, no memory: its reads are a
 * memset), so it is stepped over and not counted.  Behind a long run of
 * zero blocks, as in a mostly empty VM image, the next data blocks are
 * then already decoding while the reader streams the zeroes, instead of
 * one core waiting for the reader to come within `ahead` blocks of
 * them.  The walk stops after XZ_AHEAD_SCAN blocks, so a read costs a
 * bounded look at the per-block kinds.  Memory stays bounded by the
 * block cache, which refuses read-ahead that would not fit.
 *
 * Thread model: pure function of its arguments; kind is read with
 * atomic loads, so any thread may call it while workers update kinds.
 */
#include "xz-internal.h"

/* Fill out (room for `ahead` entries) with the blocks after `from` to
 * decode ahead of a reader in block `from`, nearest first; returns how
 * many. */
size_t
xz_ahead_pick (const _Atomic unsigned char *kind, size_t nblocks,
               size_t from, unsigned ahead, size_t *out)
{
  size_t b, n = 0;

  for (b = from + 1; b < nblocks && b <= from + XZ_AHEAD_SCAN && n < ahead;
       b++)
    if (atomic_load (&kind[b]) != XZ_KIND_ZERO)
      out[n++] = b;
  return n;
}
