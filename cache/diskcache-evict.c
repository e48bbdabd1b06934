/* diskshelf: the disk cache's bound (LRU eviction) and its flusher
 * thread, which makes written chunks durable before their bitmap bits
 * are set on disk (see diskcache-internal.h). */
#include "diskcache-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "thread.h"

/* Pending bytes that wake the flusher before its one-second tick. */
#define FLUSH_BATCH (32 * 1024 * 1024)

/* One thing eviction may drop: a whole dormant file or one chunk. */
struct candidate
{
  int64_t ms;
  struct disk_cache_object *obj;   /* NULL for a dormant file */
  size_t dormant;                  /* index into the dormant snapshot */
  size_t k;                        /* index into the object snapshot */
  uint64_t index;
  uint32_t state;
};

/* Order candidates oldest first. */
static int
by_age (const void *a, const void *b)
{
  const struct candidate *x = a, *y = b;

  return (x->ms > y->ms) - (x->ms < y->ms);
}

/* Order page numbers. */
static int
by_number (const void *a, const void *b)
{
  const uint64_t *x = a, *y = b;

  return (*x > *y) - (*x < *y);
}

/* Write the on-disk bitmap bytes of the listed pages (sync_lock held);
 * the list is sorted here and repeats are written once. */
static void
write_pages (struct disk_cache_object *obj, uint64_t *page, size_t n)
{
  uint64_t bitmap_len = (obj->nchunks + 7) / 8;

  qsort (page, n, sizeof *page, by_number);
  for (size_t i = 0; i < n; i++)
    {
      struct dc_page *pg = atomic_load (&obj->pages[page[i]]);
      uint64_t first = page[i] * (DC_PAGE_CHUNKS / 8);
      size_t len = bitmap_len - first < DC_PAGE_CHUNKS / 8
        ? (size_t) (bitmap_len - first) : DC_PAGE_CHUNKS / 8;
      ssize_t r;

      if ((i > 0 && page[i] == page[i - 1]) || pg == NULL)
        continue;
      do
        r = pwrite (obj->meta_fd, pg->disk_bits, len,
                    (off_t) (obj->bitmap_off + first));
      while (r < 0 && errno == EINTR);
    }
}

/* Drop chunks whose state still equals expect[i]: clear their bits on
 * disk (durably) before punching their data out.  Returns the bytes
 * freed. */
int
dc_drop_chunks (struct disk_cache_object *obj, const uint64_t *index,
                const uint32_t *expect, size_t n)
{
  struct disk_cache *cache = obj->cache;
  uint64_t *gone = malloc ((n ? n : 1) * sizeof *gone);
  uint64_t *dirty = malloc ((n ? n : 1) * sizeof *dirty);
  uint64_t freed = 0;
  size_t ngone = 0, ndirty = 0;

  if (gone == NULL || dirty == NULL)
    {
      free (gone);
      free (dirty);
      return 0;
    }
  for (size_t i = 0; i < n; i++)
    {
      struct dc_page *pg = dc_page_of (obj, index[i]);
      uint32_t s = expect[i];
      /* Absent, and WRITING until its data is punched out: a writer
       * storing the chunk again before the punch would have its fresh
       * data punched under a PRESENT bit, and readers would get zeros. */
      uint32_t next = ((s & ~(DC_PRESENT | DC_WRITING)) + DC_VERSION_STEP)
                      | DC_WRITING;
      if (pg && atomic_compare_exchange_strong
          (&pg->state[index[i] % DC_PAGE_CHUNKS], &s, next))
        gone[ngone++] = index[i];
    }
  if (ngone == 0)
    {
      free (gone);
      free (dirty);
      return 0;
    }
  pthread_mutex_lock (&obj->sync_lock);
  for (size_t i = 0; i < ngone; i++)
    {
      struct dc_page *pg = dc_page_of (obj, gone[i]);
      size_t slot = gone[i] % DC_PAGE_CHUNKS;
      uint8_t bit = (uint8_t) (1u << (slot % 8));
      if (pg->disk_bits[slot / 8] & bit)
        {
          pg->disk_bits[slot / 8] &= (uint8_t) ~bit;
          dirty[ndirty++] = gone[i] / DC_PAGE_CHUNKS;
        }
    }
  if (ndirty)
    write_pages (obj, dirty, ndirty);
  pthread_mutex_unlock (&obj->sync_lock);
  if (ndirty)
    fdatasync (obj->meta_fd);
  free (dirty);
  for (size_t i = 0; i < ngone; i++)
    {
      uint64_t len = dc_chunk_len (obj->size, gone[i]);
      struct dc_page *pg = dc_page_of (obj, gone[i]);
      fallocate (obj->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 (off_t) (obj->data_off + gone[i] * DISK_CACHE_CHUNK),
                 (off_t) len);
      /* Only now may the chunk be stored again. */
      atomic_fetch_and (&pg->state[gone[i] % DC_PAGE_CHUNKS], ~DC_WRITING);
      freed += len;
    }
  atomic_fetch_sub (&obj->present, freed);
  atomic_fetch_sub (&cache->used, freed);
  free (gone);
  return 0;
}

