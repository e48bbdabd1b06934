/* diskshelf: the process-wide cache of decoded blocks.
 *
 * Blocks belong to objects, not to clients: clients that register with
 * the same key (one source, see blockcache.h) share one object and so
 * one set of blocks.  A job decodes with the callback of any client of
 * its object; an object lives while it has clients.
 *
 * One mutex protects everything: the hash table, the LRU list, the two
 * job queues, the objects, the queue of misses waiting for room and the
 * counters.  Decoding and copying out happen outside
 * the lock: a job owns its entry's buffer while the entry is RUNNING,
 * and a READY entry's buffer never changes while a reader holds a pin.
 *
 * Eviction order, least recently used first within each step: blocks
 * read and not held; read-ahead nobody read yet; held blocks (see
 * blockcache.h) only for a miss that waited BLOCK_CACHE_ROOM_WAIT_SECONDS.
 * Without holds, more sequential readers than blocks that fit evicted
 * each other's current block between two of their reads: with ten
 * readers of 16 MiB blocks and a 128 MiB cache, nearly every 1 MiB read
 * decoded a whole block again (642 decodes where 40 were needed).
 */
#include "blockcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "thread.h"

#define BUCKETS 4096
#define MAX_SPARES 4
#define HUGE_PAGE_MIN (4u << 20)
#define ROOM_POLL_SECONDS 0.05   /* waiters look at lapsed holds */

enum entry_state { ENTRY_QUEUED, ENTRY_RUNNING, ENTRY_READY, ENTRY_FAILED };

struct object;

struct entry
{
  struct object *obj;
  uint64_t index;
  unsigned char *buf;           /* size bytes, mmap'd; NULL for a hole */
  size_t size;                  /* the block's bytes */
  size_t mem;                   /* bytes counted in used for it */
  bool zero;                    /* a hole: reads as zeroes, no buffer */
  enum entry_state state;
  bool demand;                  /* in the demand queue (else read-ahead) */
  bool unread;                  /* read ahead and not read yet */
  bool in_table;                /* still findable; false once dropped */
  bool in_lru;                  /* linked in the LRU list */
  int err;                      /* errno when FAILED */
  char *errmsg;                 /* message when FAILED */
  unsigned pins;                /* readers waiting on or copying from it */
  double hold_until;            /* held by a sequential reader until then */
  bool finished;                /* sequential readers read all its bytes */
  size_t pass_read;             /* bytes they read since the last finish */
  struct entry *hnext;          /* hash chain */
  struct entry *prev, *next;    /* LRU list, most recent first */
  struct entry *qnext;          /* job queue */
};

/* The blocks of one source: what entries are keyed by. */
struct object
{
  char *key;                    /* NULL: never shared */
  char *name;                   /* for messages: the first client's */
  struct block_cache_client *clients;   /* those that use it */
  unsigned running;             /* jobs of this object being decoded */
  struct object *next;          /* the cache's list of shared objects */
};

/* One user of an object, with its decode callback. */
struct block_cache_client
{
  struct block_cache *cache;
  struct object *obj;
  block_cache_decode_fn decode;
  void *opaque;
  unsigned running;             /* jobs decoding with this client */
  bool leaving;                 /* in block_cache_client_free: no new jobs */
  struct block_cache_client *next;      /* obj->clients */
};

struct job_queue
{
  struct entry *head, *tail;
};

/* A miss waiting for room, on the stack of its reader. */
struct room_waiter
{
  struct room_waiter *next;
};

struct block_cache
{
  pthread_mutex_t lock;
  pthread_cond_t work_cond;     /* workers: a job was queued / stop */
  pthread_cond_t done_cond;     /* readers: a job finished */
  pthread_cond_t room_cond;     /* waiting misses: room may have freed */
  uint64_t max_bytes;
  unsigned nworkers;

  /* Everything below is protected by lock. */
  uint64_t used;                /* bytes of every entry's buffer */
  void *spare[MAX_SPARES];      /* freed buffers kept for reuse, so a new */
  size_t spare_size[MAX_SPARES]; /* block costs no fresh page faults */
  unsigned nspares;
  uint64_t spare_bytes;         /* counted with used against the bound */
  struct entry *table[BUCKETS];
  struct entry *lru_head, *lru_tail;
  struct job_queue demand, ahead;
  struct room_waiter *room_head, *room_tail;   /* misses, in arrival order */
  pthread_t *threads;
  unsigned started;             /* threads created */
  bool stopping;
  struct object *objects;       /* objects with a key */
  struct block_cache_stats stats;
};

