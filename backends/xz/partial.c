/* diskshelf: partial re-decoding of xz blocks for random readers.
 *
 * A random read that misses the block cache costs a whole block decode
 * (16 MiB for `xz --block-size=16MiB`) even when it wants 4 KiB near the
 * start of it.  A block's check (CRC/SHA at its end) can only be
 * verified by decoding all of it, so the first decode is always whole;
 * but then, for every SEGMENT of the verified output, we keep a 64-bit
 * digest.  When the block has left the cache and a random reader wants
 * it again, it is decoded only up to the end of the segments the read
 * touches, and those segments are compared with their digests: on
 * average half a block of work, and never a byte that was not verified.
 * A mismatch (the compressed bytes changed or rotted since) is EIO.
 *
 * Thread model: a block's digests are written once, by the decode that
 * verified it, before its `known` flag is set (release); readers test
 * the flag (acquire) before reading them.  Two decodes of one block may
 * race to write the same digests: they write the same values.
 * Memory: 8 bytes per MiB of image, plus 9 bytes per block.
 */
#include "xz-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* One step of the digest: mix a 64-bit word into a lane. */
static inline uint64_t
mix (uint64_t lane, uint64_t word)
{
  lane ^= word * UINT64_C (0x9E3779B97F4A7C15);
  lane = (lane << 31) | (lane >> 33);
  return lane * UINT64_C (0xC2B2AE3D27D4EB4F);
}

/* A fast 64-bit digest of a segment (not cryptographic: it only has to
 * notice that the same compressed bytes decoded differently). */
static uint64_t
segment_digest (const unsigned char *p, size_t n)
{
  uint64_t a = 1, b = 2, c = 3, d = 4 + n, w[4];

  for (; n >= sizeof w; p += sizeof w, n -= sizeof w)
    {
      memcpy (w, p, sizeof w);
      a = mix (a, w[0]);
      b = mix (b, w[1]);
      c = mix (c, w[2]);
      d = mix (d, w[3]);
    }
  for (; n > 0; p++, n--)
    a = mix (a, *p);
  return mix (mix (mix (a, b), c), d);
}

/* Number of segments of block b. */
static size_t
segments_of (const struct xz_block *b)
{
  return (size_t) ((b->usize + XZ_SEGMENT - 1) / XZ_SEGMENT);
}

/* Set up digests for every block of idx (none known yet), if they fit
 * in XZ_INDEX_MEMORY_MAX beside the block table. */
int
xz_digests_init (struct xz_digests *dg, const struct xz_index *idx,
                 const char *src)
{
  uint64_t left = XZ_INDEX_MEMORY_MAX - xz_index_memory (idx);
  size_t i, total = 0;

  memset (dg, 0, sizeof *dg);
  /* 9 bytes per block, 8 per segment; the sizes come from the file. */
  if (xz_index_memory (idx) > XZ_INDEX_MEMORY_MAX
      || idx->nblocks + 1 > left / (sizeof *dg->first + sizeof *dg->known))
    goto too_large;
  left -= (idx->nblocks + 1) * (sizeof *dg->first + sizeof *dg->known);
  for (i = 0; i < idx->nblocks; i++)
    {
      total += segments_of (&idx->blocks[i]);
      if (total > left / sizeof *dg->digest)
        goto too_large;
    }
  total = 0;
  dg->first = malloc ((idx->nblocks + 1) * sizeof *dg->first);
  dg->known = calloc (idx->nblocks + 1, sizeof *dg->known);
  if (dg->first == NULL || dg->known == NULL)
    goto nomem;
  for (i = 0; i < idx->nblocks; i++)
    {
      dg->first[i] = total;
      total += segments_of (&idx->blocks[i]);
    }
  dg->first[idx->nblocks] = total;
  dg->digest = malloc ((total ? total : 1) * sizeof *dg->digest);
  if (dg->digest == NULL)
    goto nomem;
  return 0;

 nomem:
  xz_digests_free (dg);
  return error_set (ENOMEM, "xz: %s: out of memory for block digests", src);

 too_large:
  return error_set (EFBIG, "xz: %s: the index (%zu blocks, %llu bytes "
                    "decompressed) needs more than the limit of %llu MiB "
                    "of memory; recompress the image with larger blocks "
                    "(xz -T0 --block-size=16MiB)", src, idx->nblocks,
                    (unsigned long long) idx->usize,
                    XZ_INDEX_MEMORY_MAX >> 20);
}

/* Free what xz_digests_init allocated. */
void
xz_digests_free (struct xz_digests *dg)
{
  free (dg->first);
  free ((void *) dg->known);
  free (dg->digest);
  memset (dg, 0, sizeof *dg);
}

/* Remember the digests of block n, whose whole output buf was just
 * verified by its check. */
void
xz_digests_record (struct xz_digests *dg, const struct xz_block *b, size_t n,
                   const unsigned char *buf)
{
  size_t s, nseg = segments_of (b);

  if (atomic_load_explicit (&dg->known[n], memory_order_acquire))
    return;
  for (s = 0; s < nseg; s++)
    {
      uint64_t start = (uint64_t) s * XZ_SEGMENT;
      size_t len = b->usize - start < XZ_SEGMENT
                   ? (size_t) (b->usize - start) : XZ_SEGMENT;
      dg->digest[dg->first[n] + s] = segment_digest (buf + start, len);
    }
  atomic_store_explicit (&dg->known[n], 1, memory_order_release);
}

/* True when block n was verified once and is worth decoding in part. */
bool
xz_digests_usable (struct xz_digests *dg, const struct xz_block *b, size_t n)
{
  return b->usize >= 2 * XZ_SEGMENT
         && atomic_load_explicit (&dg->known[n], memory_order_acquire);
}

/* What one partial read needs in the segment callback. */
struct head_read
{
  struct xz_digests *dg;
  const char *src;
  size_t n;               /* block number */
  size_t offset, count;   /* the range wanted, inside the block */
  unsigned char *out;
};

/* Check one decoded segment against its digest and copy out the part of
 * the wanted range it holds. */
static int
take_segment (void *opaque, size_t seg, const unsigned char *data, size_t len)
{
  struct head_read *h = opaque;
  size_t start = seg * XZ_SEGMENT, end = start + len, from, to;

  if (h->offset >= end || h->offset + h->count <= start)
    return 0;
  if (segment_digest (data, len) != h->dg->digest[h->dg->first[h->n] + seg])
    return error_set (EIO, "xz: %s: block %zu decodes differently than when "
                      "its check was verified (bytes %zu-%zu of the block): "
                      "the compressed data changed or is corrupt", h->src,
                      h->n, start, end - 1);
  from = h->offset > start ? h->offset : start;
  to = h->offset + h->count < end ? h->offset + h->count : end;
  memcpy (h->out + (from - h->offset), data + (from - start), to - from);
  return 0;
}

/* Read count bytes at offset inside block n by decoding only the
 * segments up to the end of the range and checking them against the
 * digests (xz_digests_usable must be true). */
int
xz_partial_read (struct layer *lower, const char *src, struct xz_digests *dg,
                 const struct xz_block *b, size_t n, size_t offset,
                 size_t count, void *buf)
{
  struct head_read h = {
    .dg = dg, .src = src, .n = n, .offset = offset, .count = count,
    .out = buf,
  };

  if (count == 0)
    return 0;
  atomic_fetch_add_explicit (&dg->partial_reads, 1, memory_order_relaxed);
  return xz_block_decode_head (lower, src, b, n, XZ_SEGMENT,
                               (offset + count - 1) / XZ_SEGMENT,
                               take_segment, &h);
}
