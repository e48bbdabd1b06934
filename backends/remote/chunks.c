/* diskshelf: reading a remote object in chunks: the chunk table (one
 * fetch per missing chunk, however many readers want it), the worker
 * threads that fetch through the fetcher, read-ahead for a sequential
 * reader, the disk cache in front of it all and a small memory cache
 * when the disk cache is off or full.  See remote.h and internal.h for
 * the thread model. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "clock.h"
#include "error.h"
#include "thread.h"

#define WORKER_IDLE_S 60

/* The bucket of chunk index i. */
static struct chunk **
bucket (struct remote_object *o, uint64_t i)
{
  return &o->table[(i * 0x9E3779B97F4A7C15ull) >> 56 & (REMOTE_BUCKETS - 1)];
}

/* The chunk in the table with index i, or NULL (lock held). */
static struct chunk *
lookup (struct remote_object *o, uint64_t i)
{
  for (struct chunk *c = *bucket (o, i); c; c = c->hnext)
    if (c->index == i)
      return c;
  return NULL;
}

static void table_remove (struct remote_object *o, struct chunk *c);

/* lookup, but a failed chunk whose hold ran out counts as absent (it is
 * dropped, so the next want fetches it again) (lock held). */
static struct chunk *
lookup_live (struct remote_object *o, uint64_t i)
{
  struct chunk *c = lookup (o, i);

  if (c && c->state == CHUNK_FAILED
      && clock_seconds () - c->failed_at >= o->ops->fail_hold)
    {
      table_remove (o, c);
      c = NULL;
    }
  return c;
}

/* True when the chunk is in the memory LRU (lock held). */
static bool
lru_member (struct remote_object *o, struct chunk *c)
{
  return c->lprev != NULL || o->lru_head == c;
}

/* Unlink a chunk from the memory LRU (lock held). */
static void
lru_del (struct remote_object *o, struct chunk *c)
{
  if (!lru_member (o, c))
    return;
  if (c->lprev)
    c->lprev->lnext = c->lnext;
  else
    o->lru_head = c->lnext;
  if (c->lnext)
    c->lnext->lprev = c->lprev;
  else
    o->lru_tail = c->lprev;
  c->lprev = c->lnext = NULL;
  o->nmem--;
}

/* Put a chunk at the young end of the memory LRU (lock held). */
static void
lru_add (struct remote_object *o, struct chunk *c)
{
  c->lprev = NULL;
  c->lnext = o->lru_head;
  if (o->lru_head)
    o->lru_head->lprev = c;
  o->lru_head = c;
  if (o->lru_tail == NULL)
    o->lru_tail = c;
  o->nmem++;
}

/* Drop a reference; the last one frees the chunk (lock held). */
static void
chunk_unref (struct remote_object *o, struct chunk *c)
{
  if (--c->refs > 0)
    return;
  remote_buf_put (o, c->buf);
  free (c->message);
  free (c);
}

/* Take a chunk out of the table and the LRU (lock held). */
static void
table_remove (struct remote_object *o, struct chunk *c)
{
  if (!c->in_table)
    return;
  for (struct chunk **p = bucket (o, c->index); *p; p = &(*p)->hnext)
    if (*p == c)
      {
        *p = c->hnext;
        break;
      }
  c->in_table = false;
  lru_del (o, c);
  chunk_unref (o, c);
}

/* Whether ready unit c waits in memory for the rest of its disk-cache
 * chunk: units smaller than a chunk are stored together once the last
 * of them is in (store_group), so while a sibling is still being
 * fetched, or fetched and not yet offered to the storer, dropping c
 * would keep that whole chunk out of the disk cache.  At most a chunk's
 * worth of units per unit in flight waits so (lock held). */
static bool
waits_for_group (struct remote_object *o, const struct chunk *c)
{
  if (o->dc == NULL || o->chunk >= DISK_CACHE_CHUNK
      || c->state != CHUNK_READY || atomic_load (&o->changed))
    return false;
  uint64_t per = DISK_CACHE_CHUNK / o->chunk;
  uint64_t g0 = c->index / per * per;
  uint64_t gn = g0 + per < o->nchunks ? g0 + per : o->nchunks;
  for (uint64_t j = g0; j < gn; j++)
    {
      struct chunk *u = j == c->index ? NULL : lookup (o, j);
      if (u != NULL && (u->state == CHUNK_FETCHING
                        || (u->state == CHUNK_READY && !lru_member (o, u))))
        return true;
    }
  return false;
}

