/* diskshelf: the single-block path of the xz layer.
 *
 * A block too large to decode into memory (plain `xz` writes one block
 * for the whole file) cannot be read at random: the only way to byte N
 * is to decode bytes 0..N.  So the first reader starts one background
 * thread that decodes the whole file front to back, in chunks of
 * DISK_CACHE_CHUNK bytes:
 *
 *  - with a disk cache, every chunk is written there as soon as it is
 *    decoded, and the thread runs to the end.  Reads behind the frontier
 *    come from the disk cache at once; reads ahead of it wait.  Later
 *    reads, and later daemon runs (the object is keyed by the source and
 *    validated by the compressed size and a fingerprint of the indexes),
 *    read from the disk cache: each byte is decoded once, ever.
 *  - without one, only a window of recent chunks stays in memory.  The
 *    thread decodes a little ahead of the furthest reader and pauses; a
 *    read behind the window restarts decoding from the beginning of the
 *    file.  Sequential readers are fine; anything else is slow, and the
 *    log says so when the entry opens.
 *
 * Integrity: the stream decoder verifies each block's check when the
 * block ends, so the bytes of a block are served before its check is
 * known (that is the point of this path; multi-block files verify
 * before serving).  A failure is logged, the object is dropped from the
 * disk cache, and every read from the start of the failing block on
 * gets EIO.
 *
 * Thread model: any number of readers; one decoder thread per entry.
 * Everything marked below is protected by lock.
 */
#include "xz-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <lzma.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diskcache.h"
#include "clock.h"
#include "error.h"
#include "thread.h"

#define CHUNK ((uint64_t) DISK_CACHE_CHUNK)
#define INPUT_SIZE (1024 * 1024)
#define DEFAULT_STALL_TIMEOUT 120.0

enum single_state { SINGLE_IDLE, SINGLE_DECODING, SINGLE_DONE, SINGLE_FAILED };

struct xz_single
{
  struct layer *lower;          /* borrowed */
  char *src;
  const struct xz_index *idx;   /* borrowed */
  uint64_t size;
  struct disk_cache_object *obj;  /* NULL: no disk cache */
  double timeout;
  size_t nslots;
  unsigned char **slots;        /* chunk c lives in slots[c % nslots] */
  unsigned char *cur;           /* the decoder's own chunk buffer */
  char key[64];

  pthread_mutex_t lock;
  pthread_cond_t progress;      /* frontier moved, failure, restart */
  pthread_cond_t want;          /* the decoder may go on */
  pthread_t thread;
  bool thread_started;          /* protected by lock */
  bool stop;                    /* protected by lock */
  bool restart;                 /* protected by lock: a reader fell behind */
  bool complete;                /* protected by lock: all in the disk cache */
  enum single_state state;      /* protected by lock */
  uint64_t frontier;            /* protected by lock: bytes decoded this run */
  uint64_t wanted;              /* protected by lock: furthest byte waited for */
  uint64_t fail_at;             /* protected by lock: first bad byte */
  int err;                      /* protected by lock */
  char *errmsg;                 /* protected by lock */
  unsigned runs;                /* protected by lock: decodes started */
  double started;               /* protected by lock: time the run began */
  double finished;              /* protected by lock: seconds the run took */
};

/* The first chunk still in the window; lock held. */
static uint64_t
window_first_chunk (const struct xz_single *s)
{
  uint64_t chunks = (s->frontier + CHUNK - 1) / CHUNK;

  return chunks > s->nslots ? chunks - s->nslots : 0;
}

/* True when the disk cache is linked in and in use. */
static bool
have_disk_cache (const struct xz_single *s)
{
  return s->obj != NULL;
}

/* Record a decode failure at the frontier; lock held.  The chunks this
 * run stored were never verified, so they leave the disk cache. */
static void
fail_locked (struct xz_single *s, int err, const char *msg)
{
  if (have_disk_cache (s))
    disk_cache_invalidate (s->obj);
  s->state = SINGLE_FAILED;
  /* Every byte of the failing block is suspect, not only those after
   * the point where liblzma noticed: fail from the start of the block
   * holding the frontier (or an earlier one). */
  s->fail_at = s->idx->nblocks == 0 ? 0
    : s->idx->blocks[xz_index_find (s->idx, s->frontier < s->size
                                    ? s->frontier : s->size - 1)].uoffset;
  s->err = err;
  free (s->errmsg);
  s->errmsg = strdup (msg);
  log_error ("%s", msg);
  pthread_cond_broadcast (&s->progress);
}

