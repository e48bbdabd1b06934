/* diskshelf: read-ahead for transports that do not cache (NBD).
 *
 * The kernel sends a sequential reader's data as one read-ahead request
 * of at most 1 MiB at a time, and waits for it before asking for the
 * next window, so a transport with a round trip per request delivers
 * one request's worth of data per round trip.  This layer notices
 * sequential readers (up to RA_STREAMS at once) and keeps RA_WINDOW
 * bytes ahead of a lone one, fetched in RA_SLOT_BYTES pieces by one
 * fetcher thread per reader; the reader then finds its data already in
 * memory.  A read of exactly one slot (the kernel's 1 MiB read-ahead
 * requests at 1 MiB boundaries) takes the slot's buffer itself
 * (ra_take, through layer_take), so FUSE replies from it with no copy
 * here.  Several sequential readers at once bring their own
 * parallelism and get none (it only cost a copy per byte then).  Random
 * readers pass straight through.
 *
 * Coherence: every write, trim or zero through this layer drops what was
 * read ahead, before and after it runs, so no read issued after a write
 * returned sees older bytes.  Slots live only until their reader has
 * passed them.
 *
 * Thread model: lock protects every field below it; a stream's fetcher
 * starts on its first read-ahead (after the daemon forked) and frees the
 * stream's buffers after RA_IDLE_SECONDS without a read.  One fetch
 * at a time per stream measured faster than several on a busy machine
 * (the reader fetches a slot itself when it catches up, so two can
 * run).  Memory: at most RA_STREAMS * RA_STREAM_SLOTS slots of
 * RA_SLOT_BYTES.
 */
#include "readahead.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "error.h"
#include "seqdetect.h"
#include "thread.h"

#define RA_SLOT_BYTES (1024u * 1024)
/* The window is 8 slots; the other 8 let slots behind the reader wait
 * for their last copies while the window moves on. */
#define RA_WINDOW ((uint64_t) RA_SLOT_BYTES * 8)
#define RA_STREAM_SLOTS 16
#define RA_STREAMS 4
/* Read-ahead runs only for a reader that had no other sequential reader
 * beside it for this long. */
#define RA_ALONE_SECONDS 0.2
/* A stream unread for this long gives its slots' memory back. */
#define RA_IDLE_SECONDS 5
/* Reads in a row that continue each other before read-ahead starts. */
#define RA_TRIGGER 2
/* How far behind and ahead of the stream's end a read may start and
 * still belong to it (measured: fio's 1 MiB reads through the page cache
 * arrive up to 2 MiB ahead; eight dd's 6 MiB apart must stay apart). */
#define RA_BEHIND (2 * (uint64_t) RA_SLOT_BYTES)
#define RA_AHEAD (4 * (uint64_t) RA_SLOT_BYTES)

enum slot_state
{
  SLOT_FREE,      /* holds nothing */
  SLOT_QUEUED,    /* waiting for a worker */
  SLOT_FETCHING,  /* a worker reads into it */
  SLOT_READY,     /* holds [offset, offset+length) */
  SLOT_FAILED     /* the fetch failed; readers read for themselves */
};

struct ra_slot
{
  enum slot_state state;
  uint64_t offset;
  size_t length;
  uint64_t gen;        /* the layer's gen when it was queued */
  unsigned readers;    /* threads copying out of buf */
  char *buf;           /* RA_SLOT_BYTES, allocated on first use */
};

/* One sequential reader: where its next read should start and how far
 * ahead its slots reach. */
struct ra_stream
{
  struct seq_detector seq;  /* end: where its next read should start;
                               run: consecutive reads that continued it */
  uint64_t ahead;
  uint64_t used;       /* tick of the last read, for replacement */
  double last_read;    /* clock_seconds () of the last read */
  struct ra_slot slots[RA_STREAM_SLOTS];
  struct ra_layer *owner;
  pthread_cond_t work; /* a slot was queued, or closing */
  pthread_t fetcher;
  bool has_fetcher;
};

struct ra_layer
{
  struct layer layer;
  pthread_mutex_t lock;
  pthread_cond_t done;       /* a fetch finished */
  struct ra_stream streams[RA_STREAMS];   /* protected by lock */
  uint64_t gen;              /* protected by lock: bumped by writes */
  uint64_t tick;             /* protected by lock */
  bool closing;              /* protected by lock */
  uint64_t hits, misses, fetched, failed;  /* protected by lock */
  uint64_t taken;            /* protected by lock: slots given away */
};