/* Remove a dormant file if it is still dormant; returns bytes freed. */
static uint64_t
drop_dormant (struct disk_cache *cache, const char *path)
{
  uint64_t bytes = 0;

  pthread_mutex_lock (&cache->lock);
  for (size_t i = 0; i < cache->ndormant; i++)
    if (strcmp (cache->dormant[i].path, path) == 0)
      {
        bytes = cache->dormant[i].bytes;
        dc_file_unlink (path);
        free (cache->dormant[i].path);
        cache->dormant[i] = cache->dormant[--cache->ndormant];
        break;
      }
  pthread_mutex_unlock (&cache->lock);
  atomic_fetch_sub (&cache->used, bytes);
  return bytes;
}

/* True when the object is pinned whole now (eviction checks again
 * before dropping: this only keeps its chunks out of the count). */
static bool
pinned_whole (struct disk_cache_object *obj)
{
  bool pinned;

  pthread_mutex_lock (&obj->pin_lock);
  pinned = obj->whole_pins > 0;
  pthread_mutex_unlock (&obj->pin_lock);
  return pinned;
}

/* Evict least recently used data until the cache uses at most target
 * bytes, never touching chunks pinned by a reader or being written. */
void
dc_evict_to (struct disk_cache *cache, uint64_t target)
{
  struct disk_cache_object **objs = NULL;
  struct dc_dormant *dorm = NULL;
  struct candidate *cand = NULL;
  size_t nobjs = 0, ndorm = 0, ncand = 0, cap = 0;
  uint64_t used, freed = 0;

  pthread_mutex_lock (&cache->evict_lock);
  used = atomic_load (&cache->used);
  if (used <= target)
    goto out;

  /* Snapshot what exists now, holding references on open objects. */
  pthread_mutex_lock (&cache->lock);
  for (struct disk_cache_object *o = cache->open; o; o = o->next)
    nobjs++;
  objs = calloc (nobjs + 1, sizeof *objs);
  dorm = calloc (cache->ndormant + 1, sizeof *dorm);
  if (objs == NULL || dorm == NULL)
    {
      pthread_mutex_unlock (&cache->lock);
      nobjs = 0;
      goto out;
    }
  nobjs = 0;
  for (struct disk_cache_object *o = cache->open; o; o = o->next)
    if (o->ready && o->fd >= 0)
      {
        o->refs++;
        objs[nobjs++] = o;
      }
  for (size_t i = 0; i < cache->ndormant; i++)
    {
      dorm[ndorm] = cache->dormant[i];
      dorm[ndorm].path = strdup (cache->dormant[i].path);
      if (dorm[ndorm].path)
        ndorm++;
    }
  pthread_mutex_unlock (&cache->lock);

  /* Only pages that exist can hold chunks. */
  cap = ndorm;
  for (size_t k = 0; k < nobjs; k++)
    for (uint64_t g = 0; g < objs[k]->npages; g++)
      if (atomic_load (&objs[k]->pages[g]))
        cap += DC_PAGE_CHUNKS;
  cand = malloc ((cap + 1) * sizeof *cand);
  if (cand == NULL)
    goto out;
  for (size_t i = 0; i < ndorm; i++)
    cand[ncand++] = (struct candidate) { .ms = dorm[i].last_used_ms,
                                         .dormant = i };
  for (size_t k = 0; k < nobjs; k++)
    for (uint64_t g = 0; g < objs[k]->npages && !pinned_whole (objs[k]); g++)
      {
        struct dc_page *pg = atomic_load (&objs[k]->pages[g]);
        for (size_t slot = 0; pg && slot < DC_PAGE_CHUNKS; slot++)
          {
            uint32_t s = atomic_load (&pg->state[slot]);
            if ((s & DC_PRESENT) && atomic_load (&pg->pins[slot]) == 0
                && ncand < cap)
              cand[ncand++] = (struct candidate) {
                .ms = atomic_load (&pg->stamp[slot]), .obj = objs[k],
                .k = k, .index = g * DC_PAGE_CHUNKS + slot, .state = s };
          }
      }
  qsort (cand, ncand, sizeof *cand, by_age);

  /* Take the oldest until enough is freed, chunks grouped per object. */
  {
    uint64_t **idx = calloc (nobjs + 1, sizeof *idx);
    uint32_t **exp = calloc (nobjs + 1, sizeof *exp);
    size_t *n = calloc (nobjs + 1, sizeof *n);

    for (size_t c = 0; idx && exp && n && c < ncand
           && used - freed > target; c++)
      {
        size_t k = cand[c].k;
        if (cand[c].obj == NULL)
          {
            freed += drop_dormant (cache, dorm[cand[c].dormant].path);
            continue;
          }
        if (idx[k] == NULL)
          {
            /* ncand bounds this object's share of the candidates. */
            idx[k] = malloc (ncand * sizeof **idx);
            exp[k] = malloc (ncand * sizeof **exp);
            if (idx[k] == NULL || exp[k] == NULL)
              break;
          }
        idx[k][n[k]] = cand[c].index;
        exp[k][n[k]++] = cand[c].state;
        freed += dc_chunk_len (cand[c].obj->size, cand[c].index);
      }
    for (size_t k = 0; idx && exp && n && k < nobjs; k++)
      {
        if (n[k] > 0)
          {
            /* An object pinned whole is being read by the kernel from
             * its data file: none of its chunks may go. */
            pthread_mutex_lock (&objs[k]->pin_lock);
            if (objs[k]->whole_pins == 0)
              dc_drop_chunks (objs[k], idx[k], exp[k], n[k]);
            pthread_mutex_unlock (&objs[k]->pin_lock);
          }
        free (idx[k]);
        free (exp[k]);
      }
    free (idx);
    free (exp);
    free (n);
  }

 out:
  pthread_mutex_unlock (&cache->evict_lock);
  free (cand);
  for (size_t i = 0; i < ndorm; i++)
    free (dorm[i].path);
  free (dorm);
  for (size_t k = 0; k < nobjs; k++)
    dc_object_unref (objs[k]);
  free (objs);
}