/* Keep at most `keep` unstored chunks of o in memory, dropping the
 * least recently used ones nobody is reading and no fetch of the rest
 * of their disk-cache chunk waits for; returns how many went (lock
 * held). */
unsigned
remote_chunks_trim (struct remote_object *o, unsigned keep)
{
  struct chunk *c = o->lru_tail;
  unsigned dropped = 0;

  while (c && o->nmem > keep)
    {
      struct chunk *prev = c->lprev;
      if (c->refs == 1 && !waits_for_group (o, c))
        {
          table_remove (o, c);
          dropped++;
        }
      c = prev;
    }
  return dropped;
}

/* Keep at most o->mem_units unstored chunks in memory (lock held). */
static void
lru_trim (struct remote_object *o)
{
  remote_chunks_trim (o, o->mem_units);
}

static void *worker_main (void *arg);

/* Start a worker if none is free and the pool is not full (lock held). */
static void
wake_worker (struct remote_object *o)
{
  if (o->idle > 0)
    pthread_cond_signal (&o->work_cond);
  else if (o->workers < o->max_workers)
    {
      pthread_t t;
      pthread_attr_t attr;

      pthread_attr_init (&attr);
      pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
      if (thread_create ("ds-fetch", &t, &attr, worker_main, o) == 0)
        o->workers++;
      pthread_attr_destroy (&attr);
    }
}

/* Append a chunk to a queue (lock held). */
static void
queue_push_back (struct chunk_queue *q, struct chunk *c)
{
  c->qnext = NULL;
  if (q->tail)
    q->tail->qnext = c;
  else
    q->head = c;
  q->tail = c;
}

/* Put a chunk at the front of a queue (lock held). */
static void
queue_push_front (struct chunk_queue *q, struct chunk *c)
{
  c->qnext = q->head;
  q->head = c;
  if (q->tail == NULL)
    q->tail = c;
}

/* Take the first chunk of a queue, or NULL (lock held). */
static struct chunk *
queue_pop (struct chunk_queue *q)
{
  struct chunk *c = q->head;

  if (c)
    {
      q->head = c->qnext;
      if (q->head == NULL)
        q->tail = NULL;
      c->qnext = NULL;
    }
  return c;
}

/* Unlink a chunk from a queue; false when it is not there (lock held). */
static bool
queue_remove (struct chunk_queue *q, struct chunk *c)
{
  struct chunk *prev = NULL;

  for (struct chunk *x = q->head; x; prev = x, x = x->qnext)
    if (x == c)
      {
        if (prev)
          prev->qnext = c->qnext;
        else
          q->head = c->qnext;
        if (q->tail == c)
          q->tail = prev;
        c->qnext = NULL;
        return true;
      }
  return false;
}

/* True when a worker has something it may take now (lock held). */
static bool
work_available (struct remote_object *o)
{
  return o->queue.head
    || (o->fill_queue.head && o->fill_active < REMOTE_FILL_WORKERS);
}

/* Queue a new fetch of chunk i: at the front for a waiting reader, at
 * the back for read-ahead and for background fill (which does not count
 * against the read-ahead bound).  The buffer is taken when a worker
 * starts the fetch.  Returns the chunk (owned by the table) or NULL
 * (lock held). */
static struct chunk *
start_fetch (struct remote_object *o, uint64_t i, enum fetch_kind kind)
{
  struct chunk *c = calloc (1, sizeof *c);

  if (c == NULL)
    return NULL;
  c->index = i;
  c->len = i * o->chunk + o->chunk <= o->size ? o->chunk
    : (size_t) (o->size - i * o->chunk);
  c->state = CHUNK_FETCHING;
  c->refs = 1;
  c->in_table = true;
  c->hnext = *bucket (o, i);
  *bucket (o, i) = c;
  c->queued = true;
  c->fill = kind == FETCH_FILL;
  __atomic_store_n (&c->streamed, kind == FETCH_READAHEAD, __ATOMIC_RELAXED);
  if (kind == FETCH_FOREGROUND)
    queue_push_front (&o->queue, c);
  else if (kind == FETCH_READAHEAD)
    {
      queue_push_back (&o->queue, c);
      /* A fetcher that can fetch in parallel starts on it now. */
      if (o->ops->hint)
        o->ops->hint (o->source, i * o->chunk, c->len);
    }
  else
    queue_push_back (&o->fill_queue, c);
  if (!c->fill)
    o->inflight++;
  o->pending++;
  wake_worker (o);
  return c;
}