/* The queued slot of st with the lowest offset, or NULL (lock held). */
static struct ra_slot *
next_queued (struct ra_stream *st)
{
  struct ra_slot *best = NULL;
  unsigned i;

  for (i = 0; i < RA_STREAM_SLOTS; i++)
    {
      struct ra_slot *slot = &st->slots[i];
      if (slot->state == SLOT_QUEUED
          && (best == NULL || slot->offset < best->offset))
        best = slot;
    }
  return best;
}

/* Fetch one slot from the lower layer (lock held on entry and exit,
 * dropped while reading). */
static void
fetch_slot (struct ra_layer *ra, struct ra_slot *slot)
{
  uint64_t offset = slot->offset, gen = slot->gen;
  size_t length = slot->length;
  int r;

  slot->state = SLOT_FETCHING;
  if (slot->buf == NULL)
    slot->buf = malloc (RA_SLOT_BYTES);
  pthread_mutex_unlock (&ra->lock);
  r = slot->buf ? layer_pread (ra->layer.lower, slot->buf, length, offset)
                : -ENOMEM;
  pthread_mutex_lock (&ra->lock);
  if (r < 0)
    ra->failed++;
  else
    ra->fetched++;
  /* A write ran meanwhile: what was read may be older than it. */
  slot->state = r < 0 ? SLOT_FAILED : gen == ra->gen ? SLOT_READY : SLOT_FREE;
  pthread_cond_broadcast (&ra->done);
}

/* Give back the memory of a stream nobody has read for a while (lock
 * held): an entry that was read once must not keep its window for
 * good. */
static void
release_idle (struct ra_stream *st)
{
  unsigned i;

  for (i = 0; i < RA_STREAM_SLOTS; i++)
    {
      struct ra_slot *slot = &st->slots[i];
      if (slot->readers > 0 || slot->state == SLOT_FETCHING
          || slot->state == SLOT_QUEUED)
        continue;
      free (slot->buf);
      slot->buf = NULL;
      slot->state = SLOT_FREE;
    }
  st->seq.run = 0;
  st->ahead = st->seq.end;
}

/* A stream's fetcher: fetch its queued slots in order until the layer
 * closes. */
static void *
ra_fetcher (void *arg)
{
  struct ra_stream *st = arg;
  struct ra_layer *ra = st->owner;

  error_clear ();
  pthread_mutex_lock (&ra->lock);
  while (!ra->closing)
    {
      struct ra_slot *slot = next_queued (st);
      uint64_t used = st->used;
      struct timespec until;

      if (slot)
        {
          fetch_slot (ra, slot);
          continue;
        }
      clock_gettime (CLOCK_MONOTONIC, &until);
      until.tv_sec += RA_IDLE_SECONDS;
      if (pthread_cond_timedwait (&st->work, &ra->lock, &until) == ETIMEDOUT
          && st->used == used)
        release_idle (st);
    }
  pthread_mutex_unlock (&ra->lock);
  return NULL;
}

/* The stream a read at offset continues, or NULL (lock held). */
static struct ra_stream *
stream_continued (struct ra_layer *ra, uint64_t offset)
{
  unsigned s;

  for (s = 0; s < RA_STREAMS; s++)
    {
      struct ra_stream *st = &ra->streams[s];
      /* Requests of one reader arrive out of order (the kernel has a
       * read-ahead window or two in flight): a little behind counts too,
       * and once read-ahead runs, a little ahead.  Not more: readers a
       * few MiB apart must not merge into one stream. */
      if (st->seq.run > 0
          && seq_within (&st->seq, offset, RA_BEHIND,
                         st->seq.run >= RA_TRIGGER ? RA_AHEAD : 0))
        return st;
    }
  return NULL;
}

/* The stream a read at offset continues, or the least recently used one
 * restarted at offset (lock held). */
static struct ra_stream *
stream_for (struct ra_layer *ra, uint64_t offset)
{
  struct ra_stream *lru = stream_continued (ra, offset);
  unsigned s, i;

  if (lru)
    return lru;
  lru = &ra->streams[0];
  for (s = 1; s < RA_STREAMS; s++)
    if (ra->streams[s].used < lru->used)
      lru = &ra->streams[s];
  lru->seq.run = 0;
  lru->seq.end = lru->ahead = offset;
  for (i = 0; i < RA_STREAM_SLOTS; i++)
    if (lru->slots[i].state == SLOT_QUEUED)
      lru->slots[i].state = SLOT_FREE;
  return lru;
}