/* Bytes of --memory-cache-size another in-memory cache claims (the
 * remote engine's chunk budget): every block cache's bound shrinks by
 * it, so that the two together stay within the one option. */
static _Atomic uint64_t reserved_bytes;

void
block_cache_reserve (uint64_t bytes)
{
  atomic_store (&reserved_bytes, bytes);
}

/* The bound on used + spare bytes: max_bytes less the reservation (at
 * most half of it, so blocks keep room however small the option). */
static uint64_t
bound (const struct block_cache *c)
{
  uint64_t r = atomic_load (&reserved_bytes);

  return c->max_bytes - (r < c->max_bytes / 2 ? r : c->max_bytes / 2);
}

/* The bound now, in bytes (see block_cache_reserve). */
uint64_t
block_cache_bound (struct block_cache *c)
{
  return bound (c);
}

/* The hash bucket of (obj, index). */
static size_t
bucket_of (const struct object *obj, uint64_t index)
{
  uint64_t h = (uint64_t) (uintptr_t) obj * 0x9e3779b97f4a7c15ULL;

  h ^= index * 0xc2b2ae3d27d4eb4fULL;
  h ^= h >> 29;
  return (size_t) (h % BUCKETS);
}

/* Find the entry of (obj, index); called with the lock held. */
static struct entry *
lookup (struct block_cache *c, const struct object *obj, uint64_t index)
{
  struct entry *e;

  for (e = c->table[bucket_of (obj, index)]; e; e = e->hnext)
    if (e->obj == obj && e->index == index)
      return e;
  return NULL;
}

/* Take e out of the LRU list; called with the lock held. */
static void
lru_unlink (struct block_cache *c, struct entry *e)
{
  if (!e->in_lru)
    return;
  e->in_lru = false;
  if (e->prev)
    e->prev->next = e->next;
  else
    c->lru_head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    c->lru_tail = e->prev;
  e->prev = e->next = NULL;
}

/* Mark e as the most recently used entry; called with the lock held. */
static void
lru_touch (struct block_cache *c, struct entry *e)
{
  if (c->lru_head == e)
    return;
  lru_unlink (c, e);
  e->in_lru = true;
  e->next = c->lru_head;
  if (c->lru_head)
    c->lru_head->prev = e;
  c->lru_head = e;
  if (c->lru_tail == NULL)
    c->lru_tail = e;
}

/* Append e to a job queue; called with the lock held. */
static void
queue_push (struct job_queue *q, struct entry *e)
{
  e->qnext = NULL;
  if (q->tail)
    q->tail->qnext = e;
  else
    q->head = e;
  q->tail = e;
}

/* Take e out of a job queue (it must be there); lock held. */
static void
queue_remove (struct job_queue *q, struct entry *e)
{
  struct entry **pp, *prev = NULL;

  for (pp = &q->head; *pp; prev = *pp, pp = &(*pp)->qnext)
    if (*pp == e)
      {
        *pp = e->qnext;
        if (q->tail == e)
          q->tail = prev;
        e->qnext = NULL;
        return;
      }
}

/* Pop the first job of a queue, or NULL; lock held. */
static struct entry *
queue_pop (struct job_queue *q)
{
  struct entry *e = q->head;

  if (e)
    {
      q->head = e->qnext;
      if (q->head == NULL)
        q->tail = NULL;
      e->qnext = NULL;
    }
  return e;
}

/* Remove e from the hash table so no new reader finds it; lock held. */
static void
table_remove (struct block_cache *c, struct entry *e)
{
  struct entry **pp;

  if (!e->in_table)
    return;
  for (pp = &c->table[bucket_of (e->obj, e->index)]; *pp;
       pp = &(*pp)->hnext)
    if (*pp == e)
      {
        *pp = e->hnext;
        break;
      }
  e->in_table = false;
}