/* A reader waits for a chunk still in a queue: move it to the front
 * (lock held). */
static void
promote (struct remote_object *o, struct chunk *c)
{
  if (!c->queued || o->queue.head == c)
    return;
  if (c->fill)
    {
      if (!queue_remove (&o->fill_queue, c))
        return;
      c->fill = false;
      o->inflight++;
    }
  else if (!queue_remove (&o->queue, c))
    return;
  queue_push_front (&o->queue, c);
  wake_worker (o);
}

/* True when the disk cache holds chunk i. */
static bool
stored (struct remote_object *o, uint64_t i)
{
  return o->dc && disk_cache_has (o->dc, i * o->chunk, 1);
}

/* Note a read of [offset, offset+count) in the reader's sequential
 * detector and queue read-ahead beyond it for a sequential reader.  A
 * read is sequential when it starts within REMOTE_SEQ_SLACK of where
 * the last one ended (common/seqdetect.h); returns whether it was (lock
 * held). */
static bool
read_ahead (struct remote_reader *r, uint64_t offset, size_t count)
{
  struct remote_object *o = r->o;
  uint64_t last, j, to;

  if (!seq_note (&r->seq, offset, count, REMOTE_SEQ_SLACK))
    {
      r->ra_window = 0;
      r->ra_next = 0;
      return false;
    }
  last = (r->seq.end - 1) / o->chunk;
  r->ra_window = r->ra_window == 0 ? o->ra_min
    : (r->ra_window * 2 > o->ra_max ? o->ra_max : r->ra_window * 2);
  to = last + r->ra_window;
  if (to >= o->nchunks)
    to = o->nchunks - 1;
  for (j = last + 1 > r->ra_next ? last + 1 : r->ra_next; j <= to; j++)
    {
      if (o->inflight >= o->ra_max)
        break;
      if (lookup_live (o, j) == NULL && !stored (o, j)
          && start_fetch (o, j, FETCH_READAHEAD) == NULL)
        break;
    }
  r->ra_next = j;
  return true;
}

/* Write units [g0, gn) of o, all in memory, as one disk-cache chunk;
 * true when the cache kept it.  Units smaller than a disk-cache chunk
 * (torrent pieces of 16-512 KiB) can only be stored together: one
 * pwritev of their buffers, no copy into one; streamed when each unit
 * was (lock not held). */
static bool
store_group (struct remote_object *o, struct chunk *c)
{
  unsigned per = DISK_CACHE_CHUNK / o->chunk, n = 0;
  uint64_t g0 = c->index / per * per;
  uint64_t gn = g0 + per < o->nchunks ? g0 + per : o->nchunks;
  struct chunk *units[DISK_CACHE_CHUNK / REMOTE_MIN_UNIT];
  struct iovec parts[DISK_CACHE_CHUNK / REMOTE_MIN_UNIT];
  size_t total = 0;
  bool ok = true, kept = false, streamed = true;

  pthread_mutex_lock (&o->lock);
  for (uint64_t j = g0; j < gn && ok; j++)
    {
      struct chunk *u = j == c->index ? c : lookup (o, j);
      ok = u && u->state == CHUNK_READY && u->buf;
      if (ok)
        {
          u->refs++;
          streamed = streamed
                     && __atomic_load_n (&u->streamed, __ATOMIC_RELAXED);
          parts[n] = (struct iovec) { u->buf, u->len };
          units[n++] = u;
          total += u->len;
        }
    }
  pthread_mutex_unlock (&o->lock);
  if (ok)
    {
      disk_cache_write_parts (o->dc, parts, (int) n, g0 * o->chunk,
                              streamed ? DISK_CACHE_STREAMED : 0);
      kept = disk_cache_has (o->dc, g0 * o->chunk, total);
    }
  pthread_mutex_lock (&o->lock);
  for (unsigned k = 0; k < n; k++)
    {
      struct chunk *u = units[k];
      if (u != c && kept && u->in_table && u->refs == 2)
        table_remove (o, u);        /* readers now use the disk cache */
      chunk_unref (o, u);
    }
  pthread_mutex_unlock (&o->lock);
  return kept;
}