/* Charge bytes against the bound, evicting when it would be crossed.
 * False when the bytes cannot fit (everything else is pinned). */
bool
dc_reserve (struct disk_cache *cache, uint64_t bytes)
{
  uint64_t max = cache->max_bytes;

  if (bytes > max)
    return false;
  for (int attempt = 0; attempt < 2; attempt++)
    {
      if (atomic_fetch_add (&cache->used, bytes) + bytes <= max)
        return true;
      atomic_fetch_sub (&cache->used, bytes);
      if (attempt == 0)
        dc_evict_to (cache, DC_LOW_WATER (max) > bytes
                     ? DC_LOW_WATER (max) - bytes : 0);
    }
  return false;
}

/* Let the kernel drop its page-cache copy of streamed chunks just made
 * durable (DISK_CACHE_STREAMED, diskcache.h): their sequential reader
 * has them in the mount's page cache already, so these pages are a
 * second copy in memory.  Dropped, they go back to the allocator while
 * still warm, and the next chunk's write reuses them: on a VM, writing
 * into never-touched memory costs several times the copy itself
 * (measured: the storer's CPU per GiB of a torrent read fell from
 * 1.8-2.0 s to 0.33-0.45 s).  Later reads of those chunks from the file
 * (a new daemon's passthrough, seeding) come from the disk.  The pages
 * are clean after the fdatasync, so DONTNEED drops them at once;
 * failure only means they stay. */
static void
drop_durable_pages (struct disk_cache_object *obj,
                    const struct dc_pending *list, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (list[i].streamed)
      posix_fadvise (obj->fd,
                     (off_t) (obj->data_off
                              + list[i].index * DISK_CACHE_CHUNK),
                     DISK_CACHE_CHUNK, POSIX_FADV_DONTNEED);
}