/* Decode the next chunk (len bytes) into s->cur; after the last chunk,
 * also reach the end of the last stream (which verifies its checks).
 * Returns 0, or a negative errno with a message. */
static int
decode_chunk (struct xz_single *s, lzma_stream *strm, unsigned char *in,
              uint64_t *cpos, size_t len, bool last)
{
  unsigned char extra[1];
  bool draining = false;
  lzma_ret ret;
  int r;

  strm->next_out = s->cur;
  strm->avail_out = len;
  for (;;)
    {
      if (strm->avail_in == 0 && *cpos < s->idx->csize)
        {
          size_t n = s->idx->csize - *cpos < INPUT_SIZE
            ? (size_t) (s->idx->csize - *cpos) : INPUT_SIZE;
          r = layer_pread (s->lower, in, n, *cpos);
          if (r < 0)
            return error_prefix (-r, "xz: %s: reading compressed data at %"
                                 PRIu64, s->src, *cpos);
          *cpos += n;
          strm->next_in = in;
          strm->avail_in = n;
        }
      if (strm->avail_out == 0)
        {
          if (draining)
            return error_set (EIO, "xz: %s: decoded data is longer than "
                              "the index says", s->src);
          if (!last)
            return 0;
          draining = true;
          strm->next_out = extra;
          strm->avail_out = sizeof extra;
        }
      ret = lzma_code (strm, *cpos < s->idx->csize ? LZMA_RUN : LZMA_FINISH);
      if (ret == LZMA_STREAM_END)
        {
          if (draining ? strm->avail_out == 0
              : !last || strm->avail_out != 0)
            return error_set (EIO, "xz: %s: decoded size differs from "
                              "the index", s->src);
          return 0;
        }
      if (ret == LZMA_MEMLIMIT_ERROR && s->idx->nblocks > 0)
        {
          size_t k = xz_index_find (s->idx, strm->total_out < s->size
                                    ? strm->total_out : s->size - 1);
          return xz_memlimit_error (s->src, lzma_memusage (strm),
                                    &s->idx->blocks[k], k);
        }
      if (ret != LZMA_OK)
        return error_set (EIO, "xz: %s: decoding failed near image offset %"
                          PRIu64 ": %s (liblzma code %d)", s->src,
                          (uint64_t) strm->total_out,
                          ret == LZMA_DATA_ERROR
                          ? "corrupt data or check mismatch"
                          : ret == LZMA_BUF_ERROR
                          ? "compressed data ends too early"
                          : ret == LZMA_MEM_ERROR ? "out of memory"
                          : "decoder error", (int) ret);
    }
}

/* One run of the decoder from the start of the file.  Returns true when
 * a restart was asked for, false when the run ended (done, failed or
 * stopped). */