/* Unmap the oldest spare buffer; lock held. */
static void
spare_drop (struct block_cache *c)
{
  munmap (c->spare[0], c->spare_size[0]);
  c->spare_bytes -= c->spare_size[0];
  c->nspares--;
  memmove (&c->spare[0], &c->spare[1], c->nspares * sizeof c->spare[0]);
  memmove (&c->spare_size[0], &c->spare_size[1],
           c->nspares * sizeof c->spare_size[0]);
}

/* Keep a buffer for the next block of the same size, or unmap it. */
static void
buffer_release (struct block_cache *c, void *buf, size_t size)
{
  if (c->used + c->spare_bytes + size <= bound (c))
    {
      if (c->nspares == MAX_SPARES)
        spare_drop (c);
      c->spare[c->nspares] = buf;
      c->spare_size[c->nspares] = size;
      c->nspares++;
      c->spare_bytes += size;
    }
  else
    munmap (buf, size);
}

/* A buffer of size bytes: a spare one of that size, or a new mapping. */
static void *
buffer_get (struct block_cache *c, size_t size)
{
  unsigned i;
  void *buf;

  for (i = c->nspares; i-- > 0;)
    if (c->spare_size[i] == size)
      {
        buf = c->spare[i];
        c->spare_bytes -= size;
        c->nspares--;
        memmove (&c->spare[i], &c->spare[i + 1],
                 (c->nspares - i) * sizeof c->spare[0]);
        memmove (&c->spare_size[i], &c->spare_size[i + 1],
                 (c->nspares - i) * sizeof c->spare_size[0]);
        return buf;
      }
  while (c->nspares > 0 && c->used + c->spare_bytes + size > bound (c))
    spare_drop (c);
  buf = mmap (NULL, size, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  /* Huge pages where the system allows them: a 16 MiB block then costs 8
   * page faults instead of 4096.  Only a hint. */
  if (buf != MAP_FAILED && size >= HUGE_PAGE_MIN)
    madvise (buf, size, MADV_HUGEPAGE);
  return buf;
}

/* Free an entry that nobody uses any more; lock held. */
static void
entry_destroy (struct block_cache *c, struct entry *e)
{
  table_remove (c, e);
  lru_unlink (c, e);
  c->used -= e->mem;
  if (e->buf)
    buffer_release (c, e->buf, e->size);
  c->stats.entries--;
  free (e->errmsg);
  free (e);
}

/* True when e may be evicted: cached, and nobody waits or copies. */
static bool
evictable (const struct entry *e)
{
  return e->pins == 0 && (e->state == ENTRY_READY
                          || e->state == ENTRY_FAILED);
}

/* True when a sequential reader is in e (blockcache.h, "Held blocks"). */
static bool
held (const struct entry *e, double now)
{
  return e->hold_until > now;
}

/* Evict least recently used entries until `need` more bytes fit under
 * the bound, or nothing more can go; lock held.  Read-ahead blocks that
 * nobody read yet go after the blocks already read, so read-ahead never
 * throws away the block a sequential reader is about to reach; held
 * blocks go only when break_holds.  Returns true when need bytes fit.
 * When they do not, what is left is held, being decoded, or pinned by a
 * reader: all of it becomes evictable in time. */
static bool
make_room (struct block_cache *c, uint64_t need, bool break_holds)
{
  double now = clock_seconds ();
  int pass;

  while (c->nspares > 0 && c->used + c->spare_bytes + need > bound (c))
    spare_drop (c);
  for (pass = 0; pass < 3 && c->used + need > bound (c); pass++)
    {
      struct entry *e = c->lru_tail;

      if (pass == 2 && !break_holds)
        break;
      while (e && c->used + need > bound (c))
        {
          struct entry *prev = e->prev;
          bool is_held = held (e, now);
          if (evictable (e) && (pass == 2 || !is_held)
              && (pass >= 1 || !e->unread))
            {
              if (is_held)
                c->stats.hold_breaks++;
              if (e->unread)
                c->stats.ahead_evicted++;
              entry_destroy (c, e);
              c->stats.evictions++;
            }
          e = prev;
        }
    }
  return c->used + need <= bound (c);
}

/* Bytes of entries that cannot be evicted now, that a reader holds, or
 * that were read ahead and wait for their reader; lock held. */
static uint64_t
busy_bytes (struct block_cache *c)
{
  double now = clock_seconds ();
  uint64_t busy = 0;
  struct entry *e;

  for (e = c->lru_head; e; e = e->next)
    if (!evictable (e) || e->unread || held (e, now))
      busy += e->mem;
  return busy;
}

/* Wake the misses waiting for room; lock held. */
static void
room_changed (struct block_cache *c)
{
  if (c->room_head)
    pthread_cond_broadcast (&c->room_cond);
}

/* Take w out of the queue of misses waiting for room; lock held. */
static void
room_leave (struct block_cache *c, struct room_waiter *w)
{
  struct room_waiter **pp, *prev = NULL;

  for (pp = &c->room_head; *pp; prev = *pp, pp = &(*pp)->next)
    if (*pp == w)
      {
        *pp = w->next;
        if (c->room_tail == w)
          c->room_tail = prev;
        break;
      }
  room_changed (c);             /* the next one may be first now */
}

/* Wait on room_cond for at most ROOM_POLL_SECONDS (a hold may lapse without
 * anybody signalling); lock held. */
static void
room_wait (struct block_cache *c)
{
  struct timespec ts;

  clock_deadline_after (&ts, ROOM_POLL_SECONDS);
  pthread_cond_timedwait (&c->room_cond, &c->lock, &ts);
}

static void *worker_main (void *arg);

/* Start the pool on first use (after the daemon forked); lock held.
 * Returns 0 when at least one worker runs. */
static int
start_workers (struct block_cache *c)
{
  if (c->started > 0)
    return 0;
  c->threads = calloc (c->nworkers, sizeof *c->threads);
  if (c->threads == NULL)
    return error_set (ENOMEM, "block cache: out of memory");
  while (c->started < c->nworkers)
    {
      int r = thread_create ("ds-decode", &c->threads[c->started], NULL,
                             worker_main, c);
      if (r != 0)
        {
          if (c->started == 0)
            return error_set (r, "block cache: cannot start a decode thread: %s",
                              strerror (r));
          log_warning ("block cache: started only %u of %u decode threads: %s",
                       c->started, c->nworkers, strerror (r));
          break;
        }
      c->started++;
    }
  return 0;
}

/* Create a QUEUED entry for (client, index) and queue its job; lock
 * held, room made by the caller.  Returns 0 and *out or a negative
 * errno with a message. */
static int
entry_create (struct block_cache *c, struct block_cache_client *client,
              uint64_t index, size_t size, bool demand, struct entry **out)
{
  struct entry *e;
  size_t b;
  int r;

  r = start_workers (c);
  if (r < 0)
    return r;
  e = calloc (1, sizeof *e);
  if (e == NULL)
    return error_set (ENOMEM, "block cache: out of memory");
  e->buf = buffer_get (c, size);
  if (e->buf == MAP_FAILED)
    {
      int err = errno;
      free (e);
      return error_set (ENOMEM,
                        "block cache: %s: cannot allocate %zu bytes for block %llu: %s",
                        client->obj->name, size, (unsigned long long) index,
                        strerror (err));
    }
  e->obj = client->obj;
  e->index = index;
  e->size = size;
  e->mem = size;
  e->state = ENTRY_QUEUED;
  e->demand = demand;
  e->unread = !demand;
  e->in_table = true;
  b = bucket_of (client->obj, index);
  e->hnext = c->table[b];
  c->table[b] = e;
  lru_touch (c, e);
  c->used += size;
  c->stats.entries++;
  queue_push (demand ? &c->demand : &c->ahead, e);
  pthread_cond_signal (&c->work_cond);
  *out = e;
  return 0;
}

/* A pool thread: decode queued blocks, demand jobs first. */
static void *
worker_main (void *arg)
{
  struct block_cache *c = arg;

  pthread_mutex_lock (&c->lock);
  for (;;)
    {
      struct entry *e;
      struct block_cache_client *client;
      struct timespec t0, t1, c0, c1;
      int r;

      while (!c->stopping && c->demand.head == NULL && c->ahead.head == NULL)
        pthread_cond_wait (&c->work_cond, &c->lock);
      if (c->stopping)
        break;
      e = queue_pop (&c->demand);
      if (e == NULL)
        e = queue_pop (&c->ahead);
      /* An object with a queued job has a client (the last one to go
       * takes its jobs out of the queues). */
      client = e->obj->clients;
      e->state = ENTRY_RUNNING;
      client->running++;
      e->obj->running++;
      pthread_mutex_unlock (&c->lock);

      error_clear ();
      clock_gettime (CLOCK_MONOTONIC, &t0);
      clock_gettime (CLOCK_THREAD_CPUTIME_ID, &c0);
      r = client->decode (client->opaque, e->index, e->buf, e->size);
      clock_gettime (CLOCK_MONOTONIC, &t1);
      clock_gettime (CLOCK_THREAD_CPUTIME_ID, &c1);
      log_debug ("block cache: %s: block %llu (%s) decoded in %.1f ms "
                 "(%.1f ms of CPU)", e->obj->name,
                 (unsigned long long) e->index,
                 e->demand ? "demand" : "read-ahead",
                 (t1.tv_sec - t0.tv_sec) * 1e3
                 + (t1.tv_nsec - t0.tv_nsec) / 1e6,
                 (c1.tv_sec - c0.tv_sec) * 1e3
                 + (c1.tv_nsec - c0.tv_nsec) / 1e6);

      pthread_mutex_lock (&c->lock);
      client->running--;
      e->obj->running--;
      if (r == BLOCK_CACHE_ZERO)
        {
          /* Keep it as a hole: give the buffer back (untouched by a
           * decoder that noticed early), count only the entry. */
          c->used -= e->mem;
          buffer_release (c, e->buf, e->size);
          e->buf = NULL;
          e->zero = true;
          e->mem = sizeof *e;
          c->used += e->mem;
          c->stats.zero_blocks++;
          r = 0;
        }
      if (r == 0)
        {
          e->state = ENTRY_READY;
          c->stats.decoded_blocks++;
          c->stats.decoded_bytes += e->size;
        }
      else
        {
          const char *msg = error_message ();
          e->state = ENTRY_FAILED;
          e->err = -r;
          e->errmsg = strdup (msg[0] ? msg : strerror (-r));
          c->stats.failures++;
          log_error ("%s", msg[0] ? msg : strerror (-r));
          /* Drop it: nobody may find a failed block, so a later read
           * tries again (a network error may pass). */
          table_remove (c, e);
          if (e->pins == 0)
            entry_destroy (c, e);
        }
      make_room (c, 0, false);
      pthread_cond_broadcast (&c->done_cond);
      room_changed (c);
    }
  pthread_mutex_unlock (&c->lock);
  return NULL;
}

/* Create the cache; threads start on the first decode. */
int
block_cache_new (uint64_t max_bytes, unsigned workers,
                 struct block_cache **out)
{
  struct block_cache *c = calloc (1, sizeof *c);
  pthread_condattr_t attr;

  if (c == NULL)
    return error_set (ENOMEM, "block cache: out of memory");
  if (workers == 0)
    {
      long n = sysconf (_SC_NPROCESSORS_ONLN);
      workers = n > 0 && n < 256 ? (unsigned) n : 2;
    }
  c->nworkers = workers;
  c->max_bytes = max_bytes;
  pthread_mutex_init (&c->lock, NULL);
  pthread_cond_init (&c->work_cond, NULL);
  pthread_cond_init (&c->done_cond, NULL);
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&c->room_cond, &attr);
  pthread_condattr_destroy (&attr);
  *out = c;
  return 0;
}

