/* diskshelf: the process-wide cache of decoded blocks (--memory-cache-size).
 *
 * One LRU, bounded in bytes, shared by every entry whose decoder works in
 * blocks (xz).  Concurrent misses on one block decode it once; blocks
 * decode in parallel on a worker pool; sequential readers get read-ahead.
 * The detailed API is declared below the constructor by the xz work.
 *
 * Thread model: safe from many threads.
 * Ownership: block_cache_new returns a cache freed by block_cache_free,
 * after every user is gone.
 */
#ifndef DISKSHELF_BLOCKCACHE_H
#define DISKSHELF_BLOCKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct block_cache;

/* A cache bounded by max_bytes with a pool of `workers` decode threads
 * (0 = one per core).  Threads start lazily, after the daemon forked. */
int block_cache_new (uint64_t max_bytes, unsigned workers,
                     struct block_cache **out);
void block_cache_free (struct block_cache *cache);

/* ---- Detailed API ------------------------------------------------------
 *
 * A user (one open xz layer) registers as a client with a decode
 * callback and the key of its source.  Blocks are named by (the set of
 * blocks of that key, index) and have a fixed size
 * the client gives with every call.  Readers ask for a byte range of a
 * block: a miss queues a decode job on the pool and waits; concurrent
 * misses on one block wait for the same job (single flight).  Demand jobs
 * run before read-ahead jobs.  A block becomes readable only when its
 * decode finished and its check was verified, so no reader ever sees
 * bytes of a block that later turns out corrupt.
 *
 * Memory: entries are allocated (mmap, so freeing returns the memory) at
 * their full size when created and counted against max_bytes.  A block
 * that decodes to zeroes gives its memory back at once and is kept as a
 * hole, counted as a few hundred bytes.  Entries that a reader is
 * copying from or a job is filling are never evicted.  A miss that
 * finds no room waits for it (see below), so the total stays within
 * max_bytes except after such a wait timed out; read-ahead is refused
 * when it would push the total past max_bytes.
 *
 * Held blocks: a sequential reader holds the block it is in (hold = true
 * in block_cache_read) until its reads, in whatever order they come,
 * have covered as many bytes as the block has, or until it stops
 * reading it for BLOCK_CACHE_HOLD_SECONDS.  A held block is not evicted
 * for anybody else's miss or read-ahead.  When the blocks that readers
 * are in (or that are being decoded or copied from) fill the cache, as
 * with more sequential readers than blocks fit, a miss waits for room
 * instead of evicting a block under its reader, in arrival order, so
 * the readers take turns and every block is decoded once; read-ahead
 * stops while anybody waits.  A miss that has waited
 * BLOCK_CACHE_ROOM_WAIT_SECONDS evicts held blocks and goes over the
 * bound if it must, so no read waits without bound.
 */
#define BLOCK_CACHE_HOLD_SECONDS 1.0
#define BLOCK_CACHE_ROOM_WAIT_SECONDS 10.0

struct block_cache_client;

/* Decode block `index` of the client: fill all size bytes of buf.
 * Called on a pool thread, never twice at once for one block.  Returns 0,
 * or BLOCK_CACHE_ZERO when every byte of the block is zero (buf may then
 * be left as it was: the cache drops it and keeps the block as a hole,
 * answering reads with zeroes), or a negative errno with a message
 * recorded (the block's waiting readers get that errno; the entry is
 * dropped, so a later read tries again).  buf is fresh or recycled
 * memory of undefined content. */
#define BLOCK_CACHE_ZERO 1
typedef int (*block_cache_decode_fn) (void *opaque, uint64_t index,
                                      void *buf, size_t size);

/* Register a client.  opaque is passed to decode and must stay valid
 * until block_cache_client_free returns.  name (copied) is used in log
 * lines.  key (copied; NULL: never shared) names the source and its
 * validators: clients registered with the same key share one set of
 * blocks (one decode per block for all of them), and a block may be
 * decoded with any one of their callbacks, so equal keys must mean
 * equal bytes. */
int block_cache_client_new (struct block_cache *cache, const char *name,
                            const char *key, block_cache_decode_fn decode,
                            void *opaque, struct block_cache_client **out);

/* Leave the client's set of blocks, waiting for the jobs that decode
 * with its callback to stop; the last client of a set forgets every
 * block of it.  No read or prefetch of this client may be in
 * progress. */
void block_cache_client_free (struct block_cache_client *client);

/* Copy count bytes at offset inside block index (block_size bytes in
 * all) into buf, decoding the block if needed.  hold: the caller reads
 * sequentially and will read on in this block (see "Held blocks").
 * Returns 0, BLOCK_CACHE_ZERO when the block is a hole (buf filled with
 * zeroes), or a negative errno with a message recorded. */
int block_cache_read (struct block_cache_client *client, uint64_t index,
                      size_t block_size, size_t offset, void *buf,
                      size_t count, bool hold);

/* As block_cache_read, without the copy: pin the block and point *data
 * at count bytes at offset inside it, in place, read-only.  Returns 0
 * with *loan set (give it back once with block_cache_loan_return, from
 * any thread; the block is not evicted before), BLOCK_CACHE_ZERO when
 * the block is a hole (nothing lent, *data NULL: the bytes are zeroes),
 * or a negative errno with a message recorded. */
struct block_cache_loan;
int block_cache_borrow (struct block_cache_client *client, uint64_t index,
                        size_t block_size, size_t offset, size_t count,
                        bool hold, const void **data,
                        struct block_cache_loan **loan);
void block_cache_loan_return (void *loan);

/* Queue a decode of block index in the background, unless it is cached,
 * already queued, or would push memory past the bound.  Returns true
 * when the block is cached or on its way.  May be called from a decode
 * callback (with any client of the cache); refused once
 * block_cache_client_free of the client has begun. */
bool block_cache_prefetch (struct block_cache_client *client, uint64_t index,
                           size_t block_size);

/* True when block index of the client is cached, or being decoded or
 * queued (a read would not start a new decode). */
bool block_cache_has (struct block_cache_client *client, uint64_t index);

/* One bound for all in-memory caches: --memory-cache-size bounds the
 * decoded blocks and the remote engine's chunk buffers together.  The
 * engine claims its budget here (process-wide, the last call wins);
 * every block cache's bound becomes max_bytes less that claim (less at
 * most half of max_bytes).  A cache over its new bound evicts at its
 * next read, miss or read-ahead.  Safe from any thread. */
void block_cache_reserve (uint64_t bytes);

/* The bound now: max_bytes less the reservation. */
uint64_t block_cache_bound (struct block_cache *cache);

/* Number of decode threads of the pool (at least 1). */
unsigned block_cache_workers (struct block_cache *cache);

/* Counters for status and tests. */
struct block_cache_stats
{
  uint64_t hits, misses, decoded_blocks, decoded_bytes, evictions, failures;
  uint64_t zero_blocks;         /* decoded blocks that are kept as holes */
  uint64_t shared_clients;      /* clients that joined another's blocks */
  uint64_t room_waits;          /* misses that waited for room */
  uint64_t hold_breaks;         /* held blocks evicted after the wait bound */
  uint64_t ahead_evicted;       /* read-ahead evicted before anybody read it */
  uint64_t used_bytes, max_bytes, entries;
};
void block_cache_get_stats (struct block_cache *cache,
                            struct block_cache_stats *out);

#endif