/* Write a fetched unit to the disk cache; true when the cache kept it
 * (lock not held). */
static bool
store_unit (struct remote_object *o, struct chunk *c)
{
  uint64_t off = c->index * o->chunk;

  if (atomic_load (&o->changed))
    return false;
  if (o->chunk < DISK_CACHE_CHUNK)
    return store_group (o, c);
  disk_cache_write (o->dc, c->buf, c->len, off,
                    __atomic_load_n (&c->streamed, __ATOMIC_RELAXED)
                    ? DISK_CACHE_STREAMED : 0);
  return disk_cache_has (o->dc, off, c->len);
}

/* The storer: writes fetched chunks to the disk cache in order, then
 * lets readers use the cache for them.  Started on demand; drains its
 * queue before it leaves at close, so what was read is kept. */
static void *
storer_main (void *arg)
{
  struct remote_object *o = arg;

  pthread_mutex_lock (&o->lock);
  for (;;)
    {
      struct chunk *c;
      bool kept;

      while (o->store_queue.head == NULL && !o->closing)
        {
          struct timespec ts;
          clock_gettime (CLOCK_REALTIME, &ts);
          ts.tv_sec += WORKER_IDLE_S;
          if (pthread_cond_timedwait (&o->store_cond, &o->lock, &ts) != 0
              && o->store_queue.head == NULL)
            break;
        }
      c = queue_pop (&o->store_queue);
      if (c == NULL)
        break;
      pthread_mutex_unlock (&o->lock);

      kept = store_unit (o, c);

      pthread_mutex_lock (&o->lock);
      o->nstore--;
      pthread_cond_signal (&o->store_space);
      c->stored = kept;
      if (kept)
        table_remove (o, c);        /* readers now use the disk cache */
      else if (c->in_table && !lru_member (o, c))
        lru_add (o, c);
      chunk_unref (o, c);
      lru_trim (o);
    }
  o->storers--;
  pthread_cond_broadcast (&o->chunk_cond);
  pthread_mutex_unlock (&o->lock);
  /* o may be gone from here on. */
  return NULL;
}

/* Hand a fetched chunk to the storer, starting it if needed; false when
 * no storer can run (lock held). */
static bool
queue_store (struct remote_object *o, struct chunk *c)
{
  if (o->storers == 0)
    {
      pthread_t t;
      pthread_attr_t attr;
      int e;

      pthread_attr_init (&attr);
      pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
      e = thread_create ("ds-store", &t, &attr, storer_main, o);
      pthread_attr_destroy (&attr);
      if (e != 0)
        return false;
      o->storers++;
    }
  c->refs++;
  queue_push_back (&o->store_queue, c);
  o->nstore++;
  pthread_cond_signal (&o->store_cond);
  return true;
}

/* A chunk buffer for a worker about to fetch, under the process-wide
 * budget: a spare or a new one; else after dropping memory-cached
 * chunks, o's own first, then other objects'.  NULL when the budget is
 * still spent: the caller waits a little and tries again (lock held,
 * dropped and taken again while other objects are asked). */
static char *
worker_buf (struct remote_object *o)
{
  char *b = remote_buf_get (o, o->nbufs == 0);

  if (b == NULL && remote_chunks_trim (o, 0) > 0)
    b = remote_buf_get (o, o->nbufs == 0);
  if (b == NULL)
    {
      unsigned freed;
      pthread_mutex_unlock (&o->lock);
      freed = remote_reclaim (o);
      pthread_mutex_lock (&o->lock);
      if (freed > 0 || o->nbufs == 0)
        b = remote_buf_get (o, o->nbufs == 0);
    }
  return b;
}

/* Wait up to ms milliseconds on o's work condition (lock held). */
static void
work_wait_ms (struct remote_object *o, long ms)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_nsec += ms * 1000000L;
  ts.tv_sec += ts.tv_nsec / 1000000000L;
  ts.tv_nsec %= 1000000000L;
  pthread_cond_timedwait (&o->work_cond, &o->lock, &ts);
}

