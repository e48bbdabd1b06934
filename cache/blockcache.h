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

#include <stdint.h>

struct block_cache;

/* A cache bounded by max_bytes with a pool of `workers` decode threads
 * (0 = one per core).  Threads start lazily, after the daemon forked. */
int block_cache_new (uint64_t max_bytes, unsigned workers,
                     struct block_cache **out);
void block_cache_free (struct block_cache *cache);

#endif
