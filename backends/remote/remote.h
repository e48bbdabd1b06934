/* diskshelf: the remote-bytes engine, one for every immutable remote
 * object (HTTP ranges and BitTorrent pieces).
 *
 * An object is read in chunks of REMOTE_CHUNK bytes.  A missing chunk
 * is fetched once however many readers want it (single flight), by a
 * pool of fetching threads; a sequential reader gets a read-ahead
 * window; fetched chunks go to the disk cache through a storer thread,
 * and chunks the disk cache did not keep stay in memory.  What is
 * remote-specific — how to fetch a range, and with what per-thread
 * state (a curl handle) — comes from a fetcher: a callback table plus
 * an opaque source.
 *
 * One object per source: objects are kept in a process-wide registry
 * keyed by their identity (kind, key, size and validators).  Opening an
 * identity that is already open shares that object: its chunks, its
 * fetches and its disk-cache object.  Every opener gets its own
 * reader (struct remote_reader), which carries its own sequential
 * detector, so two entries reading two members of one tar each get
 * their read-ahead.
 *
 * Memory: every chunk buffer of every object (in flight, waiting for
 * the disk, kept in memory, spare) is counted against one process-wide
 * budget (remote_memory_budget), not per object.
 *
 * Thread model: every function may be called from many threads at
 * once, except remote_close, which is called once per reader after its
 * other calls returned.  An object's lock protects its chunk table,
 * queues, read-ahead state and thread counts, and is never held while
 * fetching or doing disk I/O; the fetcher callbacks are called without
 * it, from the engine's threads and (fetch only) from readers' threads.
 *
 * Errors: negative errno with a recorded message (common/error.h).
 */
#ifndef DISKSHELF_REMOTE_H
#define DISKSHELF_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "diskcache.h"

#define REMOTE_CHUNK DISK_CACHE_CHUNK

/* The engine's chunk buffers may use this fraction (1/N) of
 * --memory-cache-size, process-wide (see remote_memory_budget). */
#define REMOTE_MEMORY_SHARE 4

struct remote_object;
struct remote_reader;

/* What a remote source provides.  `source` is the opaque pointer given
 * to remote_open; the object owns it once remote_open returned 0. */
struct remote_fetcher_ops
{
  /* Short name for status keys ("http" gives "http-pending-chunks"). */
  const char *name;

  /* True when fetching a few KiB costs less than a whole unit (HTTP
   * ranges): a random reader's small miss is then fetched on its own
   * thread, exactly, with the unit queued behind it for the disk
   * cache.  False for units that only come whole (pieces). */
  bool partial;

  /* Seconds a unit whose fetch failed keeps answering every read with
   * its error before the next read fetches it again (0: none, every
   * read fetches again).  For a source whose fetch fails only after a
   * long wait (a swarm with no peer: the entry's timeout): the kernel
   * retries a failed read at once, page by page, and each retry would
   * wait that long again. */
  double fail_hold;

  /* Optional: state for one fetching thread (a curl handle, i.e. one
   * kept-alive connection); NULL on failure with a message.  Contexts
   * are kept and reused by the engine, freed with context_free. */
  void *(*context_new) (void *source);
  void (*context_free) (void *source, void *ctx);

  /* Required: fill buf with the len bytes at offset.  0, or a negative
   * errno with a message; -ESTALE means the object changed underneath
   * (the engine then fails every later read with EIO and drops the
   * disk-cache copy).  May block within the source's own timeouts, and
   * returns promptly once stop was called. */
  int (*fetch) (void *source, void *ctx, void *buf, uint64_t offset,
                size_t len);

  /* Optional: [offset, offset+len) will be fetched soon (read-ahead was
   * queued for it): a fetcher that fetches in parallel by itself (a
   * swarm) may start now.  Called with the object's lock held: must
   * not block nor call the engine. */
  void (*hint) (void *source, uint64_t offset, size_t len);

  /* Optional: abort transfers and make later fetches fail fast: the
   * object is closing. */
  void (*stop) (void *source);

  /* Optional: free the source (after stop, once no thread uses it). */
  void (*free) (void *source);
};