/* A worker: takes chunks off the queue, fetches them through the
 * fetcher with its own context (for HTTP a curl handle: one kept-alive
 * connection), hands them to the storer and wakes the readers.  Leaves
 * after a minute without work. */
static void *
worker_main (void *arg)
{
  struct remote_object *o = arg;
  void *ctx = NULL;
  bool have_ctx = false;
  char *spare = NULL;

  pthread_mutex_lock (&o->lock);
  for (;;)
    {
      struct chunk *c;
      char *message = NULL;
      bool kept = false, queued_store = false;
      uint64_t off;
      int r;

      while (!work_available (o) && !o->closing)
        {
          struct timespec ts;
          int w;
          clock_gettime (CLOCK_REALTIME, &ts);
          ts.tv_sec += WORKER_IDLE_S;
          o->idle++;
          w = pthread_cond_timedwait (&o->work_cond, &o->lock, &ts);
          o->idle--;
          if (w != 0 && !work_available (o))
            break;
        }
      if (o->closing || !work_available (o))
        break;
      if (spare == NULL)
        {
          spare = worker_buf (o);
          if (spare == NULL && o->nbufs > 0)
            {
              /* The budget is spent: wait for memory, not for work. */
              work_wait_ms (o, 20);
              continue;
            }
          if (o->closing || !work_available (o))
            {
              remote_buf_put (o, spare);
              spare = NULL;
              continue;
            }
        }
      c = queue_pop (&o->queue);
      if (c == NULL)
        {
          c = queue_pop (&o->fill_queue);
          o->fill_active++;
        }
      c->queued = false;
      c->refs++;
      c->buf = spare;
      spare = NULL;
      pthread_mutex_unlock (&o->lock);

      off = c->index * o->chunk;
      if (!have_ctx && o->ops->context_new)
        ctx = o->ops->context_new (o->source);
      have_ctx = have_ctx || ctx != NULL || o->ops->context_new == NULL;
      if (c->buf == NULL)
        r = error_set (ENOMEM, "%s: out of memory", o->label);
      else if (!have_ctx)
        r = -ENOMEM;                /* context_new said why */
      else
        r = o->ops->fetch (o->source, ctx, c->buf, off, c->len);
      if (r == -ESTALE)
        {
          remote_note_stale (o);
          r = -EIO;
        }
      if (r < 0)
        message = strdup (error_message ());
      else if (c->fill && o->dc && !atomic_load (&o->changed))
        {
          /* Background fill exists to be stored: store it here, even
           * if the disk is slow. */
          pthread_mutex_lock (&o->lock);
          c->state = CHUNK_READY;
          pthread_cond_broadcast (&o->chunk_cond);
          pthread_mutex_unlock (&o->lock);
          kept = store_unit (o, c);
        }

      pthread_mutex_lock (&o->lock);
      if (r == 0)
        {
          if (c->state != CHUNK_READY)
            {
              c->state = CHUNK_READY;
              pthread_cond_broadcast (&o->chunk_cond);
            }
          /* Readers copy from memory; the storer writes it to the disk
           * cache without holding up the next fetch.  When the disk
           * falls far behind, wait a little for it (what was fetched is
           * meant to be kept), then give up on caching this chunk. */
          if (!c->fill && o->dc && !atomic_load (&o->changed))
            {
              struct timespec ts;
              clock_gettime (CLOCK_REALTIME, &ts);
              ts.tv_sec += REMOTE_STORE_WAIT_S;
              while (o->nstore >= REMOTE_STORE_MAX && !o->closing)
                if (pthread_cond_timedwait (&o->store_space, &o->lock,
                                            &ts) != 0)
                  break;
              if (o->nstore < REMOTE_STORE_MAX && queue_store (o, c))
                queued_store = true;
            }
        }
      if (!c->fill)
        o->inflight--;
      else
        {
          o->fill_active--;
          if (o->fill_queue.head)
            pthread_cond_signal (&o->work_cond);
        }
      o->pending--;
      if (r == 0)
        {
          c->stored = kept;
          if (queued_store)
            ;                       /* the storer finishes it */
          else if (kept)
            table_remove (o, c);    /* readers now use the disk cache */
          else if (c->in_table && !lru_member (o, c))
            lru_add (o, c);
        }
      else
        {
          /* Held in the table for the fetcher's fail_hold, without
           * its buffer, or gone at once. */
          c->state = CHUNK_FAILED;
          c->err = r;
          c->message = message;
          c->failed_at = clock_seconds ();
          if (o->ops->fail_hold > 0)
            {
              remote_buf_put (o, c->buf);
              c->buf = NULL;
            }
          else
            table_remove (o, c);
        }
      pthread_cond_broadcast (&o->chunk_cond);
      chunk_unref (o, c);
      lru_trim (o);
    }
  remote_buf_put (o, spare);
  if (ctx)
    {
      /* The source lives while a worker does (shutdown waits). */
      pthread_mutex_unlock (&o->lock);
      o->ops->context_free (o->source, ctx);
      pthread_mutex_lock (&o->lock);
    }
  o->workers--;
  if (o->workers == 0 && !o->closing)
    {
      /* Idle for a minute: give the memory back. */
      remote_chunks_trim (o, 0);
      remote_buf_trim ();
    }
  pthread_cond_broadcast (&o->chunk_cond);
  pthread_mutex_unlock (&o->lock);
  /* o may be gone from here on. */
  return NULL;
}