/* A slot of st that can take new data: free, or done with and behind
 * the reader (lock held); NULL when all are busy or ahead. */
static struct ra_slot *
reusable_slot (struct ra_stream *st)
{
  unsigned i;

  for (i = 0; i < RA_STREAM_SLOTS; i++)
    {
      struct ra_slot *slot = &st->slots[i];
      if (slot->readers > 0)
        continue;
      if (slot->state == SLOT_FREE)
        return slot;
      if ((slot->state == SLOT_READY || slot->state == SLOT_FAILED)
          && (slot->offset + slot->length <= st->seq.end
              || slot->offset >= st->seq.end + RA_WINDOW))
        return slot;
    }
  return NULL;
}

/* Queue slots until st has RA_WINDOW bytes ahead of its reader in
 * flight (lock held). */
static void
schedule (struct ra_layer *ra, struct ra_stream *st)
{
  bool queued = false;

  if (st->ahead < st->seq.end)
    st->ahead = st->seq.end;
  while (st->ahead < ra->layer.size && st->ahead < st->seq.end + RA_WINDOW)
    {
      struct ra_slot *slot = reusable_slot (st);
      uint64_t left = ra->layer.size - st->ahead;

      if (slot == NULL)
        break;
      slot->state = SLOT_QUEUED;
      slot->offset = st->ahead;
      slot->length = left < RA_SLOT_BYTES ? (size_t) left : RA_SLOT_BYTES;
      slot->gen = ra->gen;
      st->ahead += slot->length;
      queued = true;
    }
  if (!queued)
    return;
  /* Without a fetcher the reader fetches each slot itself when it gets
   * there: slower, still correct. */
  if (!st->has_fetcher)
    st->has_fetcher = thread_create ("ds-readahead", &st->fetcher, NULL,
                                     ra_fetcher, st) == 0;
  pthread_cond_signal (&st->work);
}

/* The live slot of st holding offset, or NULL (lock held). */
static struct ra_slot *
slot_at (struct ra_layer *ra, struct ra_stream *st, uint64_t offset)
{
  unsigned i;

  for (i = 0; i < RA_STREAM_SLOTS; i++)
    {
      struct ra_slot *slot = &st->slots[i];
      if (slot->state != SLOT_FREE && slot->gen == ra->gen
          && offset >= slot->offset && offset < slot->offset + slot->length)
        return slot;
    }
  return NULL;
}

/* Copy what the stream's slots hold of [offset, offset+count) into buf,
 * from the start; returns how many bytes were served (lock held,
 * dropped while copying). */
static size_t
serve_from_slots (struct ra_layer *ra, struct ra_stream *st, char *buf,
                  size_t count, uint64_t offset)
{
  size_t served = 0;

  while (served < count)
    {
      struct ra_slot *slot = slot_at (ra, st, offset + served);
      size_t k, at;

      if (slot == NULL)
        break;
      if (slot->state == SLOT_QUEUED)
        /* No worker has got to it: read it here rather than wait. */
        fetch_slot (ra, slot);
      while (slot->state == SLOT_FETCHING)
        pthread_cond_wait (&ra->done, &ra->lock);
      if (slot->state != SLOT_READY || slot->gen != ra->gen
          || offset + served < slot->offset
          || offset + served >= slot->offset + slot->length)
        break;
      at = (size_t) (offset + served - slot->offset);
      k = slot->length - at;
      if (k > count - served)
        k = count - served;
      slot->readers++;
      pthread_mutex_unlock (&ra->lock);
      memcpy (buf + served, slot->buf + at, k);
      pthread_mutex_lock (&ra->lock);
      slot->readers--;
      served += k;
    }
  return served;
}

/* Is another sequential reader at work right now (lock held)?  Then the
 * readers bring their own parallelism and the machine is busy with it:
 * read-ahead would only add a copy per byte (measured: four sequential
 * readers 1026 MB/s without it, 891 with it). */
static bool
other_reader (struct ra_layer *ra, const struct ra_stream *st)
{
  unsigned s;

  for (s = 0; s < RA_STREAMS; s++)
    {
      const struct ra_stream *o = &ra->streams[s];
      if (o != st && o->seq.run >= RA_TRIGGER
          && st->last_read - o->last_read < RA_ALONE_SECONDS)
        return true;
    }
  return false;
}

/* A read of st begins: note when (lock held). */
static void
read_starts (struct ra_layer *ra, struct ra_stream *st)
{
  st->used = ++ra->tick;
  st->last_read = clock_seconds ();
  st->seq.run++;
}

