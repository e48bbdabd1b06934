/* diskshelf: prefetch jobs in the daemon (see prefetch.h). */
#include "prefetch.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "daemon.h"
#include "error.h"
#include "thread.h"

#define PREFETCH_READ_SIZE (1u << 20)
#define PREFETCH_KEEP_SECONDS 60.0

enum job_state { JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_STOPPED };

static const enum prefetch_state public_states[] = {
  PREFETCH_RUNNING, PREFETCH_DONE, PREFETCH_FAILED, PREFETCH_STOPPED,
};

struct prefetch_job
{
  struct fs_entry *entry;         /* one reference */
  pthread_t thread;
  bool thread_started;            /* protected by jobs_lock */
  enum job_state state;           /* protected by jobs_lock */
  unsigned waiters;               /* protected by jobs_lock */
  bool stop;                      /* protected by jobs_lock */
  uint64_t done;                  /* protected by jobs_lock */
  double finished_at;             /* protected by jobs_lock */
  char reason[512];               /* protected by jobs_lock */
  struct prefetch_job *next;      /* protected by jobs_lock */
};

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct prefetch_job *jobs;   /* protected by jobs_lock */

/* The names of a stack's layers, bottom last: true when name is one. */
static bool
stack_has (struct layer *l, const char *name)
{
  for (; l; l = l->lower)
    if (strcmp (l->ops->name, name) == 0)
      return true;
  return false;
}

/* The bottom (transport) layer. */
static struct layer *
bottom_layer (struct layer *l)
{
  while (l->lower)
    l = l->lower;
  return l;
}

/* Why this stack cannot be made local, or NULL when it can. */
static const char *
cannot_prefetch (struct layer *stack, char *buf, size_t size)
{
  const char *transport = bottom_layer (stack)->ops->name;

  if (strcmp (transport, "nbd") == 0)
    return "NBD exports are read live from the server; diskshelf keeps no"
           " local copy of them";
  if (strcmp (transport, "file") == 0)
    return NULL;
  /* A remote transport needs the disk cache to keep what it fetched. */
  char *text = NULL;
  size_t len = 0;
  FILE *mem = open_memstream (&text, &len);
  bool cached = false;
  if (mem)
    {
      layer_status (stack, mem);
      fclose (mem);
      cached = text && strstr (text, "cache-present: ") != NULL;
      free (text);
    }
  if (!cached)
    {
      snprintf (buf, size, "the disk cache is off (--cache-dir=none, or the"
                " directory is unusable: see the log), so fetched bytes"
                " cannot be kept local");
      return buf;
    }
  return NULL;
}

/* Thread body: read the whole stack once, front to back. */
static void *
run_job (void *arg)
{
  struct prefetch_job *job = arg;
  struct layer *stack = job->entry->stack;
  char *buf = malloc (PREFETCH_READ_SIZE);
  uint64_t offset = 0;
  enum job_state result = JOB_DONE;
  char reason[512] = "";
  char what[600];

  if (buf == NULL)
    {
      result = JOB_FAILED;
      snprintf (reason, sizeof reason, "out of memory");
    }
  else if (strcmp (bottom_layer (stack)->ops->name, "file") == 0
           && !stack_has (stack, "xz"))
    offset = stack->size;   /* a local file is local already */
  while (result == JOB_DONE && offset < stack->size)
    {
      size_t n = PREFETCH_READ_SIZE;
      bool stop;
      int r;

      pthread_mutex_lock (&jobs_lock);
      stop = job->stop;
      pthread_mutex_unlock (&jobs_lock);
      if (stop)
        {
          result = JOB_STOPPED;
          snprintf (reason, sizeof reason, "stopped (Ctrl-C)");
          break;
        }
      if (n > stack->size - offset)
        n = (size_t) (stack->size - offset);
      r = layer_pread (stack, buf, n, offset);
      if (r < 0)
        {
          result = JOB_FAILED;
          snprintf (reason, sizeof reason, "reading at %" PRIu64 ": %s",
                    offset, error_message ());
          snprintf (what, sizeof what, "prefetch: %s", reason);
          fs_entry_record_error (job->entry, what);
          error_clear ();
          break;
        }
      offset += n;
      pthread_mutex_lock (&jobs_lock);
      job->done = offset;
      pthread_mutex_unlock (&jobs_lock);
    }
  free (buf);
  if (result == JOB_DONE)
    log_info ("%s: prefetched: all %" PRIu64 " bytes are local",
              job->entry->config->name, stack->size);
  else if (result == JOB_FAILED)
    log_error ("%s: prefetch failed: %s", job->entry->config->name, reason);
  pthread_mutex_lock (&jobs_lock);
  job->state = result;
  job->done = offset;
  job->finished_at = clock_seconds ();
  snprintf (job->reason, sizeof job->reason, "%s", reason);
  pthread_mutex_unlock (&jobs_lock);
  return NULL;
}

