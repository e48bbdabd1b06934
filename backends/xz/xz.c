/* diskshelf: the xz layer, which shows an xz file as its decompressed
 * image with random access.
 *
 * Opening reads only the index (index.c).  Files made of blocks no larger
 * than --max-block-size (xz -T0, xz --block-size, pixz) are read block by
 * block through the shared decoded-block cache: a read decodes only the
 * blocks it touches (block.c), on the cache's worker pool, and a
 * sequential reader gets the next blocks decoded ahead of it.  Files with
 * a larger block go down the single-block path (single.c).
 *
 * A block that decoded to zeroes is remembered (one byte per block): it
 * costs no memory, reads of it are answered with zeroes without asking
 * the cache, read-ahead steps over it (ahead.c), and extents report it
 * as a hole, so SEEK_DATA/SEEK_HOLE and `cp --sparse` see the empty
 * parts of a VM image.  Zero blocks alike on disk are decoded once
 * (zerosig.c).
 *
 * Thread model: pread may be called from any number of threads; the
 * index is immutable, the block cache and the single-block path have
 * their own locks, and the read-ahead hint and the per-block kinds are
 * atomics.
 */
#include "xz-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockcache.h"
#include "entry.h"
#include "error.h"
#include "options.h"
#include "seqdetect.h"
#include "stack.h"
#include "text.h"
#include "zeroes.h"

#define DEFAULT_MAX_BLOCK (512ull * 1024 * 1024)
#define SEQUENTIAL_SLACK (4ull * 1024 * 1024)
#define MIN_WINDOW (4ull * 1024 * 1024)
#define MAX_WINDOW (64ull * 1024 * 1024)

struct xz_layer
{
  struct layer l;
  char *src;
  struct xz_index idx;
  struct block_cache *cache;            /* borrowed */
  struct block_cache_client *client;    /* multi-block path */
  struct xz_single *single;             /* single-block path */
  unsigned ahead;                       /* blocks of read-ahead */
  struct xz_digests digests;            /* multi-block path */
  _Atomic unsigned char *kind;          /* per block: enum xz_block_kind */
  struct xz_zero_sigs zero_sigs;        /* zero blocks by their bytes */
  _Atomic uint64_t next_offset;         /* where a sequential read goes next */
  _Atomic size_t reader_block;          /* the block of the last sequential
                                           read; SIZE_MAX after a random one */
  _Atomic uint64_t lent;                /* reads answered in place
                                           (xz_borrow) */
};

static void read_ahead (struct xz_layer *x, size_t from);

/* The block cache calls this on a worker to decode one block. */
static int
xz_decode_block (void *opaque, uint64_t index, void *buf, size_t size)
{
  struct xz_layer *x = opaque;
  int r = xz_block_decode (x->l.lower, x->src, &x->idx.blocks[index],
                           (size_t) index, buf, &x->zero_sigs);

  if (r == XZ_BLOCK_ZERO)
    {
      size_t from = atomic_load (&x->reader_block);

      atomic_store (&x->kind[index], XZ_KIND_ZERO);
      /* A zero block costs read-ahead nothing: the window of a
       * sequential reader reaches one block further now.  Queue that
       * block here rather than at the reader's next read, which may be
       * a while off when it waits for a block still decoding: the
       * worker would sit idle until then.  This block still counts at
       * its full size until we return, so near the cache's bound the
       * prefetch is refused and the reader's next read does it. */
      if (from != SIZE_MAX && index > from && index <= from + XZ_AHEAD_SCAN)
        read_ahead (x, from);
      return BLOCK_CACHE_ZERO;
    }
  if (r == 0)
    {
      xz_digests_record (&x->digests, &x->idx.blocks[index], (size_t) index,
                         buf);
      atomic_store (&x->kind[index], XZ_KIND_DATA);
    }
  return r;
}

/* Queue the decodes a sequential reader in block `from` should find
 * done when it gets there (ahead.c: blocks known to be zero are free),
 * until the cache refuses one for want of room. */
static void
read_ahead (struct xz_layer *x, size_t from)
{
  size_t want[XZ_AHEAD_MAX], n, i;

  n = xz_ahead_pick (x->kind, x->idx.nblocks, from, x->ahead, want);
  for (i = 0; i < n; i++)
    if (!block_cache_prefetch (x->client, want[i],
                               (size_t) x->idx.blocks[want[i]].usize))
      break;
}

