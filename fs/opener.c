/* diskshelf: the background opener pool (see opener.h). */
#include "opener.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "diskcache.h"
#include "entry.h"
#include "entry_checks.h"
#include "error.h"
#include "thread.h"

/* One queued entry, due at a CLOCK_MONOTONIC time in ms. */
struct opener_job
{
  struct opener_job *next;
  struct fs_entry *entry;         /* one reference owned */
  int64_t due_ms;
  enum { JOB_LEARN, JOB_USE, JOB_CLOSE_SPARE } kind;
};

static bool submit (struct fs_entry *e, int kind, int64_t due_ms);

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static struct opener_job *queue;  /* by due time; protected by queue_lock */
static bool stopping;             /* protected by queue_lock */
static pthread_t threads[OPENER_THREADS];
static size_t nthreads;           /* protected by queue_lock */
static size_t busy;               /* threads inside an open; queue_lock */
static unsigned spares;           /* entries holding a spare; atomic */

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Insert a job in due order (after jobs due at the same time: FIFO).
 * Called with queue_lock held. */
static void
enqueue (struct opener_job *job)
{
  struct opener_job **p = &queue;

  while (*p && (*p)->due_ms <= job->due_ms)
    p = &(*p)->next;
  job->next = *p;
  *p = job;
  pthread_cond_signal (&queue_cond);
}

/* The back-off before retry number `attempts` (1, 2, 4, ... s). */
static int64_t
backoff_ms (unsigned attempts)
{
  int64_t ms = 1000;

  for (unsigned i = 1; i < attempts && ms < OPENER_BACKOFF_MAX_S * 1000; i++)
    ms *= 2;
  return ms < OPENER_BACKOFF_MAX_S * 1000 ? ms : OPENER_BACKOFF_MAX_S * 1000;
}

/* Remember what the open learnt, for the next mount's listing. */
static void
remember (struct fs_entry *e, struct layer *stack, const char *layers)
{
  struct disk_cache *cache = e->base->services->disk_cache;
  struct disk_cache_entry_facts f = { 0 };

  if (cache == NULL || e->conf_text == NULL)
    return;
  f.size = stack->size;
  f.writable = stack->writable;
  f.keep_open = layer_keep_open (stack);
  snprintf (f.stack, sizeof f.stack, "%s", layers);
  disk_cache_remember_entry (cache, e->conf_text, &f);
}

/* Open one entry's stack: for use (publish: the entry keeps it), or to
 * learn its size (the stack is closed again, so an idle entry holds no
 * connection, thread or buffer).  Returns true when it should be
 * retried. */
