/* Fuzz harness: the xz index reader (backends/xz/index.c) on a whole
 * file: stream padding, stream footers and headers, every stream's
 * index, combining them and the block table, then the partial-decode
 * digests' setup (partial.c) with their memory bound. */
#include <stdint.h>
#include <stddef.h>

#include "error.h"
#include "memory_layer.h"
#include "xz/xz-internal.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct layer *lower = memory_layer_new (data, size);
  struct xz_index idx;
  struct xz_digests dg;

  if (lower == NULL)
    return 0;
  if (xz_index_read (lower, "fuzz.xz", &idx) == 0)
    {
      if (idx.nblocks > 0)
        (void) xz_index_find (&idx, idx.usize ? idx.usize - 1 : 0);
      if (xz_digests_init (&dg, &idx, "fuzz.xz") == 0)
        xz_digests_free (&dg);
      xz_index_free (&idx);
    }
  error_clear ();
  layer_close (lower);
  return 0;
}
