/* diskshelf: the process-wide budget of the engine's chunk buffers.
 *
 * The budget is a share of --memory-cache-size that the decoded-block
 * cache gives up (block_cache_reserve): one bound for both.
 *
 * Every buffer of every remote object counts: chunks being fetched,
 * chunks waiting for the storer, chunks kept in memory because the disk
 * cache did not take them, and spare buffers kept for reuse (fresh
 * 1 MiB allocations are mmaps whose page faults cost more than the
 * copies).  A buffer is given only while the total stays under the
 * budget; beyond it, an object that holds no buffer at all still gets
 * one, so every object makes progress, and the others wait for memory
 * (chunks.c frees memory-cached chunks first, its own and then other
 * objects').
 *
 * Thread model: one lock, taken inside an object's lock, never around
 * one.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "blockcache.h"

/* Spare buffers kept for reuse at most (they count against the budget). */
#define SPARE_MAX 32
#define DEFAULT_BUDGET (64ull << 20)

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t budget = DEFAULT_BUDGET;    /* protected by mem_lock */
static uint64_t used;                       /* protected by mem_lock */
static char *spares;                        /* protected by mem_lock */
static unsigned nspares;                    /* protected by mem_lock */

/* Set the bound (a few chunks at least, so one sequential reader can
 * keep its fetches going) and claim it from the decoded-block cache's
 * bound, so that both stay within --memory-cache-size together. */
void
remote_memory_budget (uint64_t bytes)
{
  if (bytes < 8ull * REMOTE_CHUNK)
    bytes = 8ull * REMOTE_CHUNK;
  pthread_mutex_lock (&mem_lock);
  budget = bytes;
  pthread_mutex_unlock (&mem_lock);
  block_cache_reserve (bytes);
}

/* Bytes of chunk buffers allocated now (spares included). */
uint64_t
remote_memory_used (void)
{
  uint64_t u;

  pthread_mutex_lock (&mem_lock);
  u = used;
  pthread_mutex_unlock (&mem_lock);
  return u;
}

/* A chunk buffer for object o: a spare, or a new one while under the
 * budget (or when must: o holds none).  NULL when the budget is spent
 * or memory is out (o's lock held). */
char *
remote_buf_get (struct remote_object *o, bool must)
{
  char *b = NULL;

  pthread_mutex_lock (&mem_lock);
  if (o->chunk != REMOTE_CHUNK)
    {
      /* Other sizes (torrent pieces) are not kept as spares. */
      if (used + o->chunk <= budget || must)
        {
          b = malloc (o->chunk);
          if (b)
            used += o->chunk;
        }
    }
  else if (spares)
    {
      b = spares;
      memcpy (&spares, b, sizeof (char *));
      nspares--;
    }
  else if (used + REMOTE_CHUNK <= budget || must)
    {
      b = malloc (REMOTE_CHUNK);
      if (b)
        used += REMOTE_CHUNK;
    }
  pthread_mutex_unlock (&mem_lock);
  if (b)
    o->nbufs++;
  return b;
}

/* Give a chunk buffer back: kept as a spare while the total is within
 * the budget, else freed (o's lock held). */
void
remote_buf_put (struct remote_object *o, char *b)
{
  if (b == NULL)
    return;
  o->nbufs--;
  pthread_mutex_lock (&mem_lock);
  if (o->chunk != REMOTE_CHUNK)
    used -= o->chunk;
  else if (nspares < SPARE_MAX && used <= budget)
    {
      memcpy (b, &spares, sizeof (char *));
      spares = b;
      nspares++;
      b = NULL;
    }
  else
    used -= REMOTE_CHUNK;
  pthread_mutex_unlock (&mem_lock);
  free (b);
}

/* Free every spare buffer (the engine went idle, or is closing). */
void
remote_buf_trim (void)
{
  pthread_mutex_lock (&mem_lock);
  while (spares)
    {
      char *b = spares;
      memcpy (&spares, b, sizeof (char *));
      nspares--;
      used -= REMOTE_CHUNK;
      free (b);
    }
  pthread_mutex_unlock (&mem_lock);
}
