/* diskshelf: reading an HTTP object in chunks: the chunk table (one
 * fetch per missing chunk, however many readers want it), the worker
 * threads that fetch, read-ahead for a sequential reader, the disk
 * cache in front of it all and a small memory cache when the disk cache
 * is off or full.  See internal.h for the thread model. */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "thread.h"

#define WORKER_IDLE_S 60

/* The bucket of chunk index i. */
static struct chunk **
bucket (struct http_layer *h, uint64_t i)
{
  return &h->table[(i * 0x9E3779B97F4A7C15ull) >> 56 & (HTTP_BUCKETS - 1)];
}

/* The chunk in the table with index i, or NULL (lock held). */
static struct chunk *
lookup (struct http_layer *h, uint64_t i)
{
  for (struct chunk *c = *bucket (h, i); c; c = c->hnext)
    if (c->index == i)
      return c;
  return NULL;
}

/* True when the chunk is in the memory LRU (lock held). */
static bool
lru_member (struct http_layer *h, struct chunk *c)
{
  return c->lprev != NULL || h->lru_head == c;
}

/* Unlink a chunk from the memory LRU (lock held). */
static void
lru_del (struct http_layer *h, struct chunk *c)
{
  if (!lru_member (h, c))
    return;
  if (c->lprev)
    c->lprev->lnext = c->lnext;
  else
    h->lru_head = c->lnext;
  if (c->lnext)
    c->lnext->lprev = c->lprev;
  else
    h->lru_tail = c->lprev;
  c->lprev = c->lnext = NULL;
  h->nmem--;
}

/* Put a chunk at the young end of the memory LRU (lock held). */
static void
lru_add (struct http_layer *h, struct chunk *c)
{
  c->lprev = NULL;
  c->lnext = h->lru_head;
  if (h->lru_head)
    h->lru_head->lprev = c;
  h->lru_head = c;
  if (h->lru_tail == NULL)
    h->lru_tail = c;
  h->nmem++;
}

/* A chunk buffer, reused when one is free: fresh 1 MiB allocations
 * are mmaps whose page faults cost more than the copy (lock held). */
static char *
buf_get (struct http_layer *h)
{
  char *b = h->free_bufs;

  if (b == NULL)
    return malloc (HTTP_CHUNK);
  memcpy (&h->free_bufs, b, sizeof (char *));
  h->nfree_bufs--;
  return b;
}

/* Return a chunk buffer to the free list, or free it (lock held). */
static void
buf_put (struct http_layer *h, char *b)
{
  if (b == NULL)
    return;
  if (h->nfree_bufs >= HTTP_FREE_BUFS)
    {
      free (b);
      return;
    }
  memcpy (b, &h->free_bufs, sizeof (char *));
  h->free_bufs = b;
  h->nfree_bufs++;
}

/* Drop a reference; the last one frees the chunk (lock held). */
static void
chunk_unref (struct http_layer *h, struct chunk *c)
{
  if (--c->refs > 0)
    return;
  buf_put (h, c->buf);
  free (c->message);
  free (c);
}

/* Take a chunk out of the table and the LRU (lock held). */
static void
table_remove (struct http_layer *h, struct chunk *c)
{
  if (!c->in_table)
    return;
  for (struct chunk **p = bucket (h, c->index); *p; p = &(*p)->hnext)
    if (*p == c)
      {
        *p = c->hnext;
        break;
      }
  c->in_table = false;
  lru_del (h, c);
  chunk_unref (h, c);
}

/* Keep at most HTTP_MEM_CHUNKS unstored chunks in memory (lock held). */
static void
lru_trim (struct http_layer *h)
{
  struct chunk *c = h->lru_tail;

  while (c && h->nmem > HTTP_MEM_CHUNKS)
    {
      struct chunk *prev = c->lprev;
      if (c->refs == 1)
        table_remove (h, c);
      c = prev;
    }
}

static void *worker_main (void *arg);