/* Stop the pool and free every entry. */
void
block_cache_free (struct block_cache *c)
{
  unsigned i;

  if (c == NULL)
    return;
  pthread_mutex_lock (&c->lock);
  c->stopping = true;
  pthread_cond_broadcast (&c->work_cond);
  pthread_mutex_unlock (&c->lock);
  for (i = 0; i < c->started; i++)
    pthread_join (c->threads[i], NULL);
  while (c->lru_head)
    entry_destroy (c, c->lru_head);
  while (c->nspares > 0)
    spare_drop (c);
  free (c->threads);
  pthread_cond_destroy (&c->work_cond);
  pthread_cond_destroy (&c->done_cond);
  pthread_cond_destroy (&c->room_cond);
  pthread_mutex_destroy (&c->lock);
  free (c);
}

/* Free an object that has no clients and no entries; lock held. */
static void
object_free (struct block_cache *c, struct object *obj)
{
  struct object **pp;

  for (pp = &c->objects; *pp; pp = &(*pp)->next)
    if (*pp == obj)
      {
        *pp = obj->next;
        break;
      }
  free (obj->key);
  free (obj->name);
  free (obj);
}

/* Register one user of the cache, on the object of key if there is one. */
int
block_cache_client_new (struct block_cache *cache, const char *name,
                        const char *key, block_cache_decode_fn decode,
                        void *opaque, struct block_cache_client **out)
{
  struct block_cache_client *client = calloc (1, sizeof *client);
  struct object *obj = NULL;

  if (client == NULL)
    return error_set (ENOMEM, "block cache: out of memory");
  client->cache = cache;
  client->decode = decode;
  client->opaque = opaque;
  pthread_mutex_lock (&cache->lock);
  if (key)
    for (obj = cache->objects; obj; obj = obj->next)
      if (strcmp (obj->key, key) == 0)
        break;
  if (obj)
    cache->stats.shared_clients++;
  else
    {
      obj = calloc (1, sizeof *obj);
      if (obj == NULL || (obj->name = strdup (name)) == NULL
          || (key && (obj->key = strdup (key)) == NULL))
        {
          pthread_mutex_unlock (&cache->lock);
          if (obj)
            free (obj->name);
          free (obj);
          free (client);
          return error_set (ENOMEM, "block cache: out of memory");
        }
      if (key)
        {
          obj->next = cache->objects;
          cache->objects = obj;
        }
    }
  client->obj = obj;
  client->next = obj->clients;
  obj->clients = client;
  pthread_mutex_unlock (&cache->lock);
  *out = client;
  return 0;
}

