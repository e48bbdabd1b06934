/* diskshelf bt: the seeding policy of a session — which interested
 * peers are unchoked, the upload rate limit, and pieces the store gained
 * outside the session (bt_session_store_changed).
 *
 * Choking: `max_unchoked` regular upload slots (default 4), handed out
 * first come, freed when a peer loses interest or leaves, and rotated:
 * a peer that held one for ROTATE_AFTER while others wait gives it up.
 * On top, one optimistic unchoke (BEP 3's): every OPTIMISTIC_EVERY
 * seconds one peer among those interested and waiting for a slot,
 * chosen at random, is unchoked as well, so a newcomer gets pieces to
 * trade (and a fleet of daemons spreads what each has) without waiting
 * for a rotation.  The optimistic peer keeps waiting for a regular slot.
 *
 * Thread model: called from connection threads and the session's user;
 * the state lives in bt_session under its lock.  Each connection owns
 * its struct seeding_peer; the session links the waiting ones.
 */
#include <errno.h>
#include <time.h>

#include "clock.h"
#include "internal.h"

#define DEFAULT_UNCHOKED 4
#define ROTATE_AFTER 30.0       /* seconds unchoked while others wait */
#define OPTIMISTIC_EVERY 30.0   /* seconds between optimistic unchokes */
#define UPLOAD_BURST 0.25       /* seconds of rate kept as a burst */

/* The number of upload slots. */
static unsigned
slots (const struct bt_session *s)
{
  return s->set.max_unchoked ? s->set.max_unchoked : DEFAULT_UNCHOKED;
}

/* Count p as waiting for a slot (lock held). */
static void
wait_locked (struct bt_session *s, struct seeding_peer *p)
{
  if (p->waiting)
    return;
  p->waiting = true;
  p->next_waiting = s->waiting;
  s->waiting = p;
  s->choked_waiting++;
}

/* p no longer waits; it is no longer the optimistic peer (lock held). */
static void
unwait_locked (struct bt_session *s, struct seeding_peer *p)
{
  if (s->optimistic == p)
    s->optimistic = NULL;
  if (!p->waiting)
    return;
  for (struct seeding_peer **pp = &s->waiting; *pp != NULL;
       pp = &(*pp)->next_waiting)
    if (*pp == p)
      {
        *pp = p->next_waiting;
        break;
      }
  p->waiting = false;
  p->next_waiting = NULL;
  s->choked_waiting--;
}

/* Take an upload slot if one is free: true when the caller may unchoke
 * its peer (else it waits for one, and may be chosen optimistically). */
bool
seeding_take_slot (struct bt_session *s, struct seeding_peer *p)
{
  bool got = false;
  pthread_mutex_lock (&s->lock);
  if (s->unchoked < slots (s))
    {
      s->unchoked++;
      got = true;
      unwait_locked (s, p);
    }
  else
    wait_locked (s, p);
  pthread_mutex_unlock (&s->lock);
  return got;
}

/* Stop waiting for a slot (the peer lost interest or leaves). */
void
seeding_stop_waiting (struct bt_session *s, struct seeding_peer *p)
{
  pthread_mutex_lock (&s->lock);
  unwait_locked (s, p);
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

/* A random number below n (n > 0; xorshift over the session's state,
 * lock held: fairness, not secrecy). */
static unsigned
random_below (struct bt_session *s, unsigned n)
{
  uint64_t x = s->choke_random ? s->choke_random : 0x9e3779b97f4a7c15u;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  s->choke_random = x;
  return (unsigned) (x % n);
}

/* The optimistic unchoke's round at time now: when none is chosen, or
 * OPTIMISTIC_EVERY has passed since the last choice, choose a waiting
 * peer at random (another than the current one when there is one) and
 * wake the connections so both sides act.  Returns the chosen peer, or
 * NULL. */
struct seeding_peer *
seeding_optimistic_step (struct bt_session *s, double now)
{
  pthread_mutex_lock (&s->lock);
  struct seeding_peer *cur = s->optimistic;
  if ((cur == NULL || now - s->optimistic_at >= OPTIMISTIC_EVERY)
      && !s->stopping)
    {
      unsigned n = 0;
      for (struct seeding_peer *p = s->waiting; p != NULL; p = p->next_waiting)
        n += p != cur;
      if (n > 0)
        {
          unsigned k = random_below (s, n);
          struct seeding_peer *p = s->waiting;
          for (;; p = p->next_waiting)
            if (p != cur && k-- == 0)
              break;
          s->optimistic = p;
          s->optimistic_at = now;
          session_wake_conns_locked (s);
        }
    }
  cur = s->optimistic;
  pthread_mutex_unlock (&s->lock);
  return cur;
}

/* True when p is the optimistically unchoked peer. */
bool
seeding_is_optimistic (struct bt_session *s, const struct seeding_peer *p)
{
  pthread_mutex_lock (&s->lock);
  bool yes = s->optimistic == p;
  pthread_mutex_unlock (&s->lock);
  return yes;
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
      clock_deadline_after (&deadline, wait);
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