/* Find chunk i for a reader: a reference on the chunk in the table (or
 * on a new fetch), or NULL when the disk cache has it (lock held). */
static int
want_chunk (struct remote_object *o, uint64_t i, bool check_cache,
            struct chunk **out)
{
  struct chunk *c = lookup_live (o, i);

  if (c == NULL && check_cache && stored (o, i))
    {
      *out = NULL;
      return 0;
    }
  if (c == NULL)
    c = start_fetch (o, i, FETCH_FOREGROUND);
  else
    promote (o, c);
  if (c == NULL)
    return error_set (ENOMEM, "%s: out of memory", o->label);
  c->refs++;
  *out = c;
  return 0;
}

/* Copy one chunk's part of a read out of c, waiting for its fetch. */
static int
copy_from_chunk (struct remote_object *o, struct chunk *c, char *dst,
                 uint64_t start, size_t n)
{
  int r = 0;

  pthread_mutex_lock (&o->lock);
  if (c->state == CHUNK_FETCHING)
    atomic_fetch_add (&o->waits, 1);
  while (c->state == CHUNK_FETCHING)
    pthread_cond_wait (&o->chunk_cond, &o->lock);
  pthread_mutex_unlock (&o->lock);
  if (c->state == CHUNK_READY)
    memcpy (dst, c->buf + (start - c->index * o->chunk), n);
  else
    r = error_set (-c->err, "%s", c->message ? c->message
                   : "remote: fetch failed");
  return r;
}

/* A fetch context for a reader's own request: an idle one or a new
 * one; false when none can be made. */
static bool
context_get (struct remote_object *o, void **ctx)
{
  *ctx = NULL;
  if (o->ops->context_new == NULL)
    return true;
  pthread_mutex_lock (&o->lock);
  if (o->ncontexts > 0)
    *ctx = o->contexts[--o->ncontexts];
  pthread_mutex_unlock (&o->lock);
  if (*ctx == NULL)
    *ctx = o->ops->context_new (o->source);
  return *ctx != NULL;
}

/* Keep a reader's fetch context (and its connection) for the next one. */
static void
context_put (struct remote_object *o, void *ctx)
{
  if (ctx == NULL)
    return;
  pthread_mutex_lock (&o->lock);
  if (o->ncontexts < REMOTE_IDLE_CONTEXTS)
    {
      o->contexts[o->ncontexts++] = ctx;
      ctx = NULL;
    }
  pthread_mutex_unlock (&o->lock);
  if (ctx)
    o->ops->context_free (o->source, ctx);
}

/* A random reader's small miss: fetch just its range on the reader's
 * thread (latency like a plain range request) while the whole chunk is
 * queued as background fill for the disk cache. */