/* Note a read of [offset, offset+count) for the sequential detector
 * and start the read-ahead it calls for.  True when it is sequential. */
static bool
note_read (struct xz_layer *x, uint64_t offset, size_t count)
{
  uint64_t prev;
  bool sequential;

  prev = atomic_exchange (&x->next_offset, offset + count);
  sequential = offset > 0
    && seq_offset_near (prev, offset, SEQUENTIAL_SLACK, SEQUENTIAL_SLACK);
  /* No read-ahead for a read of the first byte: starting it there
   * saved vm-24M's second block waiting for the first (about 0.27 s of
   * 0.8), but when many readers start at once (ten entries through a
   * small cache, tests/test_xz_readers.py) that read-ahead is what their
   * misses evict first, and is decoded again: 42-45 decodes for 40
   * where 40-42 were done without it. */
  if (sequential)
    {
      size_t last = xz_index_find (&x->idx, offset + count - 1);
      atomic_store (&x->reader_block, last);
      read_ahead (x, last);
    }
  else
    atomic_store (&x->reader_block, SIZE_MAX);
  return sequential;
}

/* Where the bytes of a read in block b come from.  One choice for
 * xz_pread and xz_borrow, so a copied read and a lent one never
 * disagree. */
enum block_source
{
  FROM_ZEROES,          /* the block is known to decode to zeroes */
  FROM_PARTIAL,         /* decode only as far as the read goes */
  FROM_CACHE,           /* the block cache (decoding it whole on a miss) */
};

static enum block_source
block_source (struct xz_layer *x, size_t b, bool sequential)
{
  if (atomic_load (&x->kind[b]) == XZ_KIND_ZERO)
    return FROM_ZEROES;
  /* A random reader of a block verified before and gone from the
   * cache: decode only as far as the read goes (partial.c). */
  if (!sequential && xz_digests_usable (&x->digests, &x->idx.blocks[b], b)
      && !block_cache_has (x->client, b))
    return FROM_PARTIAL;
  return FROM_CACHE;
}

/* A sequential reader, or one that starts at the image's first byte
 * (most likely to read on), holds its block while it reads on in it:
 * other readers' misses do not evict the block under it. */
static bool
holds_block (bool sequential, uint64_t offset)
{
  return sequential || offset == 0;
}

/* Read through the block cache, block by block. */
static int
xz_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  struct xz_layer *x = (struct xz_layer *) l;
  unsigned char *p = buf;
  size_t b;
  bool sequential;

  if (x->single)
    return xz_single_read (x->single, buf, count, offset);

  b = xz_index_find (&x->idx, offset);
  sequential = note_read (x, offset, count);
  while (count > 0)
    {
      const struct xz_block *blk = &x->idx.blocks[b];
      size_t in_block = (size_t) (offset - blk->uoffset);
      size_t n = blk->usize - in_block < count
        ? (size_t) (blk->usize - in_block) : count;
      int r = 0;

      switch (block_source (x, b, sequential))
        {
        case FROM_ZEROES:
          memset (p, 0, n);
          break;
        case FROM_PARTIAL:
          r = xz_partial_read (x->l.lower, x->src, &x->digests, blk, b,
                               in_block, n, p);
          break;
        case FROM_CACHE:
          r = block_cache_read (x->client, b, (size_t) blk->usize, in_block,
                                p, n, holds_block (sequential, offset));
          /* Decoded by another entry over the same source: learn. */
          if (r == BLOCK_CACHE_ZERO)
            atomic_store (&x->kind[b], XZ_KIND_ZERO);
          break;
        }
      if (r < 0)
        return r;
      p += n;
      offset += n;
      count -= n;
      b++;
    }
  return 0;
}

/* Lend zeroes for a read of count bytes. */
static int
lend_zeroes (struct xz_layer *x, size_t count, struct layer_borrow *out)
{
  out->data = zeroes (count);
  atomic_fetch_add (&x->lent, 1);
  return 1;
}

/* Lend a buffer of our own with the read's range decoded into it. */
static int
lend_partial (struct xz_layer *x, size_t b, size_t in_block, size_t count,
              struct layer_borrow *out)
{
  void *mem = malloc (count);
  int r;

  if (mem == NULL)
    return error_set (ENOMEM, "xz: %s: out of memory", x->src);
  r = xz_partial_read (x->l.lower, x->src, &x->digests, &x->idx.blocks[b],
                       b, in_block, count, mem);
  if (r < 0)
    {
      free (mem);
      return r;
    }
  out->data = mem;
  out->release = free;
  out->arg = mem;
  return 1;
}