/* Free jobs that finished long ago.  Called with jobs_lock held; the
 * threads of finished jobs have returned, so joining does not block. */
static void
reap_old_jobs (void)
{
  double now = clock_seconds ();

  for (struct prefetch_job **p = &jobs; *p;)
    {
      struct prefetch_job *job = *p;
      if (job->state != JOB_RUNNING
          && now - job->finished_at > PREFETCH_KEEP_SECONDS)
        {
          *p = job->next;
          if (job->thread_started)
            pthread_join (job->thread, NULL);
          fs_entry_unref (job->entry);
          free (job);
        }
      else
        p = &job->next;
    }
}

/* The job of an entry, or NULL.  Called with jobs_lock held. */
static struct prefetch_job *
find_job (struct fs_entry *e)
{
  for (struct prefetch_job *job = jobs; job; job = job->next)
    if (job->entry == e)
      return job;
  return NULL;
}

/* Start a job for e, or join the running one.  Called with jobs_lock
 * held.  Returns 0 or a negative errno. */
static int
start_job (struct fs_entry *e)
{
  struct prefetch_job *job = find_job (e);
  char why[512];
  const char *reason;

  if (job && job->state == JOB_RUNNING)
    {
      job->waiters++;
      return 0;
    }
  if (job == NULL)
    {
      job = calloc (1, sizeof *job);
      if (job == NULL)
        return -ENOMEM;
      job->entry = e;
      fs_entry_ref (e);
      job->next = jobs;
      jobs = job;
    }
  else if (job->thread_started)
    {
      /* A finished run: its thread has returned. */
      pthread_join (job->thread, NULL);
      job->thread_started = false;
    }
  job->waiters = 1;
  job->stop = false;
  job->done = 0;
  job->reason[0] = '\0';
  reason = cannot_prefetch (e->stack, why, sizeof why);
  if (reason)
    {
      job->state = JOB_FAILED;
      job->finished_at = clock_seconds ();
      snprintf (job->reason, sizeof job->reason, "%s", reason);
      return 0;
    }
  job->state = JOB_RUNNING;
  if (thread_create ("ds-prefetch", &job->thread, NULL, run_job, job) != 0)
    {
      job->state = JOB_FAILED;
      job->finished_at = clock_seconds ();
      snprintf (job->reason, sizeof job->reason, "cannot start a thread");
      return 0;
    }
  job->thread_started = true;
  log_info ("%s: prefetch started", e->config->name);
  return 0;
}

/* Fill in the progress of e's job.  Called with jobs_lock held. */
static void
progress (struct fs_entry *e, struct prefetch_progress *p)
{
  struct prefetch_job *job = find_job (e);

  memset (p, 0, sizeof *p);
  p->total = e->stack->size;
  if (job == NULL)
    {
      p->state = PREFETCH_IDLE;
      return;
    }
  p->state = public_states[job->state];
  p->waiters = job->waiters;
  p->done = job->done;
  snprintf (p->reason, sizeof p->reason, "%.*s",
            (int) sizeof p->reason - 1, job->reason);
}

/* ioctl on an open entry. */
int
fs_prefetch_ioctl (struct fs_entry *e, unsigned int cmd, void *data)
{
  struct prefetch_progress *p = data;
  int r = 0;

  if (cmd != PREFETCH_IOC_START && cmd != PREFETCH_IOC_STOP
      && cmd != PREFETCH_IOC_PROGRESS)
    return -ENOTTY;
  if (e == NULL || data == NULL)
    return -ENOTTY;
  pthread_mutex_lock (&jobs_lock);
  reap_old_jobs ();
  if (cmd == PREFETCH_IOC_START)
    r = start_job (e);
  else if (cmd == PREFETCH_IOC_STOP)
    {
      struct prefetch_job *job = find_job (e);
      if (job && job->waiters > 0)
        job->waiters--;
      if (job && job->state == JOB_RUNNING && job->waiters == 0)
        job->stop = true;
    }
  progress (e, p);
  pthread_mutex_unlock (&jobs_lock);
  return r;
}

/* Stop every job, wait for their threads, free them. */
void
prefetch_stop_all (void)
{
  struct prefetch_job *list;

  pthread_mutex_lock (&jobs_lock);
  for (struct prefetch_job *job = jobs; job; job = job->next)
    job->stop = true;
  list = jobs;
  jobs = NULL;
  pthread_mutex_unlock (&jobs_lock);
  while (list)
    {
      struct prefetch_job *job = list;
      list = job->next;
      if (job->thread_started)
        pthread_join (job->thread, NULL);
      fs_entry_unref (job->entry);
      free (job);
    }
}