/* Leave the client's object, after the jobs decoding with this client;
 * the last client drops the object's queued jobs and entries. */
void
block_cache_client_free (struct block_cache_client *client)
{
  struct block_cache *c;
  struct object *obj;
  struct block_cache_client **pp;
  struct entry *e, *next;

  if (client == NULL)
    return;
  c = client->cache;
  obj = client->obj;
  pthread_mutex_lock (&c->lock);
  client->leaving = true;
  for (pp = &obj->clients; *pp; pp = &(*pp)->next)
    if (*pp == client)
      {
        *pp = client->next;
        break;
      }
  if (obj->clients == NULL)
    for (e = c->lru_head; e; e = e->next)
      if (e->obj == obj && e->state == ENTRY_QUEUED)
        {
          queue_remove (e->demand ? &c->demand : &c->ahead, e);
          e->state = ENTRY_FAILED;
        }
  while (client->running > 0)
    pthread_cond_wait (&c->done_cond, &c->lock);
  if (obj->clients == NULL)
    {
      while (obj->running > 0)
        pthread_cond_wait (&c->done_cond, &c->lock);
      for (e = c->lru_head; e; e = next)
        {
          next = e->next;
          if (e->obj == obj)
            entry_destroy (c, e);
        }
      object_free (c, obj);
      room_changed (c);
    }
  pthread_mutex_unlock (&c->lock);
  free (client);
}