/* A read inside one block, lent in place: the decoded block from the
 * cache (pinned until the borrower is done), or zeroes.  A random
 * reader of a block gone from the cache gets its range decoded into a
 * buffer of its own (partial.c), lent too.  0 for a read across blocks
 * and for the single-block path: the caller reads with pread. */
static int
xz_borrow (struct layer *l, size_t count, uint64_t offset,
           struct layer_borrow *out)
{
  struct xz_layer *x = (struct xz_layer *) l;
  const struct xz_block *blk;
  struct block_cache_loan *loan;
  const void *data;
  size_t b, in_block;
  bool sequential;
  int r;

  if (x->single || count > ZEROES_MAX)
    return 0;
  b = xz_index_find (&x->idx, offset);
  blk = &x->idx.blocks[b];
  in_block = (size_t) (offset - blk->uoffset);
  if (blk->usize - in_block < count)
    return 0;
  sequential = note_read (x, offset, count);
  switch (block_source (x, b, sequential))
    {
    case FROM_ZEROES:
      return lend_zeroes (x, count, out);
    case FROM_PARTIAL:
      return lend_partial (x, b, in_block, count, out);
    case FROM_CACHE:
      break;
    }
  r = block_cache_borrow (x->client, b, (size_t) blk->usize, in_block, count,
                          holds_block (sequential, offset), &data, &loan);
  if (r < 0)
    return r;
  if (r == BLOCK_CACHE_ZERO)
    {
      /* Decoded by another entry over the same source: learn. */
      atomic_store (&x->kind[b], XZ_KIND_ZERO);
      return lend_zeroes (x, count, out);
    }
  out->data = data;
  out->release = block_cache_loan_return;
  out->arg = loan;
  atomic_fetch_add (&x->lent, 1);
  return 1;
}

/* A single-block image decoded completely into the disk cache is that
 * cache file's bytes at the same offsets: lend it, so the kernel reads
 * it itself (FUSE passthrough) instead of asking us. */
static int
xz_lend_file (struct layer *l, struct layer_lend *out)
{
  struct xz_layer *x = (struct xz_layer *) l;
  int fd;

  if (x->single == NULL || xz_single_lend (x->single, &fd) < 0)
    return 0;
  out->fd = fd;
  out->release = xz_single_unlend;
  out->arg = x->single;
  return 1;
}

/* Extents: a block known to decode to zeroes is a hole; a block not
 * decoded yet is decoded (through the cache, so the reads that follow
 * are hits, and a zero block costs no memory) to find out.  The
 * single-block path is all data. */
static int
xz_extent (struct layer *l, uint64_t offset, struct layer_extent *out)
{
  struct xz_layer *x = (struct xz_layer *) l;
  const struct xz_block *blk;
  size_t b;
  int kind;

  if (x->single)
    {
      out->length = l->size - offset;
      out->hole = out->zero = false;
      return 0;
    }
  b = xz_index_find (&x->idx, offset);
  blk = &x->idx.blocks[b];
  kind = atomic_load (&x->kind[b]);
  if (kind == XZ_KIND_UNKNOWN)
    {
      unsigned char one;
      int r = block_cache_read (x->client, b, (size_t) blk->usize, 0, &one,
                                1, false);
      if (r < 0)
        return r;
      kind = r == BLOCK_CACHE_ZERO ? XZ_KIND_ZERO : XZ_KIND_DATA;
      atomic_store (&x->kind[b], kind);
    }
  out->length = blk->uoffset + blk->usize - offset;
  out->hole = out->zero = kind == XZ_KIND_ZERO;
  return 0;
}

