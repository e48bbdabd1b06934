/* diskshelf: private header of the xz layer (backends/xz/).
 *
 *   index.c   reads the index of every stream from the end of the file
 *   block.c   decodes one block (multi-block files, through the block cache)
 *   zerosig.c recognises zero blocks by their compressed bytes, undecoded
 *   ahead.c   picks the blocks to decode ahead of a sequential reader
 *   partial.c digests of verified blocks, so a random reader can have a
 *             block decoded only up to what it wants
 *   single.c  decodes the whole file once, sequentially (blocks too big to
 *             hold in memory), into the disk cache
 *   xz.c      the layer: probing, reads, status
 *
 * Format: https://tukaani.org/xz/xz-file-format.txt
 */
#ifndef DISKSHELF_XZ_INTERNAL_H
#define DISKSHELF_XZ_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "layer.h"

struct disk_cache;

/* The one bound on what an entry's index may cost in memory: liblzma's
 * decoded index of every stream while opening, then our block table and
 * the digests of partial.c.  A hostile file (millions of records, or of
 * streams) is refused at open with a message, instead of taking
 * gigabytes.  256 MiB is about 4 million blocks: a 4 TiB image in 1 MiB
 * blocks, 64 TiB in 16 MiB blocks. */
#define XZ_INDEX_MEMORY_MAX (256ull * 1024 * 1024)

/* The most memory one decoder may take (mostly the LZMA2 dictionary the
 * block header declares), on both paths.  xz -9 needs 65 MiB; a header
 * may declare up to 4 GiB. */
#define XZ_DECODER_MEMLIMIT (1024ull * 1024 * 1024)

/* One non-empty block, as the index describes it. */
struct xz_block
{
  uint64_t coffset;     /* file offset of the block header */
  uint64_t unpadded;    /* header + compressed data + check */
  uint64_t uoffset;     /* offset in the decompressed image */
  uint64_t usize;       /* decompressed bytes, > 0 */
  uint32_t check;       /* lzma_check of its stream */
  uint32_t stream;      /* stream number, from 1 */
};

/* The whole file's index.  Immutable after xz_index_read, so any thread
 * may read it without a lock. */
struct xz_index
{
  struct xz_block *blocks;  /* ordered by uoffset, empty blocks left out */
  size_t nblocks;
  uint64_t usize;           /* decompressed size of the whole file */
  uint64_t csize;           /* compressed file size */
  uint64_t max_usize;       /* largest block, decompressed */
  uint64_t padding;         /* bytes of stream padding in all */
  unsigned nstreams;
  uint32_t checks;          /* bit mask of the check types used */
  uint64_t fingerprint;     /* CRC64 of every stream header, index and footer */
};

/* Read the index of every stream of the xz file in lower, from its end
 * (footer -> index -> header, stream by stream, skipping padding).  src
 * names the file in messages.  Returns 0 or a negative errno with a
 * message that says what is wrong ("truncated", "not an xz file", ...). */
int xz_index_read (struct layer *lower, const char *src,
                   struct xz_index *out);
void xz_index_free (struct xz_index *idx);

/* Bytes the block table of idx takes in memory. */
uint64_t xz_index_memory (const struct xz_index *idx);

/* The number of the block holding decompressed offset (< idx->usize). */
size_t xz_index_find (const struct xz_index *idx, uint64_t offset);

/* The name of a check type, "CRC64". */
const char *xz_check_name (uint32_t check);

/* What a block decodes to, as far as known (one byte per block). */
enum xz_block_kind { XZ_KIND_UNKNOWN = 0, XZ_KIND_DATA, XZ_KIND_ZERO };

/* Zero blocks recognised by their bytes on disk (zerosig.c): the
 * signatures of small blocks that decoded to zeroes, their check
 * verified. */
#define XZ_ZERO_SIGS 4
#define XZ_ZERO_SIG_MAX (64u * 1024)
struct xz_zero_sig
{
  uint64_t usize, unpadded;     /* from the index */
  uint32_t check;               /* the check type of its stream */
  unsigned char *bytes;         /* its padded bytes in the file, owned */
};
struct xz_zero_sigs
{
  pthread_mutex_t lock;
  struct xz_zero_sig sig[XZ_ZERO_SIGS];  /* protected by lock */
  unsigned n;                            /* protected by lock */
  _Atomic uint64_t matched;     /* blocks recognised, not decoded */
};
void xz_zero_sigs_init (struct xz_zero_sigs *zs);
void xz_zero_sigs_free (struct xz_zero_sigs *zs);
/* True when block b, whose padded bytes in the file are `bytes`, has
 * the bytes, sizes and check type of a block verified as zeroes. */
bool xz_zero_sigs_match (struct xz_zero_sigs *zs, const struct xz_block *b,
                         const unsigned char *bytes);