static bool
decode_run (struct xz_single *s, unsigned char *in)
{
  lzma_stream strm = LZMA_STREAM_INIT;
  uint64_t cpos = 0, produced = 0;
  unsigned next_tenth = 1;
  bool restart = false;
  lzma_ret ret;

  /* The same bound on a decoder's memory as on the block path: the
   * dictionary a block header declares (up to 4 GiB) is not taken on
   * trust. */
  ret = lzma_stream_decoder (&strm, XZ_DECODER_MEMLIMIT, LZMA_CONCATENATED);
  if (ret != LZMA_OK)
    {
      pthread_mutex_lock (&s->lock);
      fail_locked (s, ENOMEM, "xz: cannot start the decoder");
      pthread_mutex_unlock (&s->lock);
      return false;
    }
  while (produced < s->size)
    {
      size_t len = s->size - produced < CHUNK ? (size_t) (s->size - produced)
        : (size_t) CHUNK;
      uint64_t c = produced / CHUNK;
      unsigned char *slot;
      int r;

      /* Without a disk cache, stay a little ahead of the readers only. */
      pthread_mutex_lock (&s->lock);
      while (!have_disk_cache (s) && !s->stop && !s->restart
             && s->frontier >= s->wanted + (s->nslots / 2) * CHUNK)
        pthread_cond_wait (&s->want, &s->lock);
      restart = s->restart;
      if (s->stop || restart)
        {
          pthread_mutex_unlock (&s->lock);
          break;
        }
      pthread_mutex_unlock (&s->lock);

      r = decode_chunk (s, &strm, in, &cpos, len, produced + len == s->size);
      pthread_mutex_lock (&s->lock);
      if (r < 0)
        {
          fail_locked (s, -r, error_message ());
          pthread_mutex_unlock (&s->lock);
          break;
        }
      slot = s->slots[c % s->nslots];
      s->slots[c % s->nslots] = s->cur;
      s->cur = slot;
      produced += len;
      s->frontier = produced;
      pthread_cond_broadcast (&s->progress);
      pthread_mutex_unlock (&s->lock);

      if (have_disk_cache (s) && !disk_cache_has (s->obj, c * CHUNK, len))
        disk_cache_write (s->obj, s->slots[c % s->nslots], len, c * CHUNK,
                          0);
      if (produced * 10 >= next_tenth * s->size && s->size >= 64 * CHUNK)
        {
          double t;
          pthread_mutex_lock (&s->lock);
          t = clock_seconds () - s->started;
          pthread_mutex_unlock (&s->lock);
          log_info ("xz: %s: decoded %u%% (%" PRIu64 " of %" PRIu64
                    " MiB) at %.0f MB/s", s->src, next_tenth * 10,
                    produced >> 20, s->size >> 20,
                    t > 0 ? produced / t / 1e6 : 0.0);
          while (produced * 10 >= next_tenth * s->size)
            next_tenth++;
        }
    }
  lzma_end (&strm);

  pthread_mutex_lock (&s->lock);
  if (produced == s->size && s->state == SINGLE_DECODING)
    {
      s->state = SINGLE_DONE;
      s->finished = clock_seconds () - s->started;
      if (have_disk_cache (s)
          && disk_cache_object_present (s->obj) >= s->size)
        {
          s->complete = true;
          log_info ("xz: %s: decoded completely in %.1f s; from now on, and "
                    "after restarts, served from the disk cache", s->src,
                    s->finished);
        }
      else
        log_info ("xz: %s: decoded completely in %.1f s", s->src,
                  s->finished);
    }
  pthread_mutex_unlock (&s->lock);
  return restart;
}

/* The decoder thread: runs, and runs again when a reader fell behind. */
static void *
decoder_main (void *arg)
{
  struct xz_single *s = arg;
  unsigned char *in = malloc (INPUT_SIZE);

  pthread_mutex_lock (&s->lock);
  if (in == NULL)
    fail_locked (s, ENOMEM, "xz: out of memory");
  while (in && !s->stop)
    {
      if (s->state == SINGLE_FAILED && !s->restart)
        {
          pthread_cond_wait (&s->want, &s->lock);
          continue;
        }
      if (s->state != SINGLE_DONE || s->restart)
        {
          if (s->runs > 0)
            log_warning ("xz: %s: a read behind the decoded window restarts "
                         "decoding from the beginning (run %u)", s->src,
                         s->runs + 1);
          s->runs++;
          s->restart = false;
          s->frontier = 0;
          s->state = SINGLE_DECODING;
          s->started = clock_seconds ();
          pthread_mutex_unlock (&s->lock);
          decode_run (s, in);
          pthread_mutex_lock (&s->lock);
          continue;
        }
      pthread_cond_wait (&s->want, &s->lock);
    }
  pthread_mutex_unlock (&s->lock);
  free (in);
  xz_block_thread_cleanup ();
  return NULL;
}

/* Make the validators for the disk cache object. */
static void
make_validators (struct xz_single *s, struct disk_cache_validators *v)
{
  snprintf (s->key, sizeof s->key, "xz-%" PRIu64 "-%016" PRIx64,
            s->idx->csize, s->idx->fingerprint);
  memset (v, 0, sizeof *v);
  v->kind = "xz";
  v->key = s->src;
  v->size = s->size;
  v->etag = s->key;
}