static bool
open_one (struct fs_entry *e, bool publish)
{
  struct stack_context ctx = *e->base;
  struct layer *stack = NULL;
  char layers[128] = "";
  bool repeated = false, changed = false, spare_kept = false;
  unsigned next_s = 0;
  uint64_t shown = 0;
  int r;

  ctx.entry = e->config;
  error_clear ();
  r = stack_open (&ctx, &stack);
  if (r == 0)
    {
      layer_describe (stack, layers, sizeof layers);
      remember (e, stack, layers);
      /* A stack that works with no reader (seeding) stays open. */
      if (layer_keep_open (stack))
        publish = true;
    }
  pthread_mutex_lock (&e->lock);
  if (publish)
    e->use_pending = false;
  if (r == 0)
    {
      shown = e->known ? e->known_size : 0;
      changed = stack->size != shown
        || stack->writable != (e->known && e->known_writable);
      e->known = true;
      e->known_size = stack->size;
      e->known_writable = stack->writable;
      snprintf (e->known_stack, sizeof e->known_stack, "%s", layers);
      if (publish && e->stack == NULL)
        {
          __atomic_store_n (&e->stack, stack, __ATOMIC_RELEASE);
          stack = NULL;                 /* the entry's now */
        }
      else if (!publish && e->stack == NULL && e->spare == NULL
               && __atomic_add_fetch (&spares, 1, __ATOMIC_ACQ_REL)
                  <= OPENER_SPARES_MAX)
        {
          e->spare = stack;             /* kept for a first use */
          stack = NULL;
          spare_kept = true;
        }
      else if (!publish && e->stack == NULL && e->spare == NULL)
        __atomic_sub_fetch (&spares, 1, __ATOMIC_ACQ_REL);
      /* Before anyone waiting is told: an open waiting for this entry
       * must not read with the size the kernel cached before. */
      if (changed)
        {
          pthread_mutex_unlock (&e->lock);
          fs_entry_attributes_changed (e);
          pthread_mutex_lock (&e->lock);
        }
      e->state = FS_ENTRY_OK;
      free (e->open_error);
      e->open_error = NULL;
    }
  else
    {
      char *why = strdup (error_message ());
      /* Say it once per reason, not at every retry. */
      repeated = e->open_error && why && strcmp (e->open_error, why) == 0;
      if (why)
        {
          free (e->open_error);
          e->open_error = why;
        }
      bool was_listed = e->state != FS_ENTRY_BROKEN;
      e->state = FS_ENTRY_BROKEN;
      e->attempts++;
      next_s = (unsigned) (backoff_ms (e->attempts) / 1000);
      /* Left out from now on: the kernel must ask again rather than
       * trust the attributes it cached while the entry was listed. */
      if (was_listed)
        {
          pthread_mutex_unlock (&e->lock);
          fs_entry_attributes_changed (e);
          pthread_mutex_lock (&e->lock);
        }
    }
  pthread_cond_broadcast (&e->settled);
  pthread_mutex_unlock (&e->lock);
  if (r < 0)
    {
      if (repeated)
        log_debug ("%s: left out of the mount: %s (retrying in %u s)",
                   e->config->name, error_message (), next_s);
      else
        log_error ("%s: left out of the mount: %s (retrying in %u s)",
                   e->config->name, error_message (), next_s);
      error_clear ();
      return true;
    }
  if (changed && shown)
    log_info ("%s: size changed from %llu to %llu bytes since it was"
              " last opened", e->config->name, (unsigned long long) shown,
              (unsigned long long) e->known_size);
  if (publish)
    log_debug ("%s: opened for use", e->config->name);
  else
    log_info ("%s: ready (%s, %llu bytes%s)", e->config->name, layers,
              (unsigned long long) e->known_size,
              e->known_writable ? ", writable" : "");
  if (spare_kept)
    submit (e, JOB_CLOSE_SPARE, now_ms () + OPENER_SPARE_LINGER_S * 1000);
  layer_close (stack);                  /* a probe's, or NULL */
  return false;
}

/* Thread body: take due jobs until stopped. */
static void *
opener_thread (void *arg)
{
  (void) arg;
  pthread_mutex_lock (&queue_lock);
  while (!stopping)
    {
      struct opener_job *job = queue;
      int64_t now = now_ms ();

      if (job == NULL)
        {
          pthread_cond_wait (&queue_cond, &queue_lock);
          continue;
        }
      if (job->due_ms > now)
        {
          struct timespec until;
          clock_gettime (CLOCK_REALTIME, &until);
          int64_t wait = job->due_ms - now;
          until.tv_sec += wait / 1000;
          until.tv_nsec += (wait % 1000) * 1000000;
          if (until.tv_nsec >= 1000000000)
            {
              until.tv_sec++;
              until.tv_nsec -= 1000000000;
            }
          pthread_cond_timedwait (&queue_cond, &queue_lock, &until);
          continue;
        }
      queue = job->next;
      busy++;
      pthread_mutex_unlock (&queue_lock);

      struct fs_entry *e = job->entry;
      bool retry = false;
      /* Only the queue holds it: no tree lists it, no file has it open. */
      if (job->kind == JOB_CLOSE_SPARE)
        fs_entry_drop_spare (e);
      else if (__atomic_load_n (&e->refs, __ATOMIC_ACQUIRE) > 1)
        retry = open_one (e, job->kind == JOB_USE);
      pthread_mutex_lock (&queue_lock);
      busy--;
      if (retry && !stopping)
        {
          pthread_mutex_lock (&e->lock);
          job->due_ms = now_ms () + backoff_ms (e->attempts);
          job->kind = JOB_LEARN;        /* a retry learns; a user asks */
          pthread_mutex_unlock (&e->lock);
          enqueue (job);
        }
      else
        {
          pthread_mutex_unlock (&queue_lock);
          fs_entry_unref (e);
          free (job);
          pthread_mutex_lock (&queue_lock);
        }
      if (busy == 0 && (queue == NULL || queue->due_ms > now_ms ()))
        {
          /* A pass of opens is over: the stacks opened only to learn a
           * size left freed memory in each thread's malloc arena; give
           * it back, so that idle entries really cost nothing. */
          pthread_mutex_unlock (&queue_lock);
#ifndef __SANITIZE_ADDRESS__
          /* Not under ASan, whose allocator serves the program: there
           * this call was the first into glibc's malloc, which then
           * counted this thread into its main arena once too few times,
           * and glibc aborted as a thread exited ("Fatal glibc error:
           * ... __malloc_arena_thread_freeres: a->attached_threads > 0",
           * CI, test_xz_shared; fs/main.c's mallopt did the same). */
          malloc_trim (0);
#endif
          pthread_mutex_lock (&queue_lock);
        }
    }
  pthread_mutex_unlock (&queue_lock);
  return NULL;
}

