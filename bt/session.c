/* diskshelf bt: the session: piece states, readers waiting for pieces,
 * the list of known peers, and opening and closing everything. */
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "clock.h"
#include "error.h"
#include "internal.h"

/* True if buf (the whole piece) matches the piece's SHA-1. */
bool
bt_piece_verify (const struct bt_metainfo *mi, uint32_t index,
                 const uint8_t *buf)
{
  uint8_t digest[20];
  uint32_t size = bt_metainfo_piece_size (mi, index);
  if (size == 0 || gnutls_hash_fast (GNUTLS_DIG_SHA1, buf, size, digest) < 0)
    return false;
  return memcmp (digest, mi->pieces + (size_t) index * 20, 20) == 0;
}

bool
session_verify (struct bt_session *s, uint32_t index, const uint8_t *buf)
{
  return bt_piece_verify (s->mi, index, buf);
}

/* Copy piece index from a finished want, if one holds it (lock held):
 * a piece just verified is in memory there before the store has it. */
static bool
piece_from_wants_locked (struct bt_session *s, uint32_t index, uint8_t *buf)
{
  for (struct want *w = s->wants; w != NULL; w = w->next)
    if (w->index == index && w->done)
      {
        memcpy (buf, w->buf, bt_metainfo_piece_size (s->mi, index));
        return true;
      }
  return false;
}

/* The store lost a piece it had (evicted, or never kept): it is absent
 * again, so a reader fetches it and no peer is served it (lock held). */
static void
piece_lost_locked (struct bt_session *s, uint32_t index)
{
  if (s->piece_state[index] == PIECE_VERIFIED)
    s->verified_count--;
  s->piece_state[index] = PIECE_ABSENT;
}

/* Read piece index from a finished want or the store, if either holds a
 * good copy.  Returns 0, or -ENOENT when neither has it (or the store's
 * copy is bad); a piece the store no longer gives is absent from then
 * on. */
int
session_piece_from_store (struct bt_session *s, uint32_t index, uint8_t *buf)
{
  pthread_mutex_lock (&s->lock);
  enum piece_state st = s->piece_state[index];
  bool in_memory = piece_from_wants_locked (s, index, buf);
  pthread_mutex_unlock (&s->lock);
  if (in_memory)
    return 0;
  if (st == PIECE_ABSENT || s->store.read_piece == NULL)
    return -ENOENT;
  uint32_t size = bt_metainfo_piece_size (s->mi, index);
  int r = s->store.read_piece (s->store_ctx, index, buf, size);
  if (r < 0)
    {
      /* A want may have finished meanwhile; else the store lost it,
       * unless it is still taking it in (-EAGAIN: a piece verified a
       * moment ago, between its reader and the store).  Declaring such
       * a piece lost made a complete daemon interested in every peer
       * for good, holding their upload slots, and refused peers a piece
       * it held (a fleet's last daemon waited 30 s for a rotation). */
      pthread_mutex_lock (&s->lock);
      in_memory = piece_from_wants_locked (s, index, buf);
      if (!in_memory && r != -EAGAIN)
        piece_lost_locked (s, index);
      pthread_mutex_unlock (&s->lock);
      if (in_memory)
        return 0;
      memset (buf, 0, size);
      return -ENOENT;
    }
  if (st == PIECE_VERIFIED)
    return 0;
  bool good = session_verify (s, index, buf);
  pthread_mutex_lock (&s->lock);
  if (s->piece_state[index] == PIECE_CLAIMED)
    {
      s->piece_state[index] = good ? PIECE_VERIFIED : PIECE_ABSENT;
      if (good)
        s->verified_count++;
      else
        s->stats.hash_failures++;
    }
  pthread_mutex_unlock (&s->lock);
  if (!good)
    {
      memset (buf, 0, size);    /* no unverified byte leaves this file */
      log_warning ("bt: %s: piece %u in the store fails its SHA-1; fetching "
                   "it again", s->name, index);
    }
  return good ? 0 : -ENOENT;
}