static int
direct_read (struct remote_object *o, void *buf, size_t count, uint64_t offset)
{
  void *ctx;
  int r;

  if (!context_get (o, &ctx))
    return -ENOMEM;                 /* context_new said why */
  r = o->ops->fetch (o->source, ctx, buf, offset, count);
  context_put (o, ctx);
  if (r == -ESTALE)
    {
      remote_note_stale (o);
      r = -EIO;
    }
  return r;
}

/* A reader's pread: the disk cache without locks when it has the whole
 * range, else chunk by chunk through the table. */
int
remote_chunks_pread (struct remote_reader *rd, void *buf, size_t count,
                     uint64_t offset)
{
  struct remote_object *o = rd->o;
  uint64_t first = offset / o->chunk;
  uint64_t last = (offset + count - 1) / o->chunk;
  size_t n = (size_t) (last - first + 1);
  struct chunk *local[8], **cs;
  bool seq;
  int r = 0;

  if (atomic_load (&o->changed))
    return error_set (EIO, "%s: %s changed on the server; reopen "
                      "the entry", o->label, o->display);
  if (o->dc && disk_cache_read (o->dc, buf, count, offset) == 0)
    {
      /* Warm: only look at read-ahead where the cached run ends. */
      if (last + 1 < o->nchunks && !stored (o, last + 1))
        {
          pthread_mutex_lock (&o->lock);
          read_ahead (rd, offset, count);
          pthread_mutex_unlock (&o->lock);
        }
      return 0;
    }

  cs = n <= 8 ? local : calloc (n, sizeof *cs);
  if (cs == NULL)
    return error_set (ENOMEM, "%s: out of memory", o->label);
  pthread_mutex_lock (&o->lock);
  seq = read_ahead (rd, offset, count);
  if (n == 1 && count <= REMOTE_DIRECT_MAX && o->ops->partial
      && rd->seq.random >= REMOTE_RANDOM_AFTER)
    {
      struct chunk *c = lookup (o, first);
      if (c == NULL || c->state != CHUNK_READY)
        {
          if (c == NULL && o->dc)
            start_fetch (o, first, FETCH_FILL);
          pthread_mutex_unlock (&o->lock);
          if (cs != local)
            free (cs);
          return direct_read (o, buf, count, offset);
        }
    }
  for (size_t k = 0; k < n; k++)
    {
      cs[k] = NULL;
      if (r == 0)
        r = want_chunk (o, first + k, true, &cs[k]);
      /* A sequential reader's bytes go once through the mount's page
       * cache, whether read-ahead fetched them or the reader caught up. */
      if (r == 0 && cs[k] && seq)
        __atomic_store_n (&cs[k]->streamed, true, __ATOMIC_RELAXED);
    }
  pthread_mutex_unlock (&o->lock);

  for (size_t k = 0; k < n; k++)
    {
      uint64_t cstart = (first + k) * o->chunk;
      uint64_t s = offset > cstart ? offset : cstart;
      uint64_t e = offset + count < cstart + o->chunk ? offset + count
        : cstart + o->chunk;
      char *dst = (char *) buf + (s - offset);

      if (r == 0 && cs[k] == NULL
          && disk_cache_read (o->dc, dst, (size_t) (e - s), s) < 0)
        {
          /* Evicted since we looked: fetch it after all. */
          pthread_mutex_lock (&o->lock);
          r = want_chunk (o, first + k, false, &cs[k]);
          pthread_mutex_unlock (&o->lock);
        }
      if (r == 0 && cs[k])
        r = copy_from_chunk (o, cs[k], dst, s, (size_t) (e - s));
    }

  pthread_mutex_lock (&o->lock);
  for (size_t k = 0; k < n; k++)
    if (cs[k])
      {
        if (lru_member (o, cs[k]))
          {
            lru_del (o, cs[k]);
            lru_add (o, cs[k]);
          }
        chunk_unref (o, cs[k]);
      }
  pthread_mutex_unlock (&o->lock);
  if (cs != local)
    free (cs);
  return r;
}

/* Queue read-ahead of a range a caller will read soon. */
int
remote_chunks_prefetch (struct remote_reader *rd, uint64_t offset,
                        uint64_t length)
{
  struct remote_object *o = rd->o;
  uint64_t first, last;

  if (length == 0 || offset >= o->size)
    return 0;
  if (length > o->size - offset)
    length = o->size - offset;
  first = offset / o->chunk;
  last = (offset + length - 1) / o->chunk;
  pthread_mutex_lock (&o->lock);
  for (uint64_t j = first; j <= last && o->inflight < 4 * o->ra_max; j++)
    if (lookup_live (o, j) == NULL && !stored (o, j))
      start_fetch (o, j, FETCH_READAHEAD);
  pthread_mutex_unlock (&o->lock);
  return 0;
}