/* Make this object's written chunks durable, then set their bits. */
void
dc_flush_object (struct disk_cache_object *obj)
{
  struct dc_pending *list;
  uint64_t *dirty;
  size_t n, ndirty = 0;

  pthread_mutex_lock (&obj->sync_lock);
  list = obj->pending;
  n = obj->npending;
  obj->pending = NULL;
  obj->npending = obj->pending_cap = 0;
  pthread_mutex_unlock (&obj->sync_lock);
  if (n == 0)
    {
      free (list);
      return;
    }
  if (fdatasync (obj->fd) < 0)
    {
      /* The data may not be on disk: give those chunks up. */
      uint64_t *idx = malloc (n * sizeof *idx);
      uint32_t *exp = malloc (n * sizeof *exp);
      log_warning ("cache: %s: fdatasync: %s; dropping unsynced chunks",
                   obj->path, strerror (errno));
      if (idx && exp)
        {
          for (size_t i = 0; i < n; i++)
            {
              idx[i] = list[i].index;
              exp[i] = list[i].state;
            }
          dc_drop_chunks (obj, idx, exp, n);
        }
      free (idx);
      free (exp);
      free (list);
      return;
    }
  drop_durable_pages (obj, list, n);
  dirty = malloc (n * sizeof *dirty);
  pthread_mutex_lock (&obj->sync_lock);
  for (size_t i = 0; dirty && i < n; i++)
    if (dc_state (obj, list[i].index) == list[i].state)
      {
        struct dc_page *pg = dc_page_of (obj, list[i].index);
        size_t slot = list[i].index % DC_PAGE_CHUNKS;
        pg->disk_bits[slot / 8] |= (uint8_t) (1u << (slot % 8));
        dirty[ndirty++] = list[i].index / DC_PAGE_CHUNKS;
      }
  if (ndirty)
    write_pages (obj, dirty, ndirty);
  pthread_mutex_unlock (&obj->sync_lock);
  free (dirty);
  free (list);
}

/* Flush every open object that has pending chunks. */
static void
flush_all (struct disk_cache *cache)
{
  struct disk_cache_object **objs;
  size_t n = 0;

  pthread_mutex_lock (&cache->lock);
  for (struct disk_cache_object *o = cache->open; o; o = o->next)
    n++;
  objs = calloc (n + 1, sizeof *objs);
  n = 0;
  if (objs)
    for (struct disk_cache_object *o = cache->open; o; o = o->next)
      if (o->ready && o->fd >= 0)
        {
          o->refs++;
          objs[n++] = o;
        }
  pthread_mutex_unlock (&cache->lock);
  for (size_t i = 0; i < n; i++)
    {
      dc_flush_object (objs[i]);
      dc_object_unref (objs[i]);
    }
  free (objs);
}

/* The flusher: wakes every second, or when a batch is pending. */
static void *
flusher_main (void *arg)
{
  struct disk_cache *cache = arg;

  pthread_mutex_lock (&cache->flush_lock);
  while (!cache->stopping)
    {
      struct timespec ts;
      clock_gettime (CLOCK_REALTIME, &ts);
      ts.tv_sec += 1;
      while (!cache->stopping && cache->pending_bytes < FLUSH_BATCH)
        if (pthread_cond_timedwait (&cache->flush_cond, &cache->flush_lock,
                                    &ts) != 0)
          break;
      if (cache->pending_bytes == 0)
        continue;
      cache->pending_bytes = 0;
      pthread_mutex_unlock (&cache->flush_lock);
      flush_all (cache);
      pthread_mutex_lock (&cache->flush_lock);
    }
  pthread_mutex_unlock (&cache->flush_lock);
  return NULL;
}

/* Note newly written bytes; starts the flusher on first use. */
void
dc_flusher_kick (struct disk_cache *cache, uint64_t bytes)
{
  pthread_mutex_lock (&cache->flush_lock);
  if (!cache->flusher_running && !cache->stopping)
    {
      if (thread_create ("ds-cache-flush", &cache->flusher, NULL,
                         flusher_main, cache) == 0)
        cache->flusher_running = true;
    }
  cache->pending_bytes += bytes;
  if (cache->pending_bytes >= FLUSH_BATCH)
    pthread_cond_signal (&cache->flush_cond);
  pthread_mutex_unlock (&cache->flush_lock);
}

/* Stop the flusher (objects flush themselves when closed). */
void
dc_flusher_stop (struct disk_cache *cache)
{
  bool running;

  pthread_mutex_lock (&cache->flush_lock);
  cache->stopping = true;
  running = cache->flusher_running;
  cache->flusher_running = false;
  pthread_cond_signal (&cache->flush_cond);
  pthread_mutex_unlock (&cache->flush_lock);
  if (running)
    pthread_join (cache->flusher, NULL);
}
