/* diskshelf: private parts of the disk cache, shared by its files.
 *
 * On disk: CACHE_DIR/lock (flock'd by the daemon that uses the dir) and
 * two files per object, named by the sha256 of kind+key (32 hex).
 * NAME.dsc, the metadata:
 *
 *   [0, bitmap_off)        header: magic, version, geometry, validators,
 *                          FNV-1a checksum over the header bytes
 *   [bitmap_off, meta_len) bitmap, bit i set = chunk i holds valid data
 *
 * NAME.dsd, the data: exactly the object's size, sparse, each byte at
 * its own offset in the object (chunk i at i * CHUNK).  That makes a
 * complete object's data file the object itself, which the kernel can
 * read in our place (FUSE passthrough, disk_cache_pin_whole).  Format
 * version 1 kept the data after the bitmap in the .dsc; such files are
 * dropped.
 *
 * Crash safety: the data file is created (emptied) first; the header is
 * written to a temporary file, fsync'd and renamed into place, so it is
 * whole or absent.  A bitmap bit is set on disk only after an fdatasync
 * of the data file made the chunk durable (the flusher thread batches
 * that); a bit is cleared, and the metadata fdatasync'd, before the
 * chunk's data is punched out.  So after a crash every set bit covers
 * good data; a torn or foreign file fails validation and is dropped, and
 * a data file without its metadata is removed.  The .dsc file's mtime is
 * its last use (for LRU between runs).
 *
 * In memory, each chunk has an atomic state word: PRESENT and WRITING
 * flags plus a version that grows on every eviction.  Readers check it
 * before and after their pread (no lock), so an eviction racing a read
 * is noticed and the read reports a miss instead of wrong bytes.
 *
 * Sizes come from remote servers, so nothing is sized by the object's
 * claimed length up front (DISK_CACHE_MAX_SIZE, 1 PiB, has a 128 MiB
 * bitmap): the per-chunk records live in pages of DC_PAGE_CHUNKS chunks,
 * allocated when a chunk of the page is first stored (a missing page
 * means "nothing present"), and the on-disk bitmap starts as a hole,
 * read back skipping holes (SEEK_DATA).  Only the header and one page of
 * bitmap are charged against the bound besides the chunks.
 */
#ifndef DISKSHELF_DISKCACHE_INTERNAL_H
#define DISKSHELF_DISKCACHE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "diskcache.h"

/* The .dsc format; 2: the data in its own file (.dsd). */
#define DC_FORMAT_VERSION 2u

#define DC_PRESENT 1u
#define DC_WRITING 2u
#define DC_VERSION_STEP 4u

/* Evict down to this share of the bound, so eviction runs in batches. */
#define DC_LOW_WATER(max) ((max) / 10 * 9)

/* One pending chunk: written, waiting for fdatasync before its bit. */
struct dc_pending
{
  uint64_t index;
  uint32_t state;
  bool streamed;           /* DISK_CACHE_STREAMED: drop its pages once
                              durable (diskcache-evict.c) */
};

/* A closed object's file, kept for reuse and for LRU eviction. */
struct dc_dormant
{
  char *path;
  uint64_t bytes;          /* header + present chunks */
  int64_t last_used_ms;
};

/* Chunks per page of per-chunk records (4 GiB of data, 64 KiB). */
#define DC_PAGE_CHUNKS 4096u

/* The records of DC_PAGE_CHUNKS consecutive chunks of one object;
 * allocated on first use, freed with the object. */
struct dc_page
{
  _Atomic uint32_t state[DC_PAGE_CHUNKS];  /* see above */
  _Atomic uint32_t pins[DC_PAGE_CHUNKS];   /* readers inside it now */
  _Atomic int64_t stamp[DC_PAGE_CHUNKS];   /* last use, ms */
  uint8_t disk_bits[DC_PAGE_CHUNKS / 8];   /* this page's part of the
                                              bitmap as on disk;
                                              protected by sync_lock */
};

struct disk_cache_object
{
  struct disk_cache *cache;
  char *path;              /* the .dsc; NULL when the object is not stored */
  int fd;                  /* the data file (.dsd); -1 when not stored */
  int meta_fd;             /* the .dsc: header and bitmap; -1 likewise */
  unsigned refs;           /* protected by cache->lock */
  bool ready;              /* file attached; protected by cache->lock */
  struct disk_cache_object *next;  /* open list; protected by cache->lock */

  char *version;           /* "etag\nlast-modified" it was opened with */
  uint64_t size;
  uint64_t nchunks;
  uint64_t bitmap_off;     /* in the .dsc */
  uint64_t meta_len;       /* the .dsc's length */
  uint64_t data_off;       /* of byte 0 in the data file: always 0 */

