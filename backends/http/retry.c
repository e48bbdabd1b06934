/* diskshelf: a range GET retried with back-off on connection errors,
 * timeouts and 5xx answers, within the entry's retry-time budget. */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "error.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 2000

/* Sleep ms milliseconds in short steps, stopping early when closing. */
static void
backoff_sleep (struct http_source *s, long ms)
{
  while (ms > 0 && !atomic_load (&s->stopping) && !layer_waits_aborted ())
    {
      long step = ms < 50 ? ms : 50;
      struct timespec ts = { 0, step * 1000000L };
      nanosleep (&ts, NULL);
      ms -= step;
    }
}

/* Remember a message for `diskshelf status`. */
static void
note_error (struct http_source *s, const char *why)
{
  pthread_mutex_lock (&s->error_lock);
  snprintf (s->last_error, sizeof s->last_error, "%s", why);
  pthread_mutex_unlock (&s->error_lock);
}

/* The remote object changed: fail every later read and say so once in
 * the log (the engine drops the cached copy when told: -ESTALE from a
 * fetch, remote_mark_changed from a revalidation). */
void
http_note_changed (struct http_source *s, const char *why)
{
  note_error (s, why);
  if (atomic_exchange (&s->changed, true))
    return;
  log_error ("http: %s: %s changed on the server (%s); reads fail with EIO "
             "until the entry is reopened", s->rc.entry_name, s->rc.display,
             why);
}

/* Fetch a range, retrying transient failures.  Returns 0, -ESTALE when
 * the object changed, or -EIO, with a message naming the entry. */
int
http_fetch (struct http_source *s, CURL *c, char *buf, uint64_t offset,
            size_t len)
{
  double start = clock_seconds ();
  long delay = BACKOFF_FIRST_MS;
  unsigned attempt = 0;
  double elapsed;
  char why[512];

  for (;;)
    {
      enum fetch_verdict v;

      if (atomic_load (&s->changed))
        return error_set (ESTALE, "http: %s: %s changed on the server",
                          s->rc.entry_name, s->rc.display);
      if (atomic_load (&s->stopping))
        return error_set (EIO, "http: %s: closing", s->rc.entry_name);
      if (attempt > 0 && layer_waits_aborted ())
        return error_set (EIO, "http: %s: %s: given up: the daemon is "
                          "shutting down (%s)", s->rc.entry_name,
                          s->rc.display, why);
      why[0] = '\0';
      v = http_fetch_once (&s->rc, c, buf, offset, len, why, sizeof why);
      atomic_fetch_add (&s->requests, 1);
      switch (v)
        {
        case FETCH_OK:
          atomic_fetch_add (&s->bytes, len);
          if (attempt > 0 && atomic_exchange (&s->retrying, false))
            log_info ("http: %s: %s: recovered after %u retries",
                      s->rc.entry_name, s->rc.display, attempt);
          return 0;
        case FETCH_CHANGED:
          http_note_changed (s, why);
          return error_set (ESTALE, "http: %s: %s changed on the server: %s",
                            s->rc.entry_name, s->rc.display, why);
        case FETCH_FATAL:
          note_error (s, why);
          log_error ("http: %s: %s: range at %" PRIu64 ": %s",
                     s->rc.entry_name, s->rc.display, offset, why);
          return error_set (EIO, "http: %s: %s: %s", s->rc.entry_name,
                            s->rc.display, why);
        case FETCH_RETRY:
          break;
        }
      note_error (s, why);
      /* Retry for the whole retry-time, no less: the last sleep is cut
       * to what is left of it, then one more attempt decides. */
      elapsed = clock_seconds () - start;
      if (elapsed >= s->rc.retry_time)
        {
          log_error ("http: %s: %s: giving up after %.1f s of retries "
                     "(retry-time = %g s): %s", s->rc.entry_name,
                     s->rc.display, elapsed, s->rc.retry_time, why);
          return error_set (EIO, "http: %s: %s: %s (gave up after %.1f s of "
                            "retries, retry-time = %g s)", s->rc.entry_name,
                            s->rc.display, why, elapsed, s->rc.retry_time);
        }
      if (delay / 1000.0 > s->rc.retry_time - elapsed)
        delay = (long) ((s->rc.retry_time - elapsed) * 1000.0) + 1;
      if (attempt == 0 && !atomic_exchange (&s->retrying, true))
        log_warning ("http: %s: %s: %s; retrying for up to %.0f s",
                     s->rc.entry_name, s->rc.display, why, s->rc.retry_time);
      attempt++;
      atomic_fetch_add (&s->retries, 1);
      backoff_sleep (s, delay);
      delay = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
    }
}