/* Offer a verified piece to the store; true when it kept it (lock not
 * held). */
static bool
piece_to_store (struct bt_session *s, uint32_t index, const uint8_t *buf)
{
  uint32_t size = bt_metainfo_piece_size (s->mi, index);
  return s->store.write_piece != NULL && s->store.read_piece != NULL
         && s->store.write_piece (s->store_ctx, index, buf, size) == 0;
}

/* A fetched piece passed its SHA-1: count it, and once the store has it
 * offer it to peers (lock held). */
static void
piece_good_locked (struct bt_session *s, uint32_t index, bool stored)
{
  s->stats.pieces_fetched++;
  if (stored && s->piece_state[index] != PIECE_VERIFIED)
    {
      s->piece_state[index] = PIECE_VERIFIED;
      s->verified_count++;
      session_announce_locked (s, index);
    }
  session_wake_conns_locked (s);
}

/* Record a piece a connection fetched and verified itself (no reader
 * took it unverified): store it, hand it to any reader that came
 * meanwhile, and queue HAVE messages for every connection. */
void
session_piece_verified (struct bt_session *s, uint32_t index,
                        const uint8_t *buf)
{
  uint32_t size = bt_metainfo_piece_size (s->mi, index);
  bool stored = piece_to_store (s, index, buf);
  pthread_mutex_lock (&s->lock);
  piece_good_locked (s, index, stored);
  for (struct want *w = s->wants; w != NULL; w = w->next)
    if (w->index == index && !w->done)
      {
        w->buf = malloc (size);
        if (w->buf != NULL)
          {
            memcpy (w->buf, buf, size);
            w->done = true;
            pthread_cond_broadcast (&w->cond);
          }
      }
  pthread_mutex_unlock (&s->lock);
}

/* A connection assembled piece index: hand its bytes (buf, malloc'd,
 * taken on success) unverified to the piece's want, whose reader checks
 * them (see struct want).  False when no want takes them (none, done,
 * or holding a copy already): the caller then verifies on its own. */
bool
session_piece_assembled (struct bt_session *s, uint32_t index, uint8_t *buf,
                         uint64_t conn_serial, ssize_t peer_index)
{
  bool taken = false;
  pthread_mutex_lock (&s->lock);
  for (struct want *w = s->wants; w != NULL && !taken; w = w->next)
    if (w->index == index && !w->done && w->raw == NULL && !w->verifying
        && s->piece_state[index] != PIECE_VERIFIED)
      {
        w->raw = buf;
        w->raw_conn = conn_serial;
        w->raw_peer = peer_index;
        pthread_cond_signal (&w->cond);
        taken = true;
      }
  pthread_mutex_unlock (&s->lock);
  return taken;
}

/* A reader checks the unverified copy its want holds (lock held; it is
 * dropped while hashing): good, the want is done; bad, the sender is
 * banned and the piece is fetched again from another peer. */
static void
verify_raw_locked (struct bt_session *s, struct want *w)
{
  uint8_t *raw = w->raw;
  uint64_t from = w->raw_conn;
  ssize_t peer = w->raw_peer;
  uint32_t index = w->index;

  w->raw = NULL;
  w->verifying = true;
  pthread_mutex_unlock (&s->lock);
  bool good = session_verify (s, index, raw);
  bool stored = good && piece_to_store (s, index, raw);
  pthread_mutex_lock (&s->lock);
  w->verifying = false;
  if (good)
    {
      /* Another connection's copy, verified on its own, may have made
       * the want done while this one was checked: keep that one. */
      if (w->done)
        free (raw);
      else
        {
          w->buf = raw;
          w->done = true;
        }
      piece_good_locked (s, index, stored);
      pthread_cond_broadcast (&w->cond);
      return;
    }
  free (raw);
  s->stats.hash_failures++;
  if (!conn_ban_locked (s, from, peer) && peer >= 0
      && s->peers[peer].state != PEER_BANNED)
    {
      s->peers[peer].state = PEER_BANNED;      /* it left already */
      s->stats.peers_banned++;
    }
  char addr[80] = "(incoming)";
  if (peer >= 0)
    session_peer_addr_text (&s->peers[peer].addr, addr, sizeof addr);
  log_warning ("bt: %s: peer %s sent piece %u that fails its SHA-1; "
               "banning it", s->name, addr, index);
  session_wake_conns_locked (s);               /* ask another peer */
}