/* Status lines: the file's shape and the cache or decode progress. */
static void
xz_status (struct layer *l, FILE *out)
{
  struct xz_layer *x = (struct xz_layer *) l;
  struct block_cache_stats st;
  char checks[64] = "";
  unsigned c;

  for (c = 0; c <= 15; c++)
    if (x->idx.checks & (1u << c))
      {
        size_t used = strlen (checks);
        snprintf (checks + used, sizeof checks - used, "%s%s",
                  used ? "," : "", xz_check_name (c));
      }
  fprintf (out, "xz-streams: %u\n", x->idx.nstreams);
  fprintf (out, "xz-blocks: %zu (largest %" PRIu64 " bytes)\n",
           x->idx.nblocks, x->idx.max_usize);
  fprintf (out, "xz-check: %s\n", checks);
  fprintf (out, "xz-compressed-size: %" PRIu64 "\n", x->idx.csize);
  if (x->single)
    xz_single_status (x->single, out);
  else
    {
      block_cache_get_stats (x->cache, &st);
      fprintf (out, "xz-mode: multi-block (random access)\n");
      size_t b, zeros = 0;
      for (b = 0; b < x->idx.nblocks; b++)
        zeros += atomic_load (&x->kind[b]) == XZ_KIND_ZERO;
      fprintf (out, "xz-partial-decodes: %" PRIu64 "\n",
               atomic_load (&x->digests.partial_reads));
      fprintf (out, "xz-zero-blocks: %zu (kept as holes)\n", zeros);
      fprintf (out, "xz-reads-in-place: %" PRIu64 " (answered from the "
               "cached block or zeroes, not copied)\n",
               atomic_load (&x->lent));
      fprintf (out, "xz-zero-blocks-matched: %" PRIu64 " (recognised by "
               "their compressed bytes, not decoded)\n",
               atomic_load (&x->zero_sigs.matched));
      fprintf (out, "memory-cache: %" PRIu64 " of %" PRIu64 " bytes, %"
               PRIu64 " blocks decoded (%" PRIu64 " zero), %" PRIu64
               " hits, %" PRIu64 " misses, %" PRIu64
               " evictions (all entries)\n",
               st.used_bytes, st.max_bytes, st.decoded_blocks,
               st.zero_blocks, st.hits, st.misses, st.evictions);
      fprintf (out, "memory-cache-waits: %" PRIu64 " reads waited for "
               "room (readers took turns), %" PRIu64 " held blocks evicted "
               "after the wait bound, %" PRIu64 " read-ahead blocks "
               "evicted before anybody read them (all entries)\n",
               st.room_waits, st.hold_breaks, st.ahead_evicted);
    }
}

/* Stop decoding, forget cached blocks, close the lower layer. */
static void
xz_close (struct layer *l)
{
  struct xz_layer *x = (struct xz_layer *) l;

  block_cache_client_free (x->client);
  xz_digests_free (&x->digests);
  xz_zero_sigs_free (&x->zero_sigs);
  free ((void *) x->kind);
  xz_single_free (x->single);
  xz_index_free (&x->idx);
  layer_close (x->l.lower);
  free (x->src);
  free (x);
}

static const struct layer_ops xz_ops = {
  .name = "xz",
  .pread = xz_pread,
  .borrow = xz_borrow,
  .lend_file = xz_lend_file,
  .extent = xz_extent,
  .status = xz_status,
  .close = xz_close,
};

/* The key that names this source's decoded blocks in the shared cache:
 * the identity of every layer below (URL or path, size, ETag,
 * Last-Modified, inode, mtime) and the index's fingerprint, so two
 * entries over one source share one set of blocks (issue 11).  NULL
 * (nothing shared) when a layer below cannot say what it is, as an NBD
 * export cannot. */
static char *
source_key (struct xz_layer *x)
{
  struct layer *l;
  char *key = NULL;
  size_t len = 0;
  FILE *f;

  for (l = x->l.lower; l; l = l->lower)
    if (l->ops->identity == NULL)
      return NULL;
  f = open_memstream (&key, &len);
  if (f == NULL)
    return NULL;
  layer_identity (x->l.lower, f);
  fprintf (f, "xz %" PRIu64 " %" PRIu64 " %016" PRIx64 "\n", x->idx.csize,
           x->idx.usize, x->idx.fingerprint);
  if (fclose (f) != 0)
    {
      free (key);
      return NULL;
    }
  return key;
}

/* Choose the single-block path for a file whose largest block is too
 * large for memory, saying in the log what it costs. */