/* Remember block b, just verified as zeroes, made of `bytes`, when it
 * is at most XZ_ZERO_SIG_MAX bytes and the table has room. */
void xz_zero_sigs_record (struct xz_zero_sigs *zs, const struct xz_block *b,
                          const unsigned char *bytes);

/* Decode block b (number n, for messages) into buf (b->usize bytes),
 * verifying its sizes and its check.  Returns 0, or XZ_BLOCK_ZERO when
 * the block decoded to zeroes only (buf then left untouched), or a
 * negative errno with a message.  zs (may be NULL): a block with the
 * bytes of a zero block seen before is XZ_BLOCK_ZERO at once, and a
 * small zero block is recorded there.  Thread-safe; reads lower. */
#define XZ_BLOCK_ZERO 1
int xz_block_decode (struct layer *lower, const char *src,
                     const struct xz_block *b, size_t n, void *buf,
                     struct xz_zero_sigs *zs);

/* Read-ahead (ahead.c): into out (room for `ahead`), the next blocks
 * after `from` that a sequential reader there should have decoded
 * ahead, nearest first: `ahead` of them that are not known to be zero
 * (XZ_KIND_ZERO blocks cost nothing and are stepped over), within
 * XZ_AHEAD_SCAN blocks of `from`.  Returns how many. */
#define XZ_AHEAD_SCAN 64
#define XZ_AHEAD_MAX 64         /* the most blocks ahead (a --workers bound) */
size_t xz_ahead_pick (const _Atomic unsigned char *kind, size_t nblocks,
                      size_t from, unsigned ahead, size_t *out);

/* Record the message for block b (number n) whose decoder would need
 * need bytes (UINT64_MAX: unknown), more than XZ_DECODER_MEMLIMIT;
 * returns -EIO. */
int xz_memlimit_error (const char *src, uint64_t need,
                       const struct xz_block *b, size_t n);

/* Called with each decoded segment (number seg, len bytes) of a partial
 * decode; returns 0 to go on or a negative errno with a message. */
typedef int (*xz_segment_fn) (void *opaque, size_t seg,
                              const unsigned char *data, size_t len);

/* Decode only segments 0..last (seg_size bytes each, the last of the
 * block maybe shorter) of block b, without its check (the caller
 * verifies segments against digests of an earlier full decode). */
int xz_block_decode_head (struct layer *lower, const char *src,
                          const struct xz_block *b, size_t n,
                          size_t seg_size, size_t last, xz_segment_fn fn,
                          void *opaque);

/* Partial re-decoding (partial.c): digests of verified segments. */
#define XZ_SEGMENT ((size_t) 1 << 20)
struct xz_digests
{
  size_t *first;                 /* per block: its first digest's index */
  _Atomic unsigned char *known;  /* per block: digests recorded */
  uint64_t *digest;              /* one per segment of every block */
  _Atomic uint64_t partial_reads;
};
/* Set up the digests of every block, within XZ_INDEX_MEMORY_MAX together
 * with the block table; src names the file in messages. */
int xz_digests_init (struct xz_digests *dg, const struct xz_index *idx,
                     const char *src);
void xz_digests_free (struct xz_digests *dg);
void xz_digests_record (struct xz_digests *dg, const struct xz_block *b,
                        size_t n, const unsigned char *buf);
bool xz_digests_usable (struct xz_digests *dg, const struct xz_block *b,
                        size_t n);
int xz_partial_read (struct layer *lower, const char *src,
                     struct xz_digests *dg, const struct xz_block *b,
                     size_t n, size_t offset, size_t count, void *buf);

/* Free this thread's cached decoder state (called at thread exit). */
void xz_block_thread_cleanup (void);

/* The single-block path. */
struct xz_single;

struct xz_single_config
{
  struct layer *lower;          /* borrowed */
  const char *src;              /* for messages and the cache key */
  const struct xz_index *index; /* borrowed */
  struct disk_cache *disk_cache;  /* may be NULL */
  double timeout;               /* seconds without progress before EIO */
  uint64_t window;              /* bytes kept in memory behind the frontier */
};

int xz_single_new (const struct xz_single_config *cfg,
                   struct xz_single **out);
int xz_single_read (struct xz_single *s, void *buf, size_t count,
                    uint64_t offset);
/* Lend the disk-cache file that holds the whole decoded image, once it
 * is complete (decoded to the end, every check verified): 0 and *fd
 * (the cache's; pinned whole until xz_single_unlend), or -ENODATA. */
int xz_single_lend (struct xz_single *s, int *fd);
void xz_single_unlend (void *s);
void xz_single_status (struct xz_single *s, FILE *out);
void xz_single_free (struct xz_single *s);

#endif