/* What identifies an object: two opens with equal identities share it. */
struct remote_identity
{
  const char *kind;          /* "http", "torrent": part of the key */
  const char *key;           /* URL without credentials, info-hash */
  uint64_t size;
  const char *etag;          /* may be NULL */
  const char *last_modified; /* may be NULL */
};

/* How a new object is set up (ignored when an open object is shared). */
struct remote_settings
{
  const char *label;         /* message prefix, e.g. "http: ENTRY" */
  const char *display;       /* the object in messages; no secrets */
  unsigned connections;      /* fetching threads at most; > 0 */
  size_t unit;               /* bytes fetched and kept per chunk: 0 for
                                REMOTE_CHUNK, else a power of two from
                                16 KiB up that divides it, or a multiple
                                of it (torrent pieces) */
  struct disk_cache *disk_cache;  /* may be NULL: memory only */
};

/* Open a reader on the object with identity id, sharing the open object
 * with that identity if there is one.  Returns 0 when a new object was
 * made (it owns source from now on), 1 when an open one was shared (the
 * caller still owns source, and should free it: remote_source gives the
 * shared one), or a negative errno (the caller owns source). */
int remote_open (const struct remote_identity *id,
                 const struct remote_settings *set,
                 const struct remote_fetcher_ops *ops, void *source,
                 struct remote_reader **out);

/* Drop a reader; the last reader of an object stops its threads
 * (aborting transfers), drains the storer and frees the object, its
 * source and its disk-cache object. */
void remote_close (struct remote_reader *r);

/* The object's source (the one given by the opener that made it). */
void *remote_source (struct remote_reader *r);

/* Read count bytes at offset (within the size): the disk cache without
 * locks when it has them, else chunk by chunk.  0 or a negative errno. */
int remote_pread (struct remote_reader *r, void *buf, size_t count,
                  uint64_t offset);

/* Queue fetches of a range a caller will read soon.  Never blocks. */
int remote_prefetch (struct remote_reader *r, uint64_t offset,
                     uint64_t length);

/* The object a reader reads, for a source that serves what the object
 * holds to others (a torrent seeding): valid until the object's source
 * is freed, which happens after every engine thread stopped. */
struct remote_object *remote_object_of (struct remote_reader *r);

/* When the object's disk-cache copy is complete, lend its data file
 * (a layer's lend_file, see layer.h): pin it whole (no eviction punches
 * it) and fill *out with its fd (each byte of the object at its own
 * offset; the cache's fd, valid while the object is open, never closed
 * or written by the borrower) and the release that drops the pin.  1,
 * or 0 when there is no complete copy (or the object changed). */
struct layer_lend;
int remote_lend_file (struct remote_reader *r, struct layer_lend *out);

/* Copy [offset, offset+count) from what the object holds already (disk
 * cache, or chunks in memory), never fetching: 0, -ENOENT when any part
 * is missing, -EAGAIN when a missing part is being fetched now (a
 * torrent piece verified a moment ago, on its way from the fetcher into
 * the chunk), -EINVAL out of range.  Any thread, also while the object
 * closes (then only the disk cache answers). */
int remote_peek (struct remote_object *o, void *buf, size_t count,
                 uint64_t offset);

/* True when remote_peek of the range would succeed now. */
bool remote_holds (struct remote_object *o, uint64_t offset, size_t count);

/* The object changed underneath (found by a check outside a fetch):
 * every later read fails with EIO, the disk-cache copy is dropped, and
 * later opens of the same identity get a fresh object. */
void remote_mark_changed (struct remote_reader *r);
bool remote_changed (struct remote_reader *r);

/* "NAME-reads-waiting-for-fetch", "NAME-pending-chunks", then the disk
 * cache's lines. */
void remote_status (struct remote_reader *r, FILE *out);

/* The process-wide bound on chunk buffers, in bytes (the last call
 * wins; at least a few chunks), taken out of the decoded-block cache's
 * bound (block_cache_reserve).  Each object may still hold one buffer
 * beyond it, so that every object makes progress. */
void remote_memory_budget (uint64_t bytes);

/* Chunk buffer bytes allocated now, and the most ever (for tests and
 * status). */
uint64_t remote_memory_used (void);

#endif