/* Queue a HAVE for piece index to every connection, once per piece
 * (lock held). */
void
session_announce_locked (struct bt_session *s, uint32_t index)
{
  if (s->announced[index])
    return;
  s->announced[index] = 1;
  s->have_log[s->have_log_len++] = index;
  session_wake_conns_locked (s);
}

/* Add delta (+1 or -1) to the availability of every piece set in map,
 * a peer's bitfield (lock held). */
void
session_avail_add_locked (struct bt_session *s, const uint8_t *map,
                          int delta)
{
  for (uint32_t i = 0; i < s->mi->piece_count; i++)
    if (map[i / 8] & (0x80 >> (i % 8)))
      s->avail[i] += delta;
}

/* Format ip:port for messages. */
void
session_peer_addr_text (const struct bt_peer_addr *a, char *buf, size_t len)
{
  char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
  getnameinfo ((const struct sockaddr *) &a->addr, a->addr_len, host,
               sizeof host, port, sizeof port,
               NI_NUMERICHOST | NI_NUMERICSERV);
  snprintf (buf, len, a->addr.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
            host, port);
}

/* True if two addresses are the same ip:port. */
static bool
same_addr (const struct bt_peer_addr *a, const struct bt_peer_addr *b)
{
  return a->addr_len == b->addr_len
         && memcmp (&a->addr, &b->addr, a->addr_len) == 0;
}

/* Learn peers (duplicates by ip:port are dropped). */
void
session_add_peers (struct bt_session *s, const struct bt_peer_addr *a,
                   size_t n)
{
  pthread_mutex_lock (&s->lock);
  for (size_t i = 0; i < n; i++)
    {
      bool known = false;
      for (size_t j = 0; j < s->peer_count && !known; j++)
        known = same_addr (&s->peers[j].addr, &a[i]);
      if (known || s->peer_count >= 4096)
        continue;
      if (s->peer_count == s->peer_cap)
        {
          size_t cap = s->peer_cap ? s->peer_cap * 2 : 32;
          struct peer_entry *p = realloc (s->peers, cap * sizeof *p);
          if (p == NULL)
            break;
          s->peers = p;
          s->peer_cap = cap;
        }
      struct peer_entry *e = &s->peers[s->peer_count++];
      memset (e, 0, sizeof *e);
      e->addr = a[i];
      s->stats.peers_known++;
    }
  session_maybe_connect_locked (s);
  pthread_mutex_unlock (&s->lock);
}

/* Start connections to idle peers, up to max_peers. */
void
session_maybe_connect_locked (struct bt_session *s)
{
  double now = clock_seconds ();
  for (size_t i = 0; i < s->peer_count && !s->stopping; i++)
    {
      if (s->outgoing_conns >= s->set.max_peers)
        return;
      struct peer_entry *e = &s->peers[i];
      if (e->state != PEER_IDLE || e->next_try > now)
        continue;
      e->state = PEER_CONNECTED;
      if (conn_start_locked (s, -1, (ssize_t) i) < 0)
        {
          e->state = PEER_IDLE;
          e->next_try = now + 5;
          return;
        }
      s->outgoing_conns++;
    }
}

/* Wake every connection thread (new want, new piece, stopping). */
void
session_wake_conns_locked (struct bt_session *s)
{
  for (struct bt_conn *c = s->conns; c != NULL; c = conn_next (c))
    conn_wake (c);
}