/* Start the pool's threads if not yet started.  Called with queue_lock
 * held. */
static void
start_threads (void)
{
  while (nthreads < OPENER_THREADS
         && thread_create ("ds-opener", &threads[nthreads], NULL,
                           opener_thread, NULL) == 0)
    nthreads++;
}

/* Queue a job for e, due at due_ms; false when out of memory or
 * stopping. */
static bool
submit (struct fs_entry *e, int kind, int64_t due_ms)
{
  struct opener_job *job = calloc (1, sizeof *job);

  if (job == NULL)
    return false;
  fs_entry_ref (e);
  job->entry = e;
  job->kind = kind;
  job->due_ms = due_ms;
  pthread_mutex_lock (&queue_lock);
  if (stopping)
    {
      pthread_mutex_unlock (&queue_lock);
      fs_entry_unref (e);
      free (job);
      return false;
    }
  start_threads ();
  enqueue (job);
  pthread_mutex_unlock (&queue_lock);
  return true;
}

/* Queue an entry for opening now. */
void
opener_submit (struct fs_entry *e, bool use)
{
  if (submit (e, use ? JOB_USE : JOB_LEARN, now_ms ()))
    return;
  pthread_mutex_lock (&e->lock);
  e->state = FS_ENTRY_BROKEN;
  e->use_pending = false;
  e->attempts++;
  free (e->open_error);
  e->open_error = strdup ("out of memory, or the daemon is stopping");
  pthread_cond_broadcast (&e->settled);
  pthread_mutex_unlock (&e->lock);
}

/* Close an entry's spare stack, if it still has one. */
void
fs_entry_drop_spare (struct fs_entry *e)
{
  struct layer *spare;

  pthread_mutex_lock (&e->lock);
  spare = e->spare;
  e->spare = NULL;
  pthread_mutex_unlock (&e->lock);
  if (spare)
    {
      __atomic_sub_fetch (&spares, 1, __ATOMIC_ACQ_REL);
      layer_close (spare);
    }
}

/* A first use takes the spare: one fewer kept. */
void
opener_spare_taken (void)
{
  __atomic_sub_fetch (&spares, 1, __ATOMIC_ACQ_REL);
}

/* Bring a waiting retry of e forward to now. */
void
opener_retry_now (struct fs_entry *e)
{
  struct opener_job **p, *job = NULL;

  pthread_mutex_lock (&queue_lock);
  for (p = &queue; *p; p = &(*p)->next)
    if ((*p)->entry == e && (*p)->kind != JOB_CLOSE_SPARE)
      {
        job = *p;
        *p = job->next;
        break;
      }
  if (job)
    {
      job->due_ms = now_ms ();
      enqueue (job);
    }
  pthread_mutex_unlock (&queue_lock);
}

/* Stop the pool: wake every thread, join them, drop what is queued. */
void
opener_stop (void)
{
  struct opener_job *job;
  size_t n;

  pthread_mutex_lock (&queue_lock);
  stopping = true;
  n = nthreads;
  pthread_cond_broadcast (&queue_cond);
  pthread_mutex_unlock (&queue_lock);
  for (size_t i = 0; i < n; i++)
    pthread_join (threads[i], NULL);
  pthread_mutex_lock (&queue_lock);
  job = queue;
  queue = NULL;
  nthreads = 0;
  pthread_mutex_unlock (&queue_lock);
  while (job)
    {
      struct opener_job *next = job->next;
      fs_entry_unref (job->entry);
      free (job);
      job = next;
    }
}