  _Atomic (struct dc_page *) *pages;  /* npages; NULL until used */
  uint64_t npages;
  _Atomic uint64_t present;    /* bytes of data present */

  /* Whole-object pins (disk_cache_pin_whole): eviction drops no chunk
   * of the object while whole_pins > 0, checked under pin_lock, which
   * eviction holds while it drops the object's chunks. */
  pthread_mutex_t pin_lock;
  unsigned whole_pins;         /* protected by pin_lock */
  bool drop_at_unpin;          /* invalidated while pinned: drop every
                                  chunk at the last unpin (pin_lock) */

  pthread_mutex_t sync_lock;
  struct dc_pending *pending;  /* protected by sync_lock */
  size_t npending, pending_cap;/* protected by sync_lock */
};

struct disk_cache
{
  char *dir;
  uint64_t max_bytes;
  int lock_fd;
  bool disabled;               /* unusable dir: every object unstored */

  _Atomic uint64_t used;       /* bytes charged against max_bytes */
  _Atomic int64_t write_pause_until_ms;  /* after ENOSPC */
  _Atomic bool warned;         /* one warning about a full disk */

  pthread_mutex_t lock;
  pthread_cond_t ready_cond;        /* an object became ready */
  struct disk_cache_object *open;   /* protected by lock */
  struct dc_dormant *dormant;       /* protected by lock */
  size_t ndormant, dormant_cap;     /* protected by lock */

  pthread_mutex_t evict_lock;  /* one eviction at a time */

  /* Flusher thread, started on the first write. */
  pthread_mutex_t flush_lock;
  pthread_cond_t flush_cond;
  pthread_t flusher;
  bool flusher_running;        /* protected by flush_lock */
  bool stopping;               /* protected by flush_lock */
  uint64_t pending_bytes;      /* protected by flush_lock */
};

/* diskcache-file.c: the object file format. */
struct dc_header
{
  char *kind, *key, *etag, *last_modified;
  uint64_t size;
  uint64_t bitmap_off, meta_len;
};

int dc_file_create (const char *path, const struct disk_cache_validators *v,
                    struct dc_header *h);
int dc_file_load (int fd, struct dc_header *h, uint64_t max_present,
                  uint64_t **present, size_t *npresent);
uint64_t dc_overhead (uint64_t bitmap_off, uint64_t meta_len);
char *dc_data_path (const char *path);
void dc_file_unlink (const char *path);
void dc_header_free (struct dc_header *h);
bool dc_header_matches (const struct dc_header *h,
                        const struct disk_cache_validators *v);
void dc_geometry (uint64_t size, size_t header_len, uint64_t *bitmap_off,
                  uint64_t *meta_len);
uint64_t dc_chunk_len (uint64_t size, uint64_t index);

/* diskcache-evict.c: eviction and the flusher. */
bool dc_reserve (struct disk_cache *cache, uint64_t bytes);
void dc_evict_to (struct disk_cache *cache, uint64_t target);
void dc_flush_object (struct disk_cache_object *obj);
void dc_flusher_kick (struct disk_cache *cache, uint64_t bytes);
void dc_flusher_stop (struct disk_cache *cache);
int dc_drop_chunks (struct disk_cache_object *obj, const uint64_t *index,
                    const uint32_t *expect, size_t n);

/* diskcache.c helpers used by the others. */
int64_t dc_now_ms (void);
struct dc_page *dc_page_make (struct disk_cache_object *obj,
                              uint64_t index);
void dc_object_unref (struct disk_cache_object *obj);

/* The page holding chunk index, or NULL when none of its chunks was
 * ever stored. */
static inline struct dc_page *
dc_page_of (struct disk_cache_object *obj, uint64_t index)
{
  return atomic_load (&obj->pages[index / DC_PAGE_CHUNKS]);
}

/* The state word of chunk index (0 when its page does not exist). */
static inline uint32_t
dc_state (struct disk_cache_object *obj, uint64_t index)
{
  struct dc_page *pg = dc_page_of (obj, index);

  return pg ? atomic_load (&pg->state[index % DC_PAGE_CHUNKS]) : 0;
}

/* A small file (entry facts, a blob) was written whole at path: count
 * it, in place of what was counted for that path before, as a dormant
 * file, so that the bound covers it and eviction may drop it.  Takes
 * the cache lock. */
void dc_note_small_file (struct disk_cache *cache, const char *path,
                         uint64_t bytes);

#endif