/* Set up the single-block path; no thread starts before the first read. */
int
xz_single_new (const struct xz_single_config *cfg, struct xz_single **out)
{
  struct xz_single *s = calloc (1, sizeof *s);
  size_t i;
  int r;

  if (s == NULL || (s->src = strdup (cfg->src)) == NULL)
    {
      free (s);
      return error_set (ENOMEM, "xz: out of memory");
    }
  s->lower = cfg->lower;
  s->idx = cfg->index;
  s->size = cfg->index->usize;
  s->timeout = cfg->timeout > 0 ? cfg->timeout : DEFAULT_STALL_TIMEOUT;
  pthread_mutex_init (&s->lock, NULL);
  pthread_cond_init (&s->want, NULL);
  {
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&s->progress, &attr);
    pthread_condattr_destroy (&attr);
  }

  if (cfg->disk_cache)
    {
      struct disk_cache_validators v;
      make_validators (s, &v);
      r = disk_cache_open_object (cfg->disk_cache, &v, &s->obj);
      if (r < 0)
        {
          log_warning ("xz: %s: disk cache unusable, decoding without it: %s",
                       s->src, error_message ());
          error_clear ();
          s->obj = NULL;
        }
    }
  s->nslots = have_disk_cache (s) ? 8 : cfg->window / CHUNK;
  if (s->nslots < 4)
    s->nslots = 4;
  s->slots = calloc (s->nslots, sizeof *s->slots);
  s->cur = malloc (CHUNK);
  if (s->slots == NULL || s->cur == NULL)
    goto nomem;
  for (i = 0; i < s->nslots; i++)
    if ((s->slots[i] = malloc (CHUNK)) == NULL)
      goto nomem;

  if (have_disk_cache (s) && disk_cache_object_present (s->obj) >= s->size)
    {
      s->complete = true;
      s->state = SINGLE_DONE;
      log_info ("xz: %s: the decoded image (%" PRIu64 " MiB) is in the disk "
                "cache: served from there, not decoding", s->src,
                s->size >> 20);
    }
  *out = s;
  return 0;

 nomem:
  xz_single_free (s);
  return error_set (ENOMEM, "xz: %s: out of memory", cfg->src);
}

/* Start the decoder thread if it is not running; lock held. */
static int
ensure_thread (struct xz_single *s)
{
  int r;

  if (s->thread_started)
    return 0;
  r = thread_create ("ds-xz-single", &s->thread, NULL, decoder_main, s);
  if (r != 0)
    return error_set (r, "xz: %s: cannot start the decoder thread: %s",
                      s->src, strerror (r));
  s->thread_started = true;
  return 0;
}

/* The complete decoded image's cache file, pinned (see xz-internal.h). */
int
xz_single_lend (struct xz_single *s, int *fd)
{
  bool complete;

  pthread_mutex_lock (&s->lock);
  complete = s->complete;
  pthread_mutex_unlock (&s->lock);
  if (!complete || !have_disk_cache (s))
    return -ENODATA;
  return disk_cache_pin_whole (s->obj, fd);
}

void
xz_single_unlend (void *arg)
{
  struct xz_single *s = arg;

  disk_cache_unpin_whole (s->obj);
}