/* Parse "host:port" into a peer address (internal.h). */
int
bt_parse_host_port (const char *text, struct bt_peer_addr *out)
{
  char host[256];
  const char *colon = strrchr (text, ':');
  if (colon == NULL || (size_t) (colon - text) >= sizeof host)
    return error_set (EINVAL, "peer \"%s\" is not host:port", text);
  memcpy (host, text, colon - text);
  host[colon - text] = '\0';
  char *h = host;
  if (h[0] == '[' && h[strlen (h) - 1] == ']')
    {
      h[strlen (h) - 1] = '\0';
      h++;
    }
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
  int g = getaddrinfo (h, colon + 1, &hints, &res);
  if (g != 0)
    return error_set (EINVAL, "peer \"%s\": %s", text, gai_strerror (g));
  memset (out, 0, sizeof *out);
  memcpy (&out->addr, res->ai_addr, res->ai_addrlen);
  out->addr_len = res->ai_addrlen;
  freeaddrinfo (res);
  return 0;
}

/* Open a session (see bt.h). */
int
bt_session_open (const struct bt_metainfo *mi,
                 const struct bt_settings *settings,
                 const struct bt_store_ops *store, void *store_ctx,
                 struct bt_session **out)
{
  struct bt_session *s = calloc (1, sizeof *s);
  if (s == NULL)
    return error_set (ENOMEM, "bt: out of memory");
  s->mi = mi;
  if (settings != NULL)
    s->set = *settings;
  s->name = strdup (s->set.name ? s->set.name : mi->name);
  if (s->set.timeout <= 0)
    s->set.timeout = 60;
  if (s->set.max_peers == 0)
    s->set.max_peers = 16;
  if (s->set.pipeline == 0)
    s->set.pipeline = 64;
  if (s->set.announce_retry <= 0)
    s->set.announce_retry = 15;
  if (s->set.announce_min_interval <= 0)
    s->set.announce_min_interval = 30;
  if (s->set.connect_timeout <= 0)
    s->set.connect_timeout = 10;
  if (store != NULL)
    s->store = *store;
  s->store_ctx = store_ctx;
  s->listen_fd = -1;
  pthread_mutex_init (&s->lock, NULL);
  pthread_condattr_init (&s->cond_attr);
  pthread_condattr_setclock (&s->cond_attr, CLOCK_MONOTONIC);
  pthread_cond_init (&s->cond, &s->cond_attr);
  /* Azureus-style peer id: client "DS", version 0.1, then random. */
  memcpy (s->peer_id, "-DS0010-", 8);
  if (getrandom (s->peer_id + 8, 12, 0) != 12
      || getrandom (&s->key, sizeof s->key, 0) != sizeof s->key
      || getrandom (&s->choke_random, sizeof s->choke_random, 0)
         != sizeof s->choke_random)
    {
      bt_session_close (s);
      return error_set (EIO, "bt: getrandom failed");
    }
  s->piece_state = calloc (mi->piece_count, 1);
  s->have_log = calloc (mi->piece_count, sizeof *s->have_log);
  s->announced = calloc (mi->piece_count, 1);
  s->avail = calloc (mi->piece_count, sizeof *s->avail);
  if (s->name == NULL || s->piece_state == NULL || s->have_log == NULL
      || s->announced == NULL || s->avail == NULL)
    {
      bt_session_close (s);
      return error_set (ENOMEM, "bt: out of memory");
    }
  if (s->store.has_piece != NULL)
    for (uint32_t i = 0; i < mi->piece_count; i++)
      if (s->store.has_piece (s->store_ctx, i))
        {
          s->piece_state[i] = PIECE_CLAIMED;
          s->announced[i] = 1;          /* in every greeting's bitfield */
        }
  int r = 0;
  for (const char *const *p = s->set.extra_peers; p && *p && r == 0; p++)
    {
      struct bt_peer_addr a;
      r = bt_parse_host_port (*p, &a);
      if (r == 0)
        session_add_peers (s, &a, 1);
    }
  if (r == 0 && s->set.listen)
    r = listen_start (s);
  if (r == 0)
    r = announce_start (s);
  if (r < 0)
    {
      bt_session_close (s);
      return error_prefix (-r, "bt: %s", settings && settings->name
                           ? settings->name : mi->name);
    }
  *out = s;
  return 0;
}

