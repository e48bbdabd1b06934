/* diskshelf bt: the tracker thread.  It announces "started" at once,
 * then again at the interval the tracker asks for (never more often than
 * announce_min_interval), "completed" when the last piece arrives, and
 * "stopped" on close.  Trackers are tried tier by tier (BEP 12); one that
 * answers moves to the front of its tier.  A tracker that is down is
 * logged and retried with a doubling delay.  Once a second the thread
 * also retries idle peers while readers wait.  A session starving (readers
 * wait and no peer is connected) announces again after announce_retry,
 * then after twice that, and so on up to the tracker's interval, instead
 * of sleeping through the whole interval: a seeder that joined the swarm
 * after our first announce is found in seconds, not half an hour later.
 * This overrides a tracker's "min interval" (opentracker sets it equal to
 * the interval), at most once per doubling gap and only while reads are
 * blocked. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "error.h"
#include "internal.h"

#define MAX_RETRY 300.0

/* Copy the metainfo's tiers so that this thread may reorder them. */
static int
copy_tiers (struct bt_session *s)
{
  const struct bt_metainfo *mi = s->mi;
  s->tiers = calloc (mi->tier_count + 1, sizeof *s->tiers);
  if (s->tiers == NULL)
    return error_set (ENOMEM, "out of memory");
  for (size_t t = 0; t < mi->tier_count; t++)
    {
      size_t n = 0;
      while (mi->tiers[t][n] != NULL)
        n++;
      s->tiers[t] = calloc (n + 1, sizeof (char *));
      if (s->tiers[t] == NULL)
        return error_set (ENOMEM, "out of memory");
      s->tier_count++;
      memcpy (s->tiers[t], mi->tiers[t], n * sizeof (char *));
    }
  return 0;
}

/* Fill an announce request from the session's counters. */
static void
fill_announce (struct bt_session *s, struct bt_announce *a,
               enum bt_event ev, double timeout)
{
  memset (a, 0, sizeof *a);
  a->info_hash = s->mi->info_hash;
  a->peer_id = s->peer_id;
  /* The port we really listen on; 0 (not reachable) when not seeding,
   * so the tracker hands nobody an address where nothing answers. */
  a->port = s->port;
  pthread_mutex_lock (&s->lock);
  a->uploaded = s->stats.bytes_up;
  a->downloaded = s->stats.bytes_down;
  uint64_t have = 0;
  for (uint32_t i = 0; i < s->mi->piece_count; i++)
    if (s->piece_state[i] != PIECE_ABSENT)
      have += bt_metainfo_piece_size (s->mi, i);
  pthread_mutex_unlock (&s->lock);
  a->left = s->mi->total_length - have;
  a->event = ev;
  a->key = s->key;
  a->numwant = 50;
  a->timeout = timeout;
  a->ca_file = s->set.ca_file;
  /* A closing session does not wait for a slow tracker, except for the
   * short "stopped" announce. */
  a->cancel = ev == BT_EVENT_STOPPED ? NULL : &s->cancel;
}

/* Announce once, tier by tier.  Returns the interval or a negative
 * errno; *used names the tracker that answered. */
static long
announce_once (struct bt_session *s, enum bt_event ev, double timeout,
               const char **used)
{
  struct bt_announce a;
  fill_announce (s, &a, ev, timeout);
  int r = -ENOENT;
  for (size_t t = 0; t < s->tier_count; t++)
    for (size_t i = 0; s->tiers[t][i] != NULL; i++)
      {
        struct bt_reply reply;
        r = bt_tracker_announce (s->tiers[t][i], &a, &reply);
        if (r == -ECANCELED)
          return r;
        if (r < 0)
          {
            log_warning ("bt: %s: %s", s->name, error_message ());
            continue;
          }
        char *url = s->tiers[t][i];
        memmove (&s->tiers[t][1], &s->tiers[t][0], i * sizeof (char *));
        s->tiers[t][0] = url;
        *used = url;
        log_debug ("bt: %s: tracker %s: %zu peers, interval %u s", s->name,
                   url, reply.peer_count, reply.interval);
        session_add_peers (s, reply.peers, reply.peer_count);
        long interval = reply.interval;
        if (reply.min_interval > interval)
          interval = reply.min_interval;
        bt_reply_clear (&reply);
        return interval;
      }
  return r;
}