/* A read of st has been served from its slots: only now move the stream
 * on (its slots behind the new end are reused), and keep its window
 * full (lock held). */
static void
read_ends (struct ra_layer *ra, struct ra_stream *st, uint64_t offset,
           size_t count)
{
  if (offset + count > st->seq.end)
    st->seq.end = offset + count;
  if (st->seq.run >= RA_TRIGGER && !other_reader (ra, st))
    schedule (ra, st);
}

/* Give away the slot holding exactly [offset, offset+count), when a
 * stream's reader has reached it: its buffer goes to the caller, and the
 * slot takes a new one at its next fetch.  The kernel's read-ahead asks
 * for 1 MiB at 1 MiB boundaries, the size and alignment of the slots,
 * so a lone sequential reader's data then reaches FUSE with no copy
 * here.  Returns 0 (nothing taken, no state changed) when the data is
 * not in one such slot: the caller then reads with pread. */
static int
ra_take (struct layer *l, size_t count, uint64_t offset, void **out)
{
  struct ra_layer *ra = (struct ra_layer *) l;
  struct ra_stream *st;
  struct ra_slot *slot;
  int taken = 0;

  pthread_mutex_lock (&ra->lock);
  st = stream_continued (ra, offset);
  slot = st ? slot_at (ra, st, offset) : NULL;
  if (slot && slot->offset == offset && slot->length == count)
    {
      if (slot->state == SLOT_QUEUED)
        fetch_slot (ra, slot);
      while (slot->state == SLOT_FETCHING)
        pthread_cond_wait (&ra->done, &ra->lock);
      /* While the lock was dropped the slot may have been refilled. */
      if (slot->state == SLOT_READY && slot->gen == ra->gen
          && slot->readers == 0 && slot->offset == offset
          && slot->length == count && slot->buf)
        {
          *out = slot->buf;
          slot->buf = NULL;
          slot->state = SLOT_FREE;
          read_starts (ra, st);
          ra->hits++;
          ra->taken++;
          read_ends (ra, st, offset, count);
          taken = 1;
        }
    }
  pthread_mutex_unlock (&ra->lock);
  return taken;
}

/* Read: from the read-ahead slots when a sequential reader's data is
 * there, the rest from the lower layer. */
static int
ra_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  struct ra_layer *ra = (struct ra_layer *) l;
  struct ra_stream *st;
  size_t served;

  pthread_mutex_lock (&ra->lock);
  st = stream_for (ra, offset);
  read_starts (ra, st);
  served = serve_from_slots (ra, st, buf, count, offset);
  if (served > 0)
    ra->hits++;
  else
    ra->misses++;
  read_ends (ra, st, offset, count);
  pthread_mutex_unlock (&ra->lock);
  if (served == count)
    return 0;
  return layer_pread (l->lower, (char *) buf + served, count - served,
                      offset + served);
}

/* Forget everything read ahead: a write is about to run or has run
 * (lock taken here).  Slots being fetched are dropped when they finish;
 * slots being copied from are left to their readers. */
static void
invalidate (struct ra_layer *ra)
{
  unsigned s, i;

  pthread_mutex_lock (&ra->lock);
  ra->gen++;
  for (s = 0; s < RA_STREAMS; s++)
    {
      struct ra_stream *st = &ra->streams[s];
      st->seq.run = 0;
      st->ahead = st->seq.end;
      for (i = 0; i < RA_STREAM_SLOTS; i++)
        if (st->slots[i].state != SLOT_FETCHING && st->slots[i].readers == 0)
          st->slots[i].state = SLOT_FREE;
    }
  pthread_mutex_unlock (&ra->lock);
}

/* Write through, dropping read-ahead before and after. */
static int
ra_pwrite (struct layer *l, const void *buf, size_t count, uint64_t offset)
{
  struct ra_layer *ra = (struct ra_layer *) l;
  int r;

  invalidate (ra);
  r = layer_pwrite (l->lower, buf, count, offset);
  invalidate (ra);
  return r;
}

/* Trim through, dropping read-ahead before and after. */
static int
ra_trim (struct layer *l, uint64_t offset, uint64_t length)
{
  struct ra_layer *ra = (struct ra_layer *) l;
  int r;

  invalidate (ra);
  r = layer_trim (l->lower, offset, length);
  invalidate (ra);
  return r;
}