/* A new want for piece index, first in the list, or NULL (lock held). */
static struct want *
want_new_locked (struct bt_session *s, uint32_t index)
{
  struct want *w = calloc (1, sizeof *w);
  if (w == NULL)
    return NULL;
  w->index = index;
  w->raw_peer = -1;
  pthread_cond_init (&w->cond, &s->cond_attr);
  w->next = s->wants;
  s->wants = w;
  return w;
}

/* Wake every reader (stopping) (lock held). */
static void
wake_all_readers_locked (struct bt_session *s)
{
  for (struct want *w = s->wants; w != NULL; w = w->next)
    pthread_cond_broadcast (&w->cond);
}

/* Find the want for index (lock held). */
static struct want *
find_want (struct bt_session *s, uint32_t index)
{
  for (struct want *w = s->wants; w != NULL; w = w->next)
    if (w->index == index)
      return w;
  return NULL;
}

/* Unlink and free a want nobody waits for (lock held). */
static void
drop_want_locked (struct bt_session *s, struct want *w)
{
  for (struct want **pp = &s->wants; *pp != NULL; pp = &(*pp)->next)
    if (*pp == w)
      {
        *pp = w->next;
        if (w->prefetch)
          s->prefetches--;
        free (w->buf);
        free (w->raw);
        pthread_cond_destroy (&w->cond);
        free (w);
        return;
      }
}

/* The most prefetched pieces kept waiting for a reader. */
static unsigned
max_prefetches (const struct bt_session *s)
{
  unsigned n = (32u << 20) / s->mi->piece_length;
  return n < 2 ? 2 : n > 256 ? 256 : n;
}

/* Queue a background fetch (see bt.h). */
void
bt_prefetch_piece (struct bt_session *s, uint32_t index)
{
  if (index >= s->mi->piece_count)
    return;
  pthread_mutex_lock (&s->lock);
  if (s->piece_state[index] == PIECE_VERIFIED || find_want (s, index) != NULL
      || s->stopping)
    {
      pthread_mutex_unlock (&s->lock);
      return;
    }
  if (s->prefetches >= max_prefetches (s))
    {
      /* Drop the oldest prefetch nobody came for (the list is newest
       * first); if all are still in flight, skip this one. */
      struct want *oldest = NULL;
      for (struct want *w = s->wants; w != NULL; w = w->next)
        if (w->prefetch && w->waiters == 0 && (w->done || w->raw != NULL)
            && !w->verifying)
          oldest = w;
      if (oldest == NULL)
        {
          pthread_mutex_unlock (&s->lock);
          return;
        }
      drop_want_locked (s, oldest);
    }
  struct want *w = want_new_locked (s, index);
  if (w != NULL)
    {
      w->prefetch = true;
      s->prefetches++;
      session_maybe_connect_locked (s);
      session_wake_conns_locked (s);
    }
  pthread_mutex_unlock (&s->lock);
}