/* Read from the disk cache, the window, or wait for the decoder. */
int
xz_single_read (struct xz_single *s, void *buf, size_t count,
                uint64_t offset)
{
  uint64_t end = offset + count;
  uint64_t last_frontier;
  double last_progress;
  int r;

  if (have_disk_cache (s)
      && disk_cache_read (s->obj, buf, count, offset) == 0)
    return 0;
  error_clear ();

  pthread_mutex_lock (&s->lock);
  r = ensure_thread (s);
  if (r < 0)
    goto out;
  if (end > s->wanted)
    {
      s->wanted = end;
      pthread_cond_signal (&s->want);
    }
  last_frontier = s->frontier;
  last_progress = clock_seconds ();
  for (;;)
    {
      uint64_t first = window_first_chunk (s) * CHUNK;
      struct timespec ts;
      double t, wake;

      if (s->state == SINGLE_FAILED && end > s->fail_at)
        {
          r = error_set (s->err, "%s", s->errmsg ? s->errmsg
                         : "xz: decoding failed");
          goto out;
        }
      if (end <= s->frontier && offset >= first)
        {
          uint64_t pos = offset;
          unsigned char *p = buf;
          while (pos < end)
            {
              uint64_t c = pos / CHUNK;
              size_t in_chunk = pos - c * CHUNK;
              size_t n = CHUNK - in_chunk < end - pos
                ? (size_t) (CHUNK - in_chunk) : (size_t) (end - pos);
              memcpy (p, s->slots[c % s->nslots] + in_chunk, n);
              p += n;
              pos += n;
            }
          r = 0;
          goto out;
        }
      if (!s->restart && (offset < first || (s->state == SINGLE_DONE
                                              && end > s->frontier)))
        {
          /* Behind the window (decoded once but gone from memory), or
           * decoded in an earlier run and since evicted from the disk
           * cache: the disk cache may have it by now, else decode again. */
          pthread_mutex_unlock (&s->lock);
          if (have_disk_cache (s)
              && disk_cache_read (s->obj, buf, count, offset) == 0)
            return 0;
          error_clear ();
          pthread_mutex_lock (&s->lock);
          if (!s->restart
              && (offset < window_first_chunk (s) * CHUNK
                  || (s->state == SINGLE_DONE && end > s->frontier)))
            {
              s->restart = true;
              s->wanted = end;
              pthread_cond_signal (&s->want);
            }
          continue;
        }
      if (end > s->wanted)
        {
          /* A restart lowered the goal; this reader still waits. */
          s->wanted = end;
          pthread_cond_signal (&s->want);
        }
      if (s->frontier != last_frontier)
        {
          last_frontier = s->frontier;
          last_progress = clock_seconds ();
        }
      t = last_progress + s->timeout;
      if (clock_seconds () >= t)
        {
          r = error_set (EIO, "xz: %s: no decoding progress for %.0f s "
                         "while waiting for image offset %" PRIu64, s->src,
                         s->timeout, offset);
          goto out;
        }
      wake = clock_seconds () + 1.0;
      if (wake > t)
        wake = t;
      ts.tv_sec = (time_t) wake;
      ts.tv_nsec = (long) ((wake - (double) ts.tv_sec) * 1e9);
      pthread_cond_timedwait (&s->progress, &s->lock, &ts);
    }
 out:
  pthread_mutex_unlock (&s->lock);
  return r;
}

/* "key: value" lines about decoding progress. */
void
xz_single_status (struct xz_single *s, FILE *out)
{
  static const char *const names[] = { "idle", "decoding", "decoded",
                                       "failed" };

  pthread_mutex_lock (&s->lock);
  fprintf (out, "xz-mode: single-block (sequential decode%s)\n",
           have_disk_cache (s) ? " into the disk cache"
           : ", no disk cache: reads behind the window restart it");
  fprintf (out, "xz-decode: %s\n", s->complete ? "complete in disk cache"
           : names[s->state]);
  fprintf (out, "xz-decoded: %" PRIu64 " of %" PRIu64 " bytes (%.1f%%)\n",
           s->complete ? s->size : s->frontier, s->size,
           s->size ? 100.0 * (s->complete ? s->size : s->frontier) / s->size
           : 100.0);
  fprintf (out, "xz-decode-runs: %u\n", s->runs);
  if (s->state == SINGLE_FAILED && s->errmsg)
    fprintf (out, "xz-error: %s (from image offset %" PRIu64 ")\n",
             s->errmsg, s->fail_at);
  pthread_mutex_unlock (&s->lock);
  if (have_disk_cache (s))
    disk_cache_object_status (s->obj, out);
}

/* Stop the decoder and free everything. */
void
xz_single_free (struct xz_single *s)
{
  size_t i;
  bool joined;

  if (s == NULL)
    return;
  pthread_mutex_lock (&s->lock);
  s->stop = true;
  joined = s->thread_started;
  pthread_cond_broadcast (&s->want);
  pthread_mutex_unlock (&s->lock);
  if (joined)
    pthread_join (s->thread, NULL);
  if (s->obj)
    disk_cache_close_object (s->obj);
  if (s->slots)
    for (i = 0; i < s->nslots; i++)
      free (s->slots[i]);
  free (s->slots);
  free (s->cur);
  free (s->errmsg);
  free (s->src);
  pthread_cond_destroy (&s->progress);
  pthread_cond_destroy (&s->want);
  pthread_mutex_destroy (&s->lock);
  free (s);
}