/* Zero through, dropping read-ahead before and after. */
static int
ra_zero (struct layer *l, uint64_t offset, uint64_t length)
{
  struct ra_layer *ra = (struct ra_layer *) l;
  int r;

  invalidate (ra);
  r = layer_zero (l->lower, offset, length);
  invalidate (ra);
  return r;
}

/* Flush: nothing of ours to flush. */
static int
ra_flush (struct layer *l)
{
  return layer_flush (l->lower);
}

/* Extents come from below. */
static int
ra_extent (struct layer *l, uint64_t offset, struct layer_extent *out)
{
  return layer_extent (l->lower, offset, out);
}

/* Hints go below. */
static int
ra_prefetch (struct layer *l, uint64_t offset, uint64_t length)
{
  layer_prefetch (l->lower, offset, length);
  return 0;
}

/* Status lines: how often readers found their data read ahead. */
static void
ra_status (struct layer *l, FILE *out)
{
  struct ra_layer *ra = (struct ra_layer *) l;
  unsigned s, i, buffers = 0;

  pthread_mutex_lock (&ra->lock);
  for (s = 0; s < RA_STREAMS; s++)
    for (i = 0; i < RA_STREAM_SLOTS; i++)
      buffers += ra->streams[s].slots[i].buf != NULL;
  fprintf (out, "readahead-memory: %u MiB\n",
           buffers * (RA_SLOT_BYTES >> 20));
  fprintf (out, "readahead-hits: %llu\n", (unsigned long long) ra->hits);
  fprintf (out, "readahead-misses: %llu\n", (unsigned long long) ra->misses);
  fprintf (out, "readahead-taken: %llu\n", (unsigned long long) ra->taken);
  fprintf (out, "readahead-fetched: %llu\n",
           (unsigned long long) ra->fetched);
  fprintf (out, "readahead-failed: %llu\n", (unsigned long long) ra->failed);
  pthread_mutex_unlock (&ra->lock);
}

/* Stop the workers, free the slots, close the layer below. */
static void
ra_close (struct layer *l)
{
  struct ra_layer *ra = (struct ra_layer *) l;
  unsigned s, i;

  pthread_mutex_lock (&ra->lock);
  ra->closing = true;
  for (s = 0; s < RA_STREAMS; s++)
    pthread_cond_signal (&ra->streams[s].work);
  pthread_mutex_unlock (&ra->lock);
  for (s = 0; s < RA_STREAMS; s++)
    {
      struct ra_stream *st = &ra->streams[s];
      if (st->has_fetcher)
        pthread_join (st->fetcher, NULL);
      pthread_cond_destroy (&st->work);
      for (i = 0; i < RA_STREAM_SLOTS; i++)
        free (st->slots[i].buf);
    }
  pthread_mutex_destroy (&ra->lock);
  pthread_cond_destroy (&ra->done);
  layer_close (l->lower);
  free (ra);
}

static const struct layer_ops ra_ops = {
  .name = "readahead",
  .pread = ra_pread,
  .take = ra_take,
  .flush = ra_flush,
  .extent = ra_extent,
  .prefetch = ra_prefetch,
  .status = ra_status,
  .close = ra_close,
};

static const struct layer_ops ra_writable_ops = {
  .name = "readahead",
  .pread = ra_pread,
  .take = ra_take,
  .pwrite = ra_pwrite,
  .flush = ra_flush,
  .trim = ra_trim,
  .zero = ra_zero,
  .extent = ra_extent,
  .prefetch = ra_prefetch,
  .status = ra_status,
  .close = ra_close,
};

/* Put read-ahead on top of lower (taking ownership on success). */
int
layer_readahead_open (struct layer *lower, struct layer **out)
{
  struct ra_layer *ra = calloc (1, sizeof *ra);
  pthread_condattr_t attr;
  unsigned s;

  if (ra == NULL)
    return error_set (ENOMEM, "readahead: out of memory");
  pthread_mutex_init (&ra->lock, NULL);
  pthread_cond_init (&ra->done, NULL);
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  for (s = 0; s < RA_STREAMS; s++)
    {
      ra->streams[s].owner = ra;
      pthread_cond_init (&ra->streams[s].work, &attr);
    }
  pthread_condattr_destroy (&attr);
  ra->layer.ops = lower->writable ? &ra_writable_ops : &ra_ops;
  ra->layer.lower = lower;
  ra->layer.size = lower->size;
  ra->layer.writable = lower->writable;
  ra->layer.immutable = lower->immutable;
  *out = &ra->layer;
  return 0;
}
