/* diskshelf: `diskshelf check [--open] [--timeout=SECONDS] CATALOG`.
 *
 * Without --open: every entry is parsed and given the checks the mount
 * makes before opening it (entry_checks.h).  With --open: every entry is
 * also opened exactly as the mount opens it (stack_open, the same
 * options and services, no disk cache), each within the timeout, and
 * closed again.  Problems are printed as the mount's status shows them,
 * "FILE:LINE: message", one per line on stderr; the summary goes to
 * stdout; the exit status is 1 when any entry is broken.
 *
 * Thread model: the main thread starts at most OPEN_PARALLEL opener
 * threads and waits for each under `lock`; an opener that outlives its
 * timeout is abandoned (it closes what it opened when it returns).
 */
#include "check.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blockcache.h"
#include "catalog.h"
#include "clock.h"
#include "entry_checks.h"
#include "error.h"
#include "options.h"
#include "stack.h"
#include "thread.h"

#define OPEN_PARALLEL 16
#define DEFAULT_OPEN_TIMEOUT 30.0

/* One entry being opened. */
struct open_job
{
  struct stack_context ctx;
  double started;           /* clock_seconds; 0 = not started */
  bool done;                /* protected by lock */
  bool abandoned;           /* protected by lock */
  int result;               /* protected by lock */
  char *message;            /* protected by lock; owned */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t finished = PTHREAD_COND_INITIALIZER;

/* Thread body: open the stack as the mount would, then close it. */
static void *
opener (void *arg)
{
  struct open_job *job = arg;
  struct layer *stack = NULL;
  int r;

  error_clear ();
  r = stack_open (&job->ctx, &stack);
  layer_close (r < 0 ? NULL : stack);
  pthread_mutex_lock (&lock);
  job->result = r;
  job->message = r < 0 ? strdup (error_message ()) : NULL;
  job->done = true;
  pthread_cond_broadcast (&finished);
  pthread_mutex_unlock (&lock);
  return NULL;
}

/* Print a broken entry's row. */
static void
report (const struct entry_config *e, const char *message)
{
  char *row = entry_problem_row (e, NULL, message);

  if (row)
    fputs (row, stderr);
  else
    fprintf (stderr, "%s: %s\n", e->conf_path, message);
  free (row);
}

/* What abandoned openers may still use: kept reachable until exit. */
static struct
{
  struct open_job *jobs;
  struct catalog *catalog;
  struct daemon_options options;
  struct services services;
} kept;

/* Open every entry marked in ok[], at most OPEN_PARALLEL at once, each
 * within timeout seconds; clears ok[i] of those that fail.  Returns true
 * when an opener timed out and still runs: then the jobs are kept. */
static bool
open_all (struct catalog *c, bool *ok, const struct daemon_options *o,
          struct services *services, double timeout)
{
  struct open_job *jobs = calloc (c->count, sizeof *jobs);
  size_t next = 0, running = 0, settled = 0;