/* The entry of (client, index) for a reader: the one there is, or a
 * new demand job (*created) once it has room.  When what is in the way
 * is held by readers, decoded or copied from, wait for room in arrival
 * order, and after BLOCK_CACHE_ROOM_WAIT_SECONDS evict held blocks and
 * go over the bound.  Lock held, released while waiting.  Returns 0 or
 * a negative errno with a message. */
static int
reader_entry (struct block_cache *c, struct block_cache_client *client,
              uint64_t index, size_t size, struct entry **out,
              bool *created)
{
  struct room_waiter me = { NULL };
  bool waiting = false;
  double deadline = 0;
  int r = 0;

  *created = false;
  for (;;)
    {
      *out = lookup (c, client->obj, index);
      if (*out)
        break;
      if (c->room_head == NULL || c->room_head == &me)
        {
          bool late = waiting && clock_seconds () >= deadline;
          if (make_room (c, size, late) || c->used == 0 || late)
            {
              r = entry_create (c, client, index, size, true, out);
              *created = r == 0;
              break;
            }
        }
      if (!waiting)
        {
          waiting = true;
          deadline = clock_seconds () + BLOCK_CACHE_ROOM_WAIT_SECONDS;
          if (c->room_tail)
            c->room_tail->next = &me;
          else
            c->room_head = &me;
          c->room_tail = &me;
          c->stats.room_waits++;
        }
      room_wait (c);
    }
  if (waiting)
    room_leave (c, &me);
  return r;
}

