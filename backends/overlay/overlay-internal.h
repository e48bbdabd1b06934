/* diskshelf: private header of the copy-on-write overlay (backends/overlay/).
 *
 *   overlay.c  the layer: reads merge the store and the layer below,
 *              writes, zero/trim, extents, status, handle counting
 *   store.c    the store: a sparse file laid out like the image (block N
 *              of the image at data_offset + N * OVERLAY_BLOCK) and the
 *              map of blocks the store owns; for a persistent overlay
 *              also the on-disk header, the base check and durable
 *              map updates
 *
 * Persistent file layout (all integers little-endian):
 *
 *   0        header (OVERLAY_HEADER_SIZE bytes, see store.c)
 *   4096     map: one bit per block, bit b of byte i = block 8*i + b
 *   data_offset (1 MiB aligned)  the image's blocks at their offsets
 *
 * A set bit means "this block is the store's": it was written whole
 * (partial writes read the rest of the block from below first) or
 * punched (a hole in the store reads as zeroes).  Bits only ever go
 * from 0 to 1, and a bit reaches the disk only after the data it points
 * at was synced, so the file is valid after a crash at any point: a bit
 * lost reads the older bytes from below, never garbage.
 *
 * Thread model: any number of threads.  The map is an array of words
 * changed with atomic operations; turning a block from "below" to "the
 * store's" is done under one of OVERLAY_STRIPES mutexes picked by block
 * number, so two partial writes into one new block do not lose each
 * other's bytes.  store_lock (a rwlock) is held for reading around
 * every use of the store's fd and for writing when a discard store is
 * created or dropped.  flush_lock serialises flushes.
 */
#ifndef DISKSHELF_OVERLAY_INTERNAL_H
#define DISKSHELF_OVERLAY_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "layer.h"

#define OVERLAY_BLOCK 4096u
#define OVERLAY_STRIPES 64
#define OVERLAY_HEADER_SIZE 4096u
#define OVERLAY_MAP_PAGE 4096u      /* unit of map writes and dirtiness */

struct overlay_store
{
  int fd;                     /* -1 while a discard store is not made */
  bool persistent;
  char *path;                 /* persistent: the overlay file */
  char *tmp_dir;              /* discard: where the store is made */
  uint64_t size;              /* the image's size */
  uint64_t nblocks;
  uint64_t data_offset;       /* where block 0 lives in fd */
  uint64_t map_offset;        /* persistent: where the map lives */
  uint64_t map_bytes;         /* persistent: map size on disk */
  uint64_t *map;              /* nblocks bits; atomic word access */
  size_t map_words;
  uint8_t *dirty;             /* persistent: one flag per map page;
                                 atomic access */
  size_t map_pages;
  pthread_mutex_t flush_lock;
};

/* store.c */

/* Open (or create) a persistent store at path for an image of size
 * bytes whose identity is `identity` (text hashed into the header) and
 * whose readable description is `desc`.  Refuses a file made over a
 * different base, a file that is not an overlay, and a file another
 * daemon or entry holds.  Returns 0 or a negative errno with a message
 * that says what to change. */
int overlay_store_open_file (struct overlay_store *s, const char *path,
                             uint64_t size, const char *identity,
                             const char *desc);

/* Prepare a discard store in tmp_dir; the file is made on first write
 * (overlay_store_materialise). */
int overlay_store_init_discard (struct overlay_store *s, const char *tmp_dir,
                                uint64_t size);

/* Make the discard store's file if it does not exist yet.  Caller holds
 * store_lock for writing. */
int overlay_store_materialise (struct overlay_store *s);

/* Forget every block of a discard store and delete its file.  Caller
 * holds store_lock for writing. */
void overlay_store_drop (struct overlay_store *s);

/* Is block b the store's? */
bool overlay_store_owns (const struct overlay_store *s, uint64_t b);

/* The first block >= b (and < end) whose ownership differs from b's;
 * end when none. */
uint64_t overlay_store_run_end (const struct overlay_store *s, uint64_t b,
                                uint64_t end);

/* Mark block b the store's (after its bytes are in the store). */
void overlay_store_claim (struct overlay_store *s, uint64_t b);

/* Blocks the store owns. */
uint64_t overlay_store_owned (const struct overlay_store *s);

/* Make everything written so far durable: data first, then the map
 * pages that changed.  No-op for a discard store. */
int overlay_store_sync (struct overlay_store *s);

/* Close the fd and free the map (a persistent store is synced first by
 * the caller). */
void overlay_store_close (struct overlay_store *s);

#endif