/* Stop the workers (aborting their transfers through the fetcher's
 * stop), fail queued fetches, let the storer drain and free every chunk
 * and context.  No reader may be inside the object. */
void
remote_chunks_shutdown (struct remote_object *o)
{
  if (o->ops->stop)
    o->ops->stop (o->source);
  pthread_mutex_lock (&o->lock);
  o->closing = true;
  pthread_cond_broadcast (&o->work_cond);
  pthread_cond_broadcast (&o->store_cond);
  pthread_cond_broadcast (&o->store_space);
  for (int k = 0; k < 2; k++)
    {
      struct chunk_queue *q = k == 0 ? &o->queue : &o->fill_queue;
      struct chunk *c;
      while ((c = queue_pop (q)) != NULL)
        {
          c->queued = false;
          c->state = CHUNK_FAILED;
          c->err = -EIO;
          if (!c->fill)
            o->inflight--;
          o->pending--;
          table_remove (o, c);
        }
    }
  while (o->workers > 0 || o->storers > 0)
    pthread_cond_wait (&o->chunk_cond, &o->lock);
  for (int b = 0; b < REMOTE_BUCKETS; b++)
    while (o->table[b])
      table_remove (o, o->table[b]);
  pthread_mutex_unlock (&o->lock);
  while (o->ncontexts > 0)
    o->ops->context_free (o->source, o->contexts[--o->ncontexts]);
  remote_buf_trim ();
}

/* Copy [offset, offset+count) out of what the object holds (see
 * remote_peek): unit by unit from the disk cache, else from a ready
 * chunk in memory; never fetches.  A missing unit still being fetched
 * gives -EAGAIN, not -ENOENT: its bytes are on their way. */
int
remote_chunks_peek (struct remote_object *o, void *buf, size_t count,
                    uint64_t offset)
{
  if (count == 0 || offset > o->size || count > o->size - offset)
    return -EINVAL;
  if (atomic_load (&o->changed))
    return -ENOENT;
  if (o->dc && disk_cache_read (o->dc, buf, count, offset) == 0)
    return 0;
  for (uint64_t pos = offset; pos < offset + count;)
    {
      uint64_t i = pos / o->chunk;
      uint64_t end = (i + 1) * o->chunk;
      size_t n = (size_t) ((end < offset + count ? end : offset + count)
                           - pos);
      char *dst = (char *) buf + (pos - offset);
      bool got = false, arriving = false;

      pthread_mutex_lock (&o->lock);
      struct chunk *c = o->closing ? NULL : lookup (o, i);
      if (c != NULL && c->state == CHUNK_READY && c->buf != NULL
          && pos - i * o->chunk + n <= c->len)
        {
          memcpy (dst, c->buf + (pos - i * o->chunk), n);
          got = true;
        }
      arriving = c != NULL && c->state == CHUNK_FETCHING;
      pthread_mutex_unlock (&o->lock);
      if (!got && !(o->dc && disk_cache_read (o->dc, dst, n, pos) == 0))
        return arriving ? -EAGAIN : -ENOENT;
      pos += n;
    }
  return 0;
}

/* True when the object holds every byte of [offset, offset+count). */
bool
remote_chunks_holds (struct remote_object *o, uint64_t offset, size_t count)
{
  if (count == 0 || offset > o->size || count > o->size - offset
      || atomic_load (&o->changed))
    return false;
  if (o->dc && disk_cache_has (o->dc, offset, count))
    return true;
  for (uint64_t i = offset / o->chunk; i <= (offset + count - 1) / o->chunk;
       i++)
    {
      pthread_mutex_lock (&o->lock);
      struct chunk *c = o->closing ? NULL : lookup (o, i);
      bool ready = c != NULL && c->state == CHUNK_READY && c->buf != NULL;
      pthread_mutex_unlock (&o->lock);
      if (!ready && !stored (o, i))
        return false;
    }
  return true;
}
