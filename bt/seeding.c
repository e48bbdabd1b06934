/* diskshelf bt: the seeding policy of a session — which interested
 * peers are unchoked (a fixed number of upload slots, handed out first
 * come, freed when a peer loses interest or leaves, rotated when others
 * wait), the upload rate limit, and pieces the store gained outside the
 * session (bt_session_store_changed).
 *
 * Thread model: called from connection threads and the session's user;
 * the state lives in bt_session under its lock.
 */
#include <errno.h>
#include <time.h>

#include "clock.h"
#include "internal.h"

#define DEFAULT_UNCHOKED 4
#define ROTATE_AFTER 30.0       /* seconds unchoked while others wait */
#define UPLOAD_BURST 0.25       /* seconds of rate kept as a burst */

/* The number of upload slots. */
static unsigned
slots (const struct bt_session *s)
{
  return s->set.max_unchoked ? s->set.max_unchoked : DEFAULT_UNCHOKED;
}

/* Take an upload slot if one is free: true when the caller may unchoke
 * its peer (its want to is counted otherwise, for rotation). */
bool
seeding_take_slot (struct bt_session *s, bool *waiting)
{
  bool got = false;
  pthread_mutex_lock (&s->lock);
  if (s->unchoked < slots (s))
    {
      s->unchoked++;
      got = true;
      if (*waiting)
        s->choked_waiting--;
      *waiting = false;
    }
  else if (!*waiting)
    {
      s->choked_waiting++;
      *waiting = true;
    }
  pthread_mutex_unlock (&s->lock);
  return got;
}

/* Stop waiting for a slot (the peer lost interest or leaves). */
void
seeding_stop_waiting (struct bt_session *s, bool *waiting)
{
  if (!*waiting)
    return;
  pthread_mutex_lock (&s->lock);
  s->choked_waiting--;
  *waiting = false;
  pthread_mutex_unlock (&s->lock);
}

/* Give a slot back and let waiting connections try for it. */
void
seeding_release_slot (struct bt_session *s)
{
  pthread_mutex_lock (&s->lock);
  s->unchoked--;
  if (s->choked_waiting > 0 && !s->stopping)
    session_wake_conns_locked (s);
  pthread_mutex_unlock (&s->lock);
}

/* True when a peer unchoked since `since` should make room. */
bool
seeding_should_rotate (struct bt_session *s, double since)
{
  pthread_mutex_lock (&s->lock);
  bool rotate = s->choked_waiting > 0
                && clock_seconds () - since > ROTATE_AFTER;
  pthread_mutex_unlock (&s->lock);
  return rotate;
}

/* Wait until len more bytes may be uploaded under the rate limit (or
 * the session stops). */
void
seeding_throttle (struct bt_session *s, uint32_t len)
{
  if (s->set.upload_rate == 0)
    return;
  pthread_mutex_lock (&s->lock);
  double now = clock_seconds ();
  if (s->upload_next < now - UPLOAD_BURST)
    s->upload_next = now - UPLOAD_BURST;
  double wait = s->upload_next - now;
  s->upload_next += (double) len / (double) s->set.upload_rate;
  if (wait > 0)
    {
      struct timespec deadline;
      clock_gettime (CLOCK_MONOTONIC, &deadline);
      deadline.tv_sec += (time_t) wait;
      deadline.tv_nsec += (long) ((wait - (time_t) wait) * 1e9);
      if (deadline.tv_nsec >= 1000000000)
        {
          deadline.tv_sec++;
          deadline.tv_nsec -= 1000000000;
        }
      while (!s->stopping
             && pthread_cond_timedwait (&s->cond, &s->lock, &deadline)
                != ETIMEDOUT)
        ;
    }
  pthread_mutex_unlock (&s->lock);
}

/* See bt.h. */
void
bt_session_store_changed (struct bt_session *s)
{
  if (s->store.has_piece == NULL)
    return;
  for (uint32_t i = 0; i < s->mi->piece_count; i++)
    {
      pthread_mutex_lock (&s->lock);
      bool absent = s->piece_state[i] == PIECE_ABSENT && !s->stopping;
      pthread_mutex_unlock (&s->lock);
      if (!absent || !s->store.has_piece (s->store_ctx, i))
        continue;
      pthread_mutex_lock (&s->lock);
      if (s->piece_state[i] == PIECE_ABSENT)
        {
          s->piece_state[i] = PIECE_CLAIMED;
          session_announce_locked (s, i);
        }
      pthread_mutex_unlock (&s->lock);
    }
}

/* See bt.h. */
void
bt_session_store_added (struct bt_session *s, uint32_t index)
{
  if (index >= s->mi->piece_count)
    return;
  pthread_mutex_lock (&s->lock);
  if (s->piece_state[index] == PIECE_ABSENT)
    {
      s->piece_state[index] = PIECE_CLAIMED;
      session_announce_locked (s, index);
    }
  pthread_mutex_unlock (&s->lock);
}