static void unpin (struct block_cache *c, struct entry *e, size_t offset,
                   size_t count, bool hold);

/* Pin block index of the client READY, decoding it on a miss (c->lock
 * held on entry and on return).  0 and *out pinned (give it back with
 * unpin), or a negative errno with a message and nothing pinned. */
static int
pin_ready (struct block_cache *c, struct block_cache_client *client,
           uint64_t index, size_t block_size, struct entry **out)
{
  struct entry *e;
  bool created;
  int r;

  r = reader_entry (c, client, index, block_size, &e, &created);
  if (r < 0)
    return r;
  if (e->size != block_size)
    return error_set (EINVAL, "block cache: %s: block %llu asked with two sizes",
                      client->obj->name, (unsigned long long) index);
  if (created)
    c->stats.misses++;
  else if (e->state == ENTRY_READY)
    c->stats.hits++;
  else
    {
      c->stats.misses++;
      if (e->state == ENTRY_QUEUED && !e->demand)
        {
          /* A reader wants a read-ahead block now: move it forward. */
          queue_remove (&c->ahead, e);
          e->demand = true;
          queue_push (&c->demand, e);
        }
    }
  e->pins++;
  e->unread = false;
  lru_touch (c, e);
  while (e->state == ENTRY_QUEUED || e->state == ENTRY_RUNNING)
    pthread_cond_wait (&c->done_cond, &c->lock);
  if (e->state != ENTRY_READY)
    {
      r = error_set (e->err ? e->err : EIO, "%s",
                     e->errmsg ? e->errmsg : "block cache: decode failed");
      unpin (c, e, 0, 0, false);
      return r;
    }
  *out = e;
  return 0;
}

/* Give back a pin of pin_ready (c->lock held) after reading count bytes
 * at offset of the block; hold: see block_cache_read. */
static void
unpin (struct block_cache *c, struct entry *e, size_t offset, size_t count,
       bool hold)
{
  e->pins--;
  if (hold && (!e->finished || offset == 0))
    {
      /* A sequential reader holds its block until it has read as many
       * bytes as the block has, not merely its last byte: the kernel
       * sends several reads at once and they arrive out of order, so
       * the last one in the block can come before those in its middle
       * (the block was then evicted and decoded again for them, 41-48
       * decodes for 40 in tests/test_xz_readers.py).  A read that comes
       * after the block is finished does not hold it again, unless it
       * starts a new pass at the block's first byte; a pass that starts
       * there after a pause forgets what an earlier pass left unread (a
       * first read of 4 KiB that went no further would make the next
       * pass finish early). */
      double now = clock_seconds ();

      if (offset == 0 && !held (e, now))
        e->pass_read = 0;
      e->finished = false;
      e->pass_read += count;
      if (e->pass_read >= e->size)
        {
          e->finished = true;
          e->pass_read = 0;
          e->hold_until = 0;
        }
      else
        e->hold_until = now + BLOCK_CACHE_HOLD_SECONDS;
    }
  if (e->pins == 0 && !e->in_table)
    entry_destroy (c, e);
  else if (c->used > bound (c))
    make_room (c, 0, false);
  room_changed (c);
}

static int
check_range (struct block_cache_client *client, uint64_t index,
             size_t block_size, size_t offset, size_t count)
{
  if (offset > block_size || count > block_size - offset)
    return error_set (EINVAL, "block cache: %s: range %zu+%zu outside block %llu",
                      client->obj->name, offset, count, (unsigned long long) index);
  return 0;
}