/* Start a worker if none is free and the pool is not full (lock held). */
static void
wake_worker (struct http_layer *h)
{
  if (h->idle > 0)
    pthread_cond_signal (&h->work_cond);
  else if (h->workers < h->max_workers)
    {
      pthread_t t;
      pthread_attr_t attr;

      pthread_attr_init (&attr);
      pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
      if (thread_create (&t, &attr, worker_main, h) == 0)
        h->workers++;
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
work_available (struct http_layer *h)
{
  return h->queue.head
    || (h->fill_queue.head && h->fill_active < HTTP_FILL_WORKERS);
}

/* Queue a new fetch of chunk i: at the front for a waiting reader, at
 * the back for read-ahead and for background fill (which does not count
 * against the read-ahead bound).  The buffer is taken when a worker
 * starts the fetch.  Returns the chunk (owned by the table) or NULL
 * (lock held). */
static struct chunk *
start_fetch (struct http_layer *h, uint64_t i, enum fetch_kind kind)
{
  struct chunk *c = calloc (1, sizeof *c);

  if (c == NULL)
    return NULL;
  c->index = i;
  c->len = i * HTTP_CHUNK + HTTP_CHUNK <= h->layer.size ? HTTP_CHUNK
    : (size_t) (h->layer.size - i * HTTP_CHUNK);
  c->state = CHUNK_FETCHING;
  c->refs = 1;
  c->in_table = true;
  c->hnext = *bucket (h, i);
  *bucket (h, i) = c;
  c->queued = true;
  c->fill = kind == FETCH_FILL;
  if (kind == FETCH_FOREGROUND)
    queue_push_front (&h->queue, c);
  else if (kind == FETCH_READAHEAD)
    queue_push_back (&h->queue, c);
  else
    queue_push_back (&h->fill_queue, c);
  if (!c->fill)
    h->inflight++;
  h->pending++;
  wake_worker (h);
  return c;
}

/* A reader waits for a chunk still in a queue: move it to the front
 * (lock held). */
static void
promote (struct http_layer *h, struct chunk *c)
{
  if (!c->queued || h->queue.head == c)
    return;
  if (c->fill)
    {
      if (!queue_remove (&h->fill_queue, c))
        return;
      c->fill = false;
      h->inflight++;
    }
  else if (!queue_remove (&h->queue, c))
    return;
  queue_push_front (&h->queue, c);
  wake_worker (h);
}

/* True when the disk cache holds chunk i. */
static bool
stored (struct http_layer *h, uint64_t i)
{
  return h->dc && disk_cache_has (h->dc, i * HTTP_CHUNK, 1);
}

/* Update the sequential-reader state after a read of [offset,
 * offset+count) and queue read-ahead beyond it.  A read is sequential
 * when it starts within HTTP_SEQ_SLACK of where the last one ended (the
 * kernel sends parallel reads slightly out of order) (lock held). */
static void
read_ahead (struct http_layer *h, uint64_t offset, size_t count)
{
  uint64_t end = offset + count, last = (end - 1) / HTTP_CHUNK;
  uint64_t gap = offset >= h->ra_end ? offset - h->ra_end
    : h->ra_end - offset;
  bool seq = gap <= HTTP_SEQ_SLACK;
  uint64_t j, to;

  if (!seq && h->random_misses < UINT_MAX)
    h->random_misses++;
  else if (seq)
    h->random_misses = 0;
  if (!seq)
    {
      h->ra_window = 0;
      h->ra_next = 0;
      h->ra_end = end;
      return;
    }
  if (end > h->ra_end)
    h->ra_end = end;
  last = (h->ra_end - 1) / HTTP_CHUNK;
  h->ra_window = h->ra_window == 0 ? HTTP_RA_MIN
    : (h->ra_window * 2 > HTTP_RA_MAX ? HTTP_RA_MAX : h->ra_window * 2);
  to = last + h->ra_window;
  if (to >= h->nchunks)
    to = h->nchunks - 1;
  for (j = last + 1 > h->ra_next ? last + 1 : h->ra_next; j <= to; j++)
    {
      if (h->inflight >= HTTP_RA_MAX)
        break;
      if (lookup (h, j) == NULL && !stored (h, j)
          && start_fetch (h, j, FETCH_READAHEAD) == NULL)
        break;
    }
  h->ra_next = j;
}

/* The storer: writes fetched chunks to the disk cache in order, then
 * lets readers use the cache for them.  Started on demand; drains its
 * queue before it leaves at close, so what was read is kept. */
static void *
storer_main (void *arg)
{
  struct http_layer *h = arg;

  pthread_mutex_lock (&h->lock);
  for (;;)
    {
      struct chunk *c;
      uint64_t off;
      bool kept;

      while (h->store_queue.head == NULL && !h->closing)
        {
          struct timespec ts;
          clock_gettime (CLOCK_REALTIME, &ts);
          ts.tv_sec += WORKER_IDLE_S;
          if (pthread_cond_timedwait (&h->store_cond, &h->lock, &ts) != 0
              && h->store_queue.head == NULL)
            break;
        }
      c = queue_pop (&h->store_queue);
      if (c == NULL)
        break;
      pthread_mutex_unlock (&h->lock);

      off = c->index * HTTP_CHUNK;
      kept = false;
      if (!atomic_load (&h->changed))
        {
          disk_cache_write (h->dc, c->buf, c->len, off);
          kept = disk_cache_has (h->dc, off, c->len);
        }

      pthread_mutex_lock (&h->lock);
      h->nstore--;
      pthread_cond_signal (&h->store_space);
      c->stored = kept;
      if (kept)
        table_remove (h, c);        /* readers now use the disk cache */
      else if (c->in_table && !lru_member (h, c))
        lru_add (h, c);
      chunk_unref (h, c);
      lru_trim (h);
    }
  h->storers--;
  pthread_cond_broadcast (&h->chunk_cond);
  pthread_mutex_unlock (&h->lock);
  /* h may be gone from here on. */
  return NULL;
}

/* Hand a fetched chunk to the storer, starting it if needed; false when
 * no storer can run (lock held). */
static bool
queue_store (struct http_layer *h, struct chunk *c)
{
  if (h->storers == 0)
    {
      pthread_t t;
      pthread_attr_t attr;
      int e;

      pthread_attr_init (&attr);
      pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
      e = thread_create (&t, &attr, storer_main, h);
      pthread_attr_destroy (&attr);
      if (e != 0)
        return false;
      h->storers++;
    }
  c->refs++;
  queue_push_back (&h->store_queue, c);
  h->nstore++;
  pthread_cond_signal (&h->store_cond);
  return true;
}

/* A worker: takes chunks off the queue, fetches them with its own curl
 * handle (one kept-alive connection), stores them in the disk cache and
 * wakes the readers.  Leaves after a minute without work. */
static void *
worker_main (void *arg)
{
  struct http_layer *h = arg;
  CURL *curl = NULL;

  pthread_mutex_lock (&h->lock);
  for (;;)
    {
      struct chunk *c;
      char *message = NULL;
      bool kept = false, queued_store = false;
      uint64_t off;
      int r;

      while (!work_available (h) && !h->closing)
        {
          struct timespec ts;
          int w;
          clock_gettime (CLOCK_REALTIME, &ts);
          ts.tv_sec += WORKER_IDLE_S;
          h->idle++;
          w = pthread_cond_timedwait (&h->work_cond, &h->lock, &ts);
          h->idle--;
          if (w != 0 && !work_available (h))
            break;
        }
      if (h->closing || !work_available (h))
        break;
      c = queue_pop (&h->queue);
      if (c == NULL)
        {
          c = queue_pop (&h->fill_queue);
          h->fill_active++;
        }
      c->queued = false;
      c->refs++;
      c->buf = buf_get (h);
      pthread_mutex_unlock (&h->lock);

      off = c->index * HTTP_CHUNK;
      if (curl == NULL)
        curl = http_handle_new (&h->rc, &h->stopping);
      if (c->buf == NULL)
        r = error_set (ENOMEM, "http: %s: out of memory", h->rc.entry_name);
      else if (curl == NULL)
        r = error_set (ENOMEM, "http: %s: cannot create a curl handle",
                       h->rc.entry_name);
      else
        r = http_fetch (h, curl, c->buf, off, c->len);
      if (r < 0)
        message = strdup (error_message ());
      else if (c->fill && h->dc && !atomic_load (&h->changed))
        {
          /* Background fill exists to be stored: store it here, even
           * if the disk is slow. */
          pthread_mutex_lock (&h->lock);
          c->state = CHUNK_READY;
          pthread_cond_broadcast (&h->chunk_cond);
          pthread_mutex_unlock (&h->lock);
          disk_cache_write (h->dc, c->buf, c->len, off);
          kept = disk_cache_has (h->dc, off, c->len);
        }

      pthread_mutex_lock (&h->lock);
      if (r == 0)
        {
          if (c->state != CHUNK_READY)
            {
              c->state = CHUNK_READY;
              pthread_cond_broadcast (&h->chunk_cond);
            }
          /* Readers copy from memory; the storer writes it to the disk
           * cache without holding up the next fetch.  When the disk
           * falls far behind, wait a little for it (what was fetched is
           * meant to be kept), then give up on caching this chunk. */
          if (!c->fill && h->dc && !atomic_load (&h->changed))
            {
              struct timespec ts;
              clock_gettime (CLOCK_REALTIME, &ts);
              ts.tv_sec += HTTP_STORE_WAIT_S;
              while (h->nstore >= HTTP_STORE_MAX && !h->closing)
                if (pthread_cond_timedwait (&h->store_space, &h->lock,
                                            &ts) != 0)
                  break;
              if (h->nstore < HTTP_STORE_MAX && queue_store (h, c))
                queued_store = true;
            }
        }
      if (!c->fill)
        h->inflight--;
      else
        {
          h->fill_active--;
          if (h->fill_queue.head)
            pthread_cond_signal (&h->work_cond);
        }
      h->pending--;
      if (r == 0)
        {
          c->stored = kept;
          if (queued_store)
            ;                       /* the storer finishes it */
          else if (kept)
            table_remove (h, c);    /* readers now use the disk cache */
          else if (c->in_table && !lru_member (h, c))
            lru_add (h, c);
        }
      else
        {
          c->state = CHUNK_FAILED;
          c->err = r;
          c->message = message;
          table_remove (h, c);
        }
      pthread_cond_broadcast (&h->chunk_cond);
      chunk_unref (h, c);
      lru_trim (h);
    }
  h->workers--;
  if (h->workers == 0 && !h->closing)
    {
      /* Idle for a minute: give the memory back. */
      while (h->free_bufs)
        free (buf_get (h));
      while (h->lru_tail && h->lru_tail->refs == 1)
        table_remove (h, h->lru_tail);
    }
  pthread_cond_broadcast (&h->chunk_cond);
  pthread_mutex_unlock (&h->lock);
  /* h may be gone from here on. */
  if (curl)
    curl_easy_cleanup (curl);
  return NULL;
}

/* Find chunk i for a reader: a reference on the chunk in the table (or
 * on a new fetch), or NULL when the disk cache has it (lock held). */
static int
want_chunk (struct http_layer *h, uint64_t i, bool check_cache,
            struct chunk **out)
{
  struct chunk *c = lookup (h, i);

  if (c == NULL && check_cache && stored (h, i))
    {
      *out = NULL;
      return 0;
    }
  if (c == NULL)
    c = start_fetch (h, i, FETCH_FOREGROUND);
  else
    promote (h, c);
  if (c == NULL)
    return error_set (ENOMEM, "http: %s: out of memory", h->rc.entry_name);
  c->refs++;
  *out = c;
  return 0;
}

/* Copy one chunk's part of a read out of c, waiting for its fetch. */
static int
copy_from_chunk (struct http_layer *h, struct chunk *c, char *dst,
                 uint64_t start, size_t n)
{
  int r = 0;

  pthread_mutex_lock (&h->lock);
  if (c->state == CHUNK_FETCHING)
    atomic_fetch_add (&h->waits, 1);
  while (c->state == CHUNK_FETCHING)
    pthread_cond_wait (&h->chunk_cond, &h->lock);
  pthread_mutex_unlock (&h->lock);
  if (c->state == CHUNK_READY)
    memcpy (dst, c->buf + (start - c->index * HTTP_CHUNK), n);
  else
    r = error_set (-c->err, "%s", c->message ? c->message
                   : "http: fetch failed");
  return r;
}

/* A curl handle for a reader's own request: an idle one or a new one. */
static CURL *
handle_get (struct http_layer *h)
{
  CURL *c = NULL;

  pthread_mutex_lock (&h->lock);
  if (h->nhandles > 0)
    c = h->handles[--h->nhandles];
  pthread_mutex_unlock (&h->lock);
  return c ? c : http_handle_new (&h->rc, &h->stopping);
}

/* Keep a reader's curl handle (and its connection) for the next one. */
static void
handle_put (struct http_layer *h, CURL *c)
{
  pthread_mutex_lock (&h->lock);
  if (h->nhandles < HTTP_IDLE_HANDLES)
    {
      h->handles[h->nhandles++] = c;
      c = NULL;
    }
  pthread_mutex_unlock (&h->lock);
  if (c)
    curl_easy_cleanup (c);
}

/* A random reader's small miss: fetch just its range on the reader's
 * thread (latency like a plain range request) while the whole chunk is
 * queued as background fill for the disk cache. */
static int
direct_read (struct http_layer *h, void *buf, size_t count, uint64_t offset)
{
  CURL *c = handle_get (h);
  int r;

  if (c == NULL)
    return error_set (ENOMEM, "http: %s: cannot create a curl handle",
                      h->rc.entry_name);
  r = http_fetch (h, c, buf, offset, count);
  handle_put (h, c);
  return r;
}

/* The layer's pread: the disk cache without locks when it has the whole
 * range, else chunk by chunk through the table. */
int
http_chunks_pread (struct http_layer *h, void *buf, size_t count,
                   uint64_t offset)
{
  uint64_t first = offset / HTTP_CHUNK;
  uint64_t last = (offset + count - 1) / HTTP_CHUNK;
  size_t n = (size_t) (last - first + 1);
  struct chunk *local[8], **cs;
  int r = 0;

  if (atomic_load (&h->changed))
    return error_set (EIO, "http: %s: %s changed on the server; reopen "
                      "the entry", h->rc.entry_name, h->rc.display);
  if (h->dc && disk_cache_read (h->dc, buf, count, offset) == 0)
    {
      /* Warm: only look at read-ahead where the cached run ends. */
      if (last + 1 < h->nchunks && !stored (h, last + 1))
        {
          pthread_mutex_lock (&h->lock);
          read_ahead (h, offset, count);
          pthread_mutex_unlock (&h->lock);
        }
      return 0;
    }

  cs = n <= 8 ? local : calloc (n, sizeof *cs);
  if (cs == NULL)
    return error_set (ENOMEM, "http: %s: out of memory", h->rc.entry_name);
  pthread_mutex_lock (&h->lock);
  read_ahead (h, offset, count);
  if (n == 1 && count <= HTTP_DIRECT_MAX
      && h->random_misses >= HTTP_RANDOM_AFTER)
    {
      struct chunk *c = lookup (h, first);
      if (c == NULL || c->state != CHUNK_READY)
        {
          if (c == NULL && h->dc)
            start_fetch (h, first, FETCH_FILL);
          pthread_mutex_unlock (&h->lock);
          if (cs != local)
            free (cs);
          return direct_read (h, buf, count, offset);
        }
    }
  for (size_t k = 0; k < n; k++)
    {
      cs[k] = NULL;
      if (r == 0)
        r = want_chunk (h, first + k, true, &cs[k]);
    }
  pthread_mutex_unlock (&h->lock);

  for (size_t k = 0; k < n; k++)
    {
      uint64_t cstart = (first + k) * HTTP_CHUNK;
      uint64_t s = offset > cstart ? offset : cstart;
      uint64_t e = offset + count < cstart + HTTP_CHUNK ? offset + count
        : cstart + HTTP_CHUNK;
      char *dst = (char *) buf + (s - offset);

      if (r == 0 && cs[k] == NULL
          && disk_cache_read (h->dc, dst, (size_t) (e - s), s) < 0)
        {
          /* Evicted since we looked: fetch it after all. */
          pthread_mutex_lock (&h->lock);
          r = want_chunk (h, first + k, false, &cs[k]);
          pthread_mutex_unlock (&h->lock);
        }
      if (r == 0 && cs[k])
        r = copy_from_chunk (h, cs[k], dst, s, (size_t) (e - s));
    }

  pthread_mutex_lock (&h->lock);
  for (size_t k = 0; k < n; k++)
    if (cs[k])
      {
        if (lru_member (h, cs[k]))
          {
            lru_del (h, cs[k]);
            lru_add (h, cs[k]);
          }
        chunk_unref (h, cs[k]);
      }
  pthread_mutex_unlock (&h->lock);
  if (cs != local)
    free (cs);
  return r;
}

/* Queue read-ahead of a range a caller will read soon. */
int
http_chunks_prefetch (struct http_layer *h, uint64_t offset, uint64_t length)
{
  uint64_t first, last;

  if (length == 0 || offset >= h->layer.size)
    return 0;
  if (length > h->layer.size - offset)
    length = h->layer.size - offset;
  first = offset / HTTP_CHUNK;
  last = (offset + length - 1) / HTTP_CHUNK;
  pthread_mutex_lock (&h->lock);
  for (uint64_t j = first; j <= last && h->inflight < 4 * HTTP_RA_MAX; j++)
    if (lookup (h, j) == NULL && !stored (h, j))
      start_fetch (h, j, FETCH_READAHEAD);
  pthread_mutex_unlock (&h->lock);
  return 0;
}

/* Stop the workers (aborting their transfers), fail queued fetches and
 * free every chunk.  No reader may be inside the layer. */
void
http_chunks_shutdown (struct http_layer *h)
{
  pthread_mutex_lock (&h->lock);
  h->closing = true;
  atomic_store (&h->stopping, true);
  pthread_cond_broadcast (&h->work_cond);
  pthread_cond_broadcast (&h->store_cond);
  pthread_cond_broadcast (&h->store_space);
  for (int k = 0; k < 2; k++)
    {
      struct chunk_queue *q = k == 0 ? &h->queue : &h->fill_queue;
      struct chunk *c;
      while ((c = queue_pop (q)) != NULL)
        {
          c->queued = false;
          c->state = CHUNK_FAILED;
          c->err = -EIO;
          if (!c->fill)
            h->inflight--;
          h->pending--;
          table_remove (h, c);
        }
    }
  while (h->workers > 0 || h->storers > 0)
    pthread_cond_wait (&h->chunk_cond, &h->lock);
  for (int b = 0; b < HTTP_BUCKETS; b++)
    while (h->table[b])
      table_remove (h, h->table[b]);
  while (h->free_bufs)
    free (buf_get (h));
  while (h->nhandles > 0)
    curl_easy_cleanup (h->handles[--h->nhandles]);
  pthread_mutex_unlock (&h->lock);
}