static int
open_single (const struct stack_context *ctx, struct xz_layer *x,
             uint64_t max_block)
{
  struct xz_single_config cfg = {
    .lower = x->l.lower,
    .src = x->src,
    .index = &x->idx,
    .disk_cache = ctx->services ? ctx->services->disk_cache : NULL,
    .timeout = ctx->entry->timeout,
  };
  uint64_t mem = ctx->options ? ctx->options->memory_cache_size : 0;
  int r;

  /* Without a disk cache, a quarter of the memory cache bound holds the
   * most recently decoded bytes. */
  cfg.window = mem / 4 < MIN_WINDOW ? MIN_WINDOW
    : mem / 4 > MAX_WINDOW ? MAX_WINDOW : mem / 4;

  r = xz_single_new (&cfg, &x->single);
  if (r < 0)
    return r;
  if (cfg.disk_cache)
    log_info ("xz: %s: block of %" PRIu64 " MiB is larger than "
              "--max-block-size or half of --memory-cache-size (%" PRIu64
              " MiB): decoding it once, front "
              "to back, into the disk cache; reads ahead of the decoder "
              "wait for it", x->src, x->idx.max_usize >> 20, max_block >> 20);
  else
    log_warning ("xz: %s: block of %" PRIu64 " MiB is larger than "
                 "--max-block-size or half of --memory-cache-size (%"
                 PRIu64 " MiB) and there is no "
                 "--cache-dir: it is decoded front to back with only %llu "
                 "MiB kept in memory, so every read behind that window "
                 "decodes the file again from the start (about %.1f s for "
                 "this image at 100 MB/s).  Recompress it with `xz -T0 "
                 "--block-size=16MiB` for random access, or give a "
                 "--cache-dir to decode it only once", x->src,
                 x->idx.max_usize >> 20, max_block >> 20,
                 (unsigned long long) (cfg.window >> 20),
                 x->idx.usize / 1e8);
  return 0;
}

/* Open the xz layer over lower: read the index and pick the path. */
int
layer_xz_open (const struct stack_context *ctx, struct layer *lower,
               struct layer **out)
{
  struct xz_layer *x;
  const char *src = ctx->entry->source ? ctx->entry->source
    : ctx->entry->name;
  uint64_t max_block = ctx->options && ctx->options->max_block_size
    ? ctx->options->max_block_size : DEFAULT_MAX_BLOCK;
  uint64_t mem = ctx->options ? ctx->options->memory_cache_size : 0;
  int r;

  /* A block must also leave the memory cache room for another one, or
   * every read would decode it again. */
  if (mem > 0 && mem / 2 < max_block)
    max_block = mem / 2;

  x = calloc (1, sizeof *x);
  if (x == NULL || (x->src = text_redacted_copy (src)) == NULL)
    {
      free (x);
      return error_set (ENOMEM, "xz: out of memory");
    }
  x->l.ops = &xz_ops;
  x->l.lower = lower;
  x->reader_block = SIZE_MAX;
  xz_zero_sigs_init (&x->zero_sigs);
  r = xz_index_read (lower, x->src, &x->idx);
  if (r < 0)
    goto err;
  x->l.size = x->idx.usize;
  x->l.writable = false;
  x->l.immutable = true;

  if (x->idx.max_usize > max_block || x->idx.max_usize > SIZE_MAX / 2)
    r = open_single (ctx, x, max_block);
  else if (ctx->services == NULL || ctx->services->block_cache == NULL)
    r = error_set (EINVAL, "xz: %s: no decoded-block cache", x->src);
  else
    {
      x->cache = ctx->services->block_cache;
      r = xz_digests_init (&x->digests, &x->idx, x->src);
      if (r == 0
          && (x->kind = calloc (x->idx.nblocks, sizeof *x->kind)) == NULL)
        r = error_set (ENOMEM, "xz: %s: out of memory", x->src);
      if (r == 0)
        {
          char *key = source_key (x);
          r = block_cache_client_new (x->cache, x->src, key, xz_decode_block,
                                      x, &x->client);
          free (key);
        }
      x->ahead = block_cache_workers (x->cache);
      if (x->ahead > XZ_AHEAD_MAX)
        x->ahead = XZ_AHEAD_MAX;
    }
  if (r < 0)
    goto err;

  log_info ("xz: %s: %u stream%s, %zu block%s (largest %" PRIu64 " KiB), "
            "%" PRIu64 " bytes decompressed, %s path", x->src,
            x->idx.nstreams, x->idx.nstreams == 1 ? "" : "s",
            x->idx.nblocks, x->idx.nblocks == 1 ? "" : "s",
            x->idx.max_usize >> 10, x->idx.usize,
            x->single ? "single-block" : "multi-block");
  *out = &x->l;
  return 0;

 err:
  xz_digests_free (&x->digests);
  xz_zero_sigs_free (&x->zero_sigs);
  free ((void *) x->kind);
  xz_single_free (x->single);
  xz_index_free (&x->idx);
  free (x->src);
  free (x);
  return r;
}