/* Wait on the session's condition until deadline (monotonic seconds) or
 * stopping; lock held. */
static void
wait_until_locked (struct bt_session *s, double until)
{
  double left = until - clock_seconds ();
  if (left <= 0)
    return;
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  long ns = (long) ((left - (long) left) * 1e9) + ts.tv_nsec;
  ts.tv_sec += (time_t) left + ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  pthread_cond_timedwait (&s->cond, &s->lock, &ts);
}

/* The tracker thread's body. */
static void *
tracker_main (void *opaque)
{
  struct bt_session *s = opaque;
  enum bt_event ev = BT_EVENT_STARTED;
  double next = clock_seconds (), retry = s->set.announce_retry;
  double early = 0;        /* when a starving session may announce again */
  double starve_gap = s->set.announce_retry;
  const char *working = NULL;
  bool was_complete = false;
  for (;;)
    {
      pthread_mutex_lock (&s->lock);
      if (!s->stopping)
        wait_until_locked (s, next < clock_seconds () + 1
                              ? next : clock_seconds () + 1);
      bool stopping = s->stopping;
      bool complete = s->verified_count == s->mi->piece_count;
      bool starving = s->wants != NULL && s->stats.peers_connected == 0;
      if (!stopping)
        session_maybe_connect_locked (s);
      pthread_mutex_unlock (&s->lock);
      if (stopping)
        break;
      if (complete && !was_complete && working != NULL)
        {
          ev = BT_EVENT_COMPLETED;
          next = 0;
        }
      was_complete = complete;
      if (!starving)
        starve_gap = s->set.announce_retry;
      else if (early > 0 && clock_seconds () >= early
               && clock_seconds () < next)
        {
          log_info ("bt: %s: readers wait and no peer is connected; "
                    "asking the tracker for peers again", s->name);
          next = 0;
          starve_gap *= 2;
        }
      if (clock_seconds () < next || s->tier_count == 0)
        continue;
      long interval = announce_once (s, ev, 15, &working);
      pthread_mutex_lock (&s->lock);
      if (interval < 0)
        s->stats.announces_failed++;
      else
        s->stats.announces_ok++;
      pthread_mutex_unlock (&s->lock);
      if (interval == -ECANCELED)
        break;
      if (interval < 0)
        {
          log_warning ("bt: %s: no tracker answered; retrying in %.0f s",
                       s->name, retry);
          next = clock_seconds () + retry;
          retry = retry * 2 > MAX_RETRY ? MAX_RETRY : retry * 2;
          continue;
        }
      retry = s->set.announce_retry;
      ev = BT_EVENT_NONE;
      next = clock_seconds () + (interval > s->set.announce_min_interval
                                 ? interval : s->set.announce_min_interval);
      early = clock_seconds () + starve_gap;
    }
  if (working != NULL)
    {
      struct bt_announce a;
      struct bt_reply reply;
      fill_announce (s, &a, BT_EVENT_STOPPED, 3);
      if (bt_tracker_announce (working, &a, &reply) == 0)
        bt_reply_clear (&reply);
    }
  return NULL;
}

/* Start the tracker thread. */
int
announce_start (struct bt_session *s)
{
  int r = copy_tiers (s);
  if (r < 0)
    return r;
  r = thread_create ("ds-bt-tracker", &s->tracker_thread, NULL, tracker_main,
                     s);
  if (r != 0)
    return error_set (r, "cannot start the tracker thread: %s",
                      strerror (r));
  s->tracker_started = true;
  return 0;
}

/* Join the tracker thread (stopping is already set) and free its state. */
void
announce_stop (struct bt_session *s)
{
  if (s->tracker_started)
    pthread_join (s->tracker_thread, NULL);
  s->tracker_started = false;
  for (size_t t = 0; t < s->tier_count; t++)
    free (s->tiers[t]);
  free (s->tiers);
  s->tiers = NULL;
  s->tier_count = 0;
}