/* Fetch one verified piece (see bt.h). */
int
bt_read_piece (struct bt_session *s, uint32_t index, uint8_t *buf)
{
  if (index >= s->mi->piece_count)
    return error_set (EINVAL, "bt: %s: piece %u out of range (%u pieces)",
                      s->name, index, s->mi->piece_count);
  if (session_piece_from_store (s, index, buf) == 0)
    return 0;
  uint32_t size = bt_metainfo_piece_size (s->mi, index);
  struct timespec deadline;
  clock_deadline_after (&deadline, s->set.timeout);
  pthread_mutex_lock (&s->lock);
  if (s->starved_at > 0 && s->stats.peers_connected == 0
      && clock_seconds () - s->starved_at < s->set.timeout)
    {
      /* The swarm is empty: a read timed out moments ago and no peer
       * has connected since.  Fail at once: the kernel retries a failed
       * read page by page, and a reader behind a queue of pieces would
       * otherwise wait one timeout per retry. */
      session_maybe_connect_locked (s);
      unsigned known = s->peer_count;
      double ago = clock_seconds () - s->starved_at;
      pthread_mutex_unlock (&s->lock);
      return error_set (EIO, "bt: %s: piece %u: no peer delivered a verified "
                        "copy within %g s (a read timed out %.0f s ago and "
                        "no peer has connected since; %u peers known); "
                        "check the trackers and the swarm, or raise the "
                        "timeout", s->name, index, s->set.timeout, ago,
                        known);
    }
  struct want *w = find_want (s, index);
  if (w == NULL && (w = want_new_locked (s, index)) == NULL)
    {
      pthread_mutex_unlock (&s->lock);
      return error_set (ENOMEM, "bt: %s: out of memory", s->name);
    }
  if (w->prefetch)
    {
      w->prefetch = false;      /* its reader came: drop it when done */
      s->prefetches--;
    }
  if (w->waiters++ == 0)
    w->waited_since = clock_seconds ();
  session_maybe_connect_locked (s);
  session_wake_conns_locked (s);
  int r = 0;
  while (!w->done && !s->stopping && r == 0)
    if (w->raw != NULL && !w->verifying)
      verify_raw_locked (s, w);
    else
      r = pthread_cond_timedwait (&w->cond, &s->lock, &deadline);
  bool done = w->done;
  if (done)
    memcpy (buf, w->buf, size);
  unsigned known = s->peer_count, connected = s->stats.peers_connected;
  if (!done && !s->stopping && connected == 0)
    s->starved_at = clock_seconds ();
  if (--w->waiters == 0)
    drop_want_locked (s, w);
  pthread_mutex_unlock (&s->lock);
  if (done)
    return 0;
  return error_set (EIO, "bt: %s: piece %u: no peer delivered a verified "
                    "copy within %g s (%u peers known, %u connected); "
                    "check the trackers and the swarm, or raise the timeout",
                    s->name, index, s->set.timeout, known, connected);
}

/* Wake every reader and turn away later ones (see bt.h). */
void
bt_session_abort_reads (struct bt_session *s)
{
  pthread_mutex_lock (&s->lock);
  s->stopping = true;
  pthread_cond_broadcast (&s->cond);
  wake_all_readers_locked (s);
  pthread_mutex_unlock (&s->lock);
}

/* The listening port. */
uint16_t
bt_session_port (const struct bt_session *s)
{
  return s->port;
}

/* Copy the counters. */
void
bt_session_stats (struct bt_session *s, struct bt_stats *out)
{
  pthread_mutex_lock (&s->lock);
  *out = s->stats;
  out->peers_known = s->peer_count;
  out->peers_unchoked = s->unchoked;
  out->pieces_have = 0;
  for (uint32_t i = 0; i < s->mi->piece_count; i++)
    out->pieces_have += s->piece_state[i] != PIECE_ABSENT;
  pthread_mutex_unlock (&s->lock);
}

/* Stop everything and free the session. */
void
bt_session_close (struct bt_session *s)
{
  if (s == NULL)
    return;
  pthread_mutex_lock (&s->lock);
  s->stopping = true;
  atomic_store (&s->cancel, true);
  pthread_cond_broadcast (&s->cond);
  wake_all_readers_locked (s);
  for (struct bt_conn *c = s->conns; c != NULL; c = conn_next (c))
    conn_shutdown (c);
  pthread_mutex_unlock (&s->lock);
  listen_stop (s);
  announce_stop (s);
  pthread_mutex_lock (&s->lock);
  while (s->live_conns > 0)
    pthread_cond_wait (&s->cond, &s->lock);
  pthread_mutex_unlock (&s->lock);
  while (s->wants != NULL)
    drop_want_locked (s, s->wants);
  free (s->peers);
  free (s->piece_state);
  free (s->have_log);
  free (s->announced);
  free (s->avail);
  free (s->name);
  pthread_cond_destroy (&s->cond);
  pthread_condattr_destroy (&s->cond_attr);
  pthread_mutex_destroy (&s->lock);
  free (s);
}