  if (jobs == NULL)
    {
      fprintf (stderr, "diskshelf: check: out of memory\n");
      memset (ok, 0, c->count * sizeof *ok);
      return false;
    }
  pthread_mutex_lock (&lock);
  while (settled < c->count)
    {
      while (next < c->count && running < OPEN_PARALLEL)
        {
          struct open_job *job = &jobs[next];
          pthread_t t;

          job->ctx.entry = c->entries[next];
          job->ctx.options = o;
          job->ctx.services = services;
          next++;
          if (!ok[next - 1])
            {
              settled++;
              continue;
            }
          job->started = clock_seconds ();
          if (thread_create ("ds-check", &t, NULL, opener, job) != 0)
            {
              job->done = true;
              job->result = -EAGAIN;
              job->message = strdup ("cannot start a thread");
            }
          else
            pthread_detach (t);
          running++;
        }
      for (size_t i = 0; i < next; i++)
        {
          struct open_job *job = &jobs[i];

          if (job->started == 0 || job->abandoned)
            continue;
          if (job->done)
            {
              if (job->result < 0)
                {
                  ok[i] = false;
                  report (c->entries[i], job->message ? job->message
                          : "cannot open");
                }
              free (job->message);
              job->message = NULL;
              job->started = 0;
              running--;
              settled++;
            }
          else if (clock_seconds () - job->started > timeout)
            {
              char why[128];

              snprintf (why, sizeof why, "not open after %.0f s (check "
                        "--timeout); the mount would wait as long",
                        timeout);
              ok[i] = false;
              report (c->entries[i], why);
              job->abandoned = true;
              running--;
              settled++;
            }
        }
      if (settled < c->count)
        {
          struct timespec until;

          clock_gettime (CLOCK_REALTIME, &until);
          until.tv_nsec += 100 * 1000000L;
          if (until.tv_nsec >= 1000000000L)
            {
              until.tv_sec++;
              until.tv_nsec -= 1000000000L;
            }
          pthread_cond_timedwait (&finished, &lock, &until);
        }
    }
  pthread_mutex_unlock (&lock);
  for (size_t i = 0; i < c->count; i++)
    if (jobs[i].abandoned)
      {
        kept.jobs = jobs;
        return true;
      }
  free (jobs);
  return false;
}

/* Options as the mount would have them, with no disk cache. */
static int
mount_options (const char *catalog, struct daemon_options *o)
{
  char *argv[] = { (char *) "--cache-dir=none", (char *) catalog,
                   (char *) "/", NULL };

  return options_parse (3, argv, o);
}

/* `diskshelf check`: print every problem, exit 1 if any. */
int
run_check (int argc, char **argv)
{
  const char *dir = NULL;
  bool open_entries = false, usage = false;
  double timeout = DEFAULT_OPEN_TIMEOUT;
  struct catalog *c;
  size_t good = 0;
  bool *ok;
  int status;

  for (int i = 0; i < argc; i++)
    {
      if (strcmp (argv[i], "--open") == 0)
        open_entries = true;
      else if (strncmp (argv[i], "--timeout=", 10) == 0)
        {
          if (parse_seconds (argv[i] + 10, &timeout) < 0 || timeout <= 0)
            {
              fprintf (stderr, "diskshelf: check: --timeout: '%s' is not a "
                       "number of seconds (e.g. 10 or 2.5)\n", argv[i] + 10);
              return 2;
            }
        }
      else if (argv[i][0] != '-' && dir == NULL)
        dir = argv[i];
      else
        {
          usage = true;
          break;
        }
    }
  if (dir == NULL || usage)
    {
      fprintf (stderr, "usage: diskshelf check [--open] [--timeout=SECONDS]"
               " CATALOG\n");
      return 2;
    }
  if (catalog_read (dir, &c) < 0)
    {
      fprintf (stderr, "diskshelf: %s\n", error_message ());
      return 1;
    }
  if (c->errors)
    fputs (c->errors, stderr);
  ok = calloc (c->count + 1, sizeof *ok);
  if (ok == NULL)
    {
      fprintf (stderr, "diskshelf: check: out of memory\n");
      catalog_free (c);
      return 1;
    }
  for (size_t i = 0; i < c->count; i++)
    {
      error_clear ();
      ok[i] = entry_static_check (c->entries[i]) == 0;
      if (!ok[i])
        report (c->entries[i], error_message ());
    }
  if (open_entries)
    {
      struct daemon_options *o = &kept.options;
      struct services *services = &kept.services;

      if (mount_options (dir, o) < 0
          || block_cache_new (o->memory_cache_size, o->workers,
                              &services->block_cache) < 0)
        {
          fprintf (stderr, "diskshelf: check: %s\n", error_message ());
          free (ok);
          catalog_free (c);
          options_free (o);
          return 1;
        }
      if (open_all (c, ok, o, services, timeout))
        kept.catalog = c;     /* still read by an opener */
      else
        {
          block_cache_free (services->block_cache);
          options_free (o);
        }
    }  for (size_t i = 0; i < c->count; i++)
    good += ok[i];
  printf ("%zu entr%s ok, %zu broken\n", good, good == 1 ? "y" : "ies",
          c->error_count + c->count - good);
  fflush (stdout);
  status = c->error_count + c->count - good ? 1 : 0;
  free (ok);
  if (kept.catalog == NULL)
    catalog_free (c);
  return status;
}