/* Copy a range of a block out, decoding the block on a miss. */
int
block_cache_read (struct block_cache_client *client, uint64_t index,
                  size_t block_size, size_t offset, void *buf, size_t count,
                  bool hold)
{
  struct block_cache *c = client->cache;
  struct entry *e;
  int r;

  r = check_range (client, index, block_size, offset, count);
  if (r < 0)
    return r;
  pthread_mutex_lock (&c->lock);
  r = pin_ready (c, client, index, block_size, &e);
  if (r < 0)
    {
      pthread_mutex_unlock (&c->lock);
      return r;
    }
  pthread_mutex_unlock (&c->lock);
  if (e->zero)
    {
      memset (buf, 0, count);
      r = BLOCK_CACHE_ZERO;
    }
  else
    memcpy (buf, e->buf + offset, count);
  pthread_mutex_lock (&c->lock);
  unpin (c, e, offset, count, hold);
  pthread_mutex_unlock (&c->lock);
  return r;
}

/* A range of a block lent in place: the pin stays until the loan comes
 * back. */
struct block_cache_loan
{
  struct block_cache *cache;
  struct entry *e;
  size_t offset, count;
  bool hold;
};

int
block_cache_borrow (struct block_cache_client *client, uint64_t index,
                    size_t block_size, size_t offset, size_t count, bool hold,
                    const void **data, struct block_cache_loan **loan)
{
  struct block_cache *c = client->cache;
  struct block_cache_loan *l;
  struct entry *e;
  int r;

  *data = NULL;
  *loan = NULL;
  r = check_range (client, index, block_size, offset, count);
  if (r < 0)
    return r;
  l = malloc (sizeof *l);
  if (l == NULL)
    return error_set (ENOMEM, "block cache: %s: out of memory",
                      client->obj->name);
  pthread_mutex_lock (&c->lock);
  r = pin_ready (c, client, index, block_size, &e);
  if (r == 0 && e->zero)
    {
      unpin (c, e, offset, count, hold);
      r = BLOCK_CACHE_ZERO;
    }
  pthread_mutex_unlock (&c->lock);
  if (r != 0)
    {
      free (l);
      return r;
    }
  *l = (struct block_cache_loan) { c, e, offset, count, hold };
  *data = e->buf + offset;
  *loan = l;
  return 0;
}

void
block_cache_loan_return (void *loan)
{
  struct block_cache_loan *l = loan;
  struct block_cache *c = l->cache;

  pthread_mutex_lock (&c->lock);
  unpin (c, l->e, l->offset, l->count, l->hold);
  pthread_mutex_unlock (&c->lock);
  free (l);
}

/* Queue a background decode of a block when memory allows. */
bool
block_cache_prefetch (struct block_cache_client *client, uint64_t index,
                      size_t block_size)
{
  struct block_cache *c = client->cache;
  struct entry *e;
  bool ok = true;

  pthread_mutex_lock (&c->lock);
  e = lookup (c, client->obj, index);
  if (client->leaving)
    /* Called from a decode callback of a client being freed (which
     * waits for that callback): its jobs are being dropped. */
    ok = false;
  else if (e == NULL)
    {
      /* Read-ahead stops while the cache is under pressure: a miss
       * waits for room, or what readers hold or will read fills it. */
      if (c->room_head || busy_bytes (c) + block_size > bound (c))
        ok = false;
      else
        {
          make_room (c, block_size, false);
          if (entry_create (c, client, index, block_size, false, &e) < 0)
            {
              error_clear ();
              ok = false;
            }
        }
    }
  pthread_mutex_unlock (&c->lock);
  return ok;
}

/* Is the block there or on its way? */
bool
block_cache_has (struct block_cache_client *client, uint64_t index)
{
  struct block_cache *c = client->cache;
  struct entry *e;
  bool has;

  pthread_mutex_lock (&c->lock);
  e = lookup (c, client->obj, index);
  has = e != NULL && e->state != ENTRY_FAILED;
  pthread_mutex_unlock (&c->lock);
  return has;
}

/* The pool size. */
unsigned
block_cache_workers (struct block_cache *c)
{
  return c->nworkers;
}

/* A snapshot of the counters. */
void
block_cache_get_stats (struct block_cache *c, struct block_cache_stats *out)
{
  pthread_mutex_lock (&c->lock);
  *out = c->stats;
  out->used_bytes = c->used;
  out->max_bytes = bound (c);
  pthread_mutex_unlock (&c->lock);
}
