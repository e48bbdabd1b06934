/* diskshelf: the persistent, bounded disk cache (--cache-dir).
 *
 * One cache per daemon, shared by every entry.  It stores bytes fetched
 * from remote objects (HTTP ranges, torrent pieces) and bytes decoded
 * from single-block xz files, keyed by an identity plus validators.
 * Each object is a sparse data file holding the object's bytes at their
 * own offsets, and a metadata file with a bitmap of present chunks and
 * a small header with the validators; it survives restarts.  An object
 * whose validators no longer match is dropped and starts empty.
 *
 * Data is stored in chunks of DISK_CACHE_CHUNK bytes (the last chunk of
 * an object may be shorter).  Writes must be whole chunks.
 *
 * Bounds: the total stays under the configured size; the least recently
 * used chunks of any object are evicted first; chunks pinned by a reader
 * are never evicted.  A full disk or an unwritable directory turns
 * writes into no-ops with one warning: callers then read uncached.
 * Never wrong data: a crash leaves each object valid or detectably
 * invalid (dropped on open).
 *
 * Thread model: every function is safe from many threads at once.
 * Ownership: disk_cache_new returns a cache freed by disk_cache_free,
 * which must come after every object is closed.
 */
#ifndef DISKSHELF_DISKCACHE_H
#define DISKSHELF_DISKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DISK_CACHE_CHUNK (1024 * 1024)

/* The largest object the cache takes (1 PiB): sizes come from remote
 * servers, and nothing real is bigger. */
#define DISK_CACHE_MAX_SIZE (UINT64_C (1) << 50)

struct disk_cache;
struct disk_cache_object;

/* What identifies one cached object, and how to tell it changed. */
struct disk_cache_validators
{
  const char *kind;          /* "http", "xz", "torrent": part of the key */
  const char *key;           /* URL (credentials removed), path, info-hash */
  uint64_t size;             /* object size in bytes */
  const char *etag;          /* may be NULL */
  const char *last_modified; /* may be NULL */
};

/* Open (creating if needed) the cache in dir, bounded by max_bytes. */
int disk_cache_new (const char *dir, uint64_t max_bytes,
                    struct disk_cache **out);
void disk_cache_free (struct disk_cache *cache);

/* Open the object for v; drops stale data whose validators differ. */
int disk_cache_open_object (struct disk_cache *cache,
                            const struct disk_cache_validators *v,
                            struct disk_cache_object **out);
void disk_cache_close_object (struct disk_cache_object *obj);

/* Copy [offset, offset+count) out of the cache if every chunk of it is
 * present: returns 0, or -ENODATA when any part is missing. */
int disk_cache_read (struct disk_cache_object *obj, void *buf, size_t count,
                     uint64_t offset);

/* True when every chunk overlapping the range is present. */
bool disk_cache_has (struct disk_cache_object *obj, uint64_t offset,
                     uint64_t count);

/* Lend the kernel a complete object (FUSE passthrough): when every chunk
 * is present, pin the whole object, so that eviction drops none of its
 * chunks until disk_cache_unpin_whole, and return 0 with *fd set to its
 * data file: exactly the object's size, each byte at its own offset.
 * The fd is owned by the object (valid until it is closed; the caller
 * neither closes nor writes it).  -ENODATA when a chunk is missing or
 * the object is not stored.  Each successful call needs one unpin.
 * disk_cache_invalidate of a pinned object drops its chunks at the
 * last unpin, so a borrower goes on reading the bytes it was lent.  Not
 * covered by the pin: a failed fdatasync of written chunks still drops
 * them (a complete object has none left to sync). */
int disk_cache_pin_whole (struct disk_cache_object *obj, int *fd);
void disk_cache_unpin_whole (struct disk_cache_object *obj);

/* How written bytes were used.  DISK_CACHE_STREAMED: they went to a
 * sequential reader, through the mount's page cache, which keeps them;
 * once they are durable the kernel is told to drop the data file's copy
 * (a second copy of the same bytes in memory).  Bytes written without it
 * keep their pages: random and O_DIRECT readers (qemu cache=none) read
 * them again from there. */
#define DISK_CACHE_STREAMED 1u

/* Store whole chunks starting at a chunk boundary (the object's last
 * chunk may be short); flags as above.  Returns 0 even when the data
 * could not be kept (full disk): the cache is an optimisation, never a
 * source of errors. */
int disk_cache_write (struct disk_cache_object *obj, const void *buf,
                      size_t count, uint64_t offset, unsigned flags);

/* The same for one whole chunk at offset given in nparts pieces (at most
 * DISK_CACHE_MAX_PARTS, together the chunk's length), written with one
 * pwritev: a caller holding a chunk as several buffers (torrent pieces
 * of 16-512 KiB) need not copy them into one.  -EINVAL when they are
 * not exactly one chunk. */
#define DISK_CACHE_MAX_PARTS 64
struct iovec;
int disk_cache_write_parts (struct disk_cache_object *obj,
                            const struct iovec *parts, int nparts,
                            uint64_t offset, unsigned flags);

/* Drop every chunk of the object: its remote copy changed.  Chunks
 * written afterwards are kept again (the caller stops writing when the
 * object is no longer the one the validators describe). */
void disk_cache_invalidate (struct disk_cache_object *obj);

/* Bytes of this object present in the cache, and of the whole cache. */
uint64_t disk_cache_object_present (struct disk_cache_object *obj);
uint64_t disk_cache_used (struct disk_cache *cache);

/* "cache: ..." status lines for one object. */
void disk_cache_object_status (struct disk_cache_object *obj, FILE *out);

/* What opening an entry's stack taught, kept so that the next mount can
 * list the entry before (and without) opening it: a warm mount makes
 * no request.  Keyed by any text naming the stack (the entry's .conf
 * text); stored as CACHE_DIR/<sha256 of it>.dse, a few bytes, written
 * whole (temporary file and rename).  Charged against the bound and
 * evicted least recently written first, like a closed object. */
struct disk_cache_entry_facts
{
  uint64_t size;             /* the stack's size in bytes */
  bool writable;
  char stack[128];           /* layer_describe() text, for status */
  bool keep_open;            /* layer_keep_open(): open it at every mount */
};

/* Remember facts for key.  Errors are ignored: the facts are a hint. */
void disk_cache_remember_entry (struct disk_cache *cache, const char *key,
                                const struct disk_cache_entry_facts *f);

/* Recall the facts for key: 0, or -ENOENT when none (or unreadable). */
int disk_cache_recall_entry (struct disk_cache *cache, const char *key,
                             struct disk_cache_entry_facts *out);

/* Small blobs remembered whole (a magnet's info dictionary, keyed by
 * its info-hash): CACHE_DIR/<sha256 of kind+key>.dsb, written to a
 * temporary file and renamed.  Charged against the bound and evicted
 * like entry facts (each is at most a few MiB, one per source);
 * temporary files a crash left are removed when the cache opens.
 * Errors are ignored: the blob is
 * a copy of something fetched again when missing.  kind and key must
 * not hold a newline. */
void disk_cache_remember_blob (struct disk_cache *cache, const char *kind,
                               const char *key, const void *data,
                               size_t len);

/* Recall a blob of at most max bytes: 0 and a malloc'd *data (the
 * caller frees it; it must check the content, e.g. by a hash), or
 * -ENOENT when none, too big or damaged. */
int disk_cache_recall_blob (struct disk_cache *cache, const char *kind,
                            const char *key, size_t max, uint8_t **data,
                            size_t *len);

#endif
