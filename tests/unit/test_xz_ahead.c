/* Unit tests of the xz layer's read-ahead window (backends/xz/ahead.c):
 * blocks known to be zero are free and stepped over, the window counts
 * the others, the walk is bounded; and of the zero-block signatures
 * (backends/xz/zerosig.c): a block matches only with the same bytes,
 * sizes and check type as a recorded zero block. */
#include <stdlib.h>
#include <string.h>

#include "xz-internal.h"

#include "check.h"

#define NBLOCKS 200

static _Atomic unsigned char kind[NBLOCKS];

/* Mark blocks [from, to) as kind k. */
static void
mark (size_t from, size_t to, unsigned char k)
{
  size_t b;

  for (b = from; b < to; b++)
    atomic_store (&kind[b], k);
}

static void
test_window (void)
{
  size_t out[XZ_AHEAD_MAX], n;

  mark (0, NBLOCKS, XZ_KIND_UNKNOWN);
  /* Nothing known: the next `ahead` blocks. */
  n = xz_ahead_pick (kind, NBLOCKS, 3, 2, out);
  CHECK (n == 2 && out[0] == 4 && out[1] == 5);
  /* Known data counts like unknown (it may have left the cache). */
  mark (4, 6, XZ_KIND_DATA);
  n = xz_ahead_pick (kind, NBLOCKS, 3, 2, out);
  CHECK (n == 2 && out[0] == 4 && out[1] == 5);
  /* Zero blocks are free: a run of them is stepped over, and the
   * window reaches the data behind it. */
  mark (4, 20, XZ_KIND_ZERO);
  mark (21, 30, XZ_KIND_ZERO);
  n = xz_ahead_pick (kind, NBLOCKS, 3, 2, out);
  CHECK (n == 2 && out[0] == 20 && out[1] == 30);
  /* The reader's own block is never picked, whatever it is. */
  n = xz_ahead_pick (kind, NBLOCKS, 20, 1, out);
  CHECK (n == 1 && out[0] == 30);
  /* The end of the image stops the window. */
  n = xz_ahead_pick (kind, NBLOCKS, NBLOCKS - 2, 4, out);
  CHECK (n == 1 && out[0] == NBLOCKS - 1);
  n = xz_ahead_pick (kind, NBLOCKS, NBLOCKS - 1, 4, out);
  CHECK (n == 0);
  /* The walk looks at most XZ_AHEAD_SCAN blocks on. */
  mark (0, NBLOCKS, XZ_KIND_ZERO);
  atomic_store (&kind[XZ_AHEAD_SCAN + 1], XZ_KIND_UNKNOWN);
  n = xz_ahead_pick (kind, NBLOCKS, 0, 2, out);
  CHECK (n == 0);
  n = xz_ahead_pick (kind, NBLOCKS, 1, 2, out);
  CHECK (n == 1 && out[0] == XZ_AHEAD_SCAN + 1);
  /* ahead 0: nothing. */
  mark (0, NBLOCKS, XZ_KIND_UNKNOWN);
  CHECK (xz_ahead_pick (kind, NBLOCKS, 0, 0, out) == 0);
}

static void
test_zero_sigs (void)
{
  struct xz_zero_sigs zs;
  struct xz_block a = { .coffset = 100, .unpadded = 3766, .uoffset = 0,
                        .usize = 24 << 20, .check = 10, .stream = 1 };
  struct xz_block b = a, big = a;
  unsigned char bytes[3768], other[3768];
  unsigned i;

  for (i = 0; i < sizeof bytes; i++)
    bytes[i] = (unsigned char) (i * 7 + 1);
  memcpy (other, bytes, sizeof other);
  other[1234] ^= 1;

  xz_zero_sigs_init (&zs);
  CHECK (!xz_zero_sigs_match (&zs, &a, bytes));         /* nothing yet */
  xz_zero_sigs_record (&zs, &a, bytes);
  /* Another block (elsewhere in the file) with the same bytes. */
  b.coffset = 5000;
  b.uoffset = 24 << 20;
  CHECK (xz_zero_sigs_match (&zs, &b, bytes));
  CHECK (atomic_load (&zs.matched) == 1);
  /* One bit off, another size, another check type: no. */
  CHECK (!xz_zero_sigs_match (&zs, &b, other));
  b.usize = 8 << 20;
  CHECK (!xz_zero_sigs_match (&zs, &b, bytes));
  b.usize = a.usize;
  b.check = 4;
  CHECK (!xz_zero_sigs_match (&zs, &b, bytes));
  b.check = a.check;
  b.unpadded = a.unpadded - 1;          /* same padded length */
  CHECK (!xz_zero_sigs_match (&zs, &b, bytes));
  CHECK (atomic_load (&zs.matched) == 1);
  /* Recording the same block again keeps one signature. */
  xz_zero_sigs_record (&zs, &a, bytes);
  CHECK (zs.n == 1);
  /* The table keeps the first XZ_ZERO_SIGS. */
  for (i = 0; i < XZ_ZERO_SIGS + 2; i++)
    {
      b = a;
      b.usize = (uint64_t) (i + 1) << 20;
      xz_zero_sigs_record (&zs, &b, bytes);
    }
  CHECK (zs.n == XZ_ZERO_SIGS);
  b.usize = 1 << 20;
  CHECK (xz_zero_sigs_match (&zs, &b, bytes));
  b.usize = (uint64_t) (XZ_ZERO_SIGS + 2) << 20;
  CHECK (!xz_zero_sigs_match (&zs, &b, bytes));
  xz_zero_sigs_free (&zs);

  /* Blocks larger than XZ_ZERO_SIG_MAX on disk are never kept. */
  xz_zero_sigs_init (&zs);
  {
    size_t len = XZ_ZERO_SIG_MAX + 4;
    unsigned char *p = calloc (1, len);
    big.unpadded = len;
    if (p)
      {
        xz_zero_sigs_record (&zs, &big, p);
        CHECK (zs.n == 0 && !xz_zero_sigs_match (&zs, &big, p));
      }
    free (p);
  }
  xz_zero_sigs_free (&zs);
}

int
main (void)
{
  test_window ();
  test_zero_sigs ();
  return check_failures ? 1 : 0;
}
