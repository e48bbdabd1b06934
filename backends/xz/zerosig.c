/* diskshelf: blocks recognised as zeroes by their compressed bytes.
 *
 * Every block of xz is decoded on its own (its dictionary starts
 * empty), and liblzma is deterministic: two blocks with the same bytes
 * on disk (header, compressed data, padding and check), the same
 * decompressed size from the index and the same check type decode to
 * the same bytes, with the same verdict on their check.  An encoder
 * given the same input and settings writes the same bytes, so the zero
 * blocks of a mostly empty VM image compressed by `xz -T0`, `xz
 * --block-size` or pixz are all alike: a few KiB each (3.7 KiB for 24
 * MiB of zeroes).  Once one of them was decoded and verified as zeroes,
 * the others are recognised by comparing their bytes with it, in full
 * (no hash, so no collision can turn data into zeroes), and are not
 * decoded: decoding 24 MiB of zeroes takes liblzma about 47 ms of CPU,
 * half of all the decoding of bench_xz.sh's vm-24M image.
 *
 * Only small blocks are kept (XZ_ZERO_SIG_MAX bytes on disk), at most
 * XZ_ZERO_SIGS of them per layer, the first ones seen.
 *
 * Thread model: any number of threads; lock protects the table.
 */
#include "xz-internal.h"

#include <stdlib.h>
#include <string.h>

/* Set up an empty table. */
void
xz_zero_sigs_init (struct xz_zero_sigs *zs)
{
  memset (zs, 0, sizeof *zs);
  pthread_mutex_init (&zs->lock, NULL);
}

/* Free the table's copies. */
void
xz_zero_sigs_free (struct xz_zero_sigs *zs)
{
  unsigned i;

  for (i = 0; i < zs->n; i++)
    free (zs->sig[i].bytes);
  zs->n = 0;
  pthread_mutex_destroy (&zs->lock);
}

/* The bytes block b takes in the file: header, data, padding, check. */
static uint64_t
padded_size (const struct xz_block *b)
{
  return (b->unpadded + 3) & ~(uint64_t) 3;
}

/* Is sig the signature of block b with these bytes? */
static bool
sig_is (const struct xz_zero_sig *sig, const struct xz_block *b,
        const unsigned char *bytes)
{
  return sig->usize == b->usize && sig->unpadded == b->unpadded
    && sig->check == b->check
    && memcmp (sig->bytes, bytes, (size_t) padded_size (b)) == 0;
}

/* True when block b, whose bytes in the file are `bytes` (all of them,
 * padded), is one a verified zero block was made of. */
bool
xz_zero_sigs_match (struct xz_zero_sigs *zs, const struct xz_block *b,
                    const unsigned char *bytes)
{
  bool found = false;
  unsigned i;

  if (padded_size (b) > XZ_ZERO_SIG_MAX)
    return false;
  pthread_mutex_lock (&zs->lock);
  for (i = 0; i < zs->n && !found; i++)
    found = sig_is (&zs->sig[i], b, bytes);
  pthread_mutex_unlock (&zs->lock);
  if (found)
    atomic_fetch_add (&zs->matched, 1);
  return found;
}

/* Remember block b, just decoded and verified as zeroes from `bytes`,
 * when it is small and the table has room. */
void
xz_zero_sigs_record (struct xz_zero_sigs *zs, const struct xz_block *b,
                     const unsigned char *bytes)
{
  size_t len = (size_t) padded_size (b);
  unsigned i;

  if (padded_size (b) > XZ_ZERO_SIG_MAX)
    return;
  pthread_mutex_lock (&zs->lock);
  for (i = 0; i < zs->n; i++)
    if (sig_is (&zs->sig[i], b, bytes))
      break;
  if (i == zs->n && zs->n < XZ_ZERO_SIGS
      && (zs->sig[i].bytes = malloc (len)) != NULL)
    {
      memcpy (zs->sig[i].bytes, bytes, len);
      zs->sig[i].usize = b->usize;
      zs->sig[i].unpadded = b->unpadded;
      zs->sig[i].check = b->check;
      zs->n++;
    }
  pthread_mutex_unlock (&zs->lock);
}
