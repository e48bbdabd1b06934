/* Fuzz harness: decoding xz blocks (backends/xz/block.c, partial.c)
 * where a valid index (index.c) points: the block header, the filter
 * chain and its memory limit, sizes against the index, the check; then
 * the partial decoder, segment by segment, against the digests of the
 * verified decode; and the zero-block signatures (zerosig.c): a block
 * verified as zeroes must be recognised as zeroes again. */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>

#include "error.h"
#include "memory_layer.h"
#include "xz/xz-internal.h"

/* Blocks decoded per input, and the largest decoded in memory. */
#define MAX_BLOCKS 8
#define MAX_USIZE (4u << 20)
#define SEGMENT 4096

/* Segment callback of the partial decoder: take every segment. */
static int
take (void *opaque, size_t seg, const unsigned char *data, size_t len)
{
  size_t *total = opaque;

  (void) seg;
  (void) data;
  *total += len;
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct layer *lower = memory_layer_new (data, size);
  struct xz_index idx;
  struct xz_digests dg;
  struct xz_zero_sigs zs;
  size_t n;

  if (lower == NULL)
    return 0;
  if (xz_index_read (lower, "fuzz.xz", &idx) < 0)
    goto out;
  if (xz_digests_init (&dg, &idx, "fuzz.xz") < 0)
    {
      xz_index_free (&idx);
      goto out;
    }
  xz_zero_sigs_init (&zs);
  for (n = 0; n < idx.nblocks && n < MAX_BLOCKS; n++)
    {
      const struct xz_block *b = &idx.blocks[n];
      unsigned char *buf;
      size_t got = 0, segments;

      if (b->usize > MAX_USIZE)
        continue;
      segments = (size_t) ((b->usize + SEGMENT - 1) / SEGMENT);
      /* The head only (no check verified), in small segments. */
      (void) xz_block_decode_head (lower, "fuzz.xz", b, n, SEGMENT,
                                   segments > 2 ? 2 : segments - 1, take,
                                   &got);
      buf = malloc (b->usize);
      if (buf == NULL)
        continue;
      switch (xz_block_decode (lower, "fuzz.xz", b, n, buf, &zs))
        {
        case 0:
          xz_digests_record (&dg, b, n, buf);
          /* Re-read the end of the block by partial decoding. */
          (void) xz_partial_read (lower, "fuzz.xz", &dg, b, n,
                                  (size_t) (b->usize - 1), 1, buf);
          break;
        case XZ_BLOCK_ZERO:
          /* Again: recognised by its bytes, or decoded; zeroes both ways. */
          if (xz_block_decode (lower, "fuzz.xz", b, n, buf, &zs)
              != XZ_BLOCK_ZERO)
            abort ();
          break;
        }
      free (buf);
    }
  xz_zero_sigs_free (&zs);
  xz_digests_free (&dg);
  xz_index_free (&idx);
 out:
  /* The decoder this thread keeps between blocks. */
  xz_block_thread_cleanup ();
  error_clear ();
  layer_close (lower);
  return 0;
}
