/* Unit tests of a session's seeding side with no peers: pieces the store
 * gains later are counted (store_changed, store_added, once each), the
 * piece check, the upload slots and the optimistic unchoke (seeding.c,
 * the clock passed in), and the listening port
 * range (a taken port makes the session take another). */
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../tests/unit/check.h"
#include "bt.h"
#include "error.h"
#include "test_fixture.h"
#include "internal.h"


static bool store_has[4];
static bool store_lost[4];      /* has_piece says yes, read_piece fails */

/* has_piece: what the test put in the store. */
static bool
has (void *ctx, uint32_t index)
{
  (void) ctx;
  return index < 4 && store_has[index];
}

/* read_piece: the content. */
static int
read_piece (void *ctx, uint32_t index, uint8_t *buf, size_t len)
{
  (void) ctx;
  if (store_lost[index])
    return -ENOENT;
  memcpy (buf, content + (size_t) index * PLEN, len);
  return 0;
}

static uint32_t
have (struct bt_session *s)
{
  struct bt_stats st;
  bt_session_stats (s, &st);
  return st.pieces_have;
}

/* A loopback TCP port held by a listening socket: *fd keeps it. */
static uint16_t
hold_port (int *fd)
{
  struct sockaddr_in a = { .sin_family = AF_INET,
                           .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof a;
  *fd = socket (AF_INET, SOCK_STREAM, 0);
  CHECK (*fd >= 0 && bind (*fd, (struct sockaddr *) &a, sizeof a) == 0
         && listen (*fd, 1) == 0
         && getsockname (*fd, (struct sockaddr *) &a, &len) == 0);
  return ntohs (a.sin_port);
}

int
main (void)
{
  struct bt_metainfo *mi = make_torrent ();
  CHECK (mi->piece_count == 4);

  /* the piece check */
  CHECK (bt_piece_verify (mi, 0, content));
  content[5] ^= 1;
  CHECK (!bt_piece_verify (mi, 0, content));
  content[5] ^= 1;
  CHECK (!bt_piece_verify (mi, 9, content));

  int held;
  uint16_t taken = hold_port (&held);
  struct bt_store_ops ops = { .has_piece = has, .read_piece = read_piece };
  struct bt_settings set = { .timeout = 0.5, .name = "unit", .listen = true,
                             .listen_address = "127.0.0.1",
                             .listen_port = taken, .max_unchoked = 2 };
  struct bt_session *s;
  CHECK (bt_session_open (mi, &set, &ops, NULL, &s) == 0);
  CHECK (bt_session_port (s) != 0 && bt_session_port (s) != taken);
  close (held);

  /* pieces the store gains later, each counted once */
  CHECK (have (s) == 0);
  store_has[1] = true;
  bt_session_store_changed (s);
  CHECK (have (s) == 1);
  bt_session_store_changed (s);
  CHECK (have (s) == 1 && s->have_log_len == 1);
  bt_session_store_added (s, 3);
  bt_session_store_added (s, 3);
  bt_session_store_added (s, 99);
  CHECK (have (s) == 2 && s->have_log_len == 2);
  uint8_t *buf = malloc (PLEN);
  CHECK (bt_read_piece (s, 3, buf) == 0);
  CHECK (memcmp (buf, content + 3 * PLEN, 100) == 0);

  /* a piece the store lost (evicted, never kept) is absent again: no
   * peer is served it, a reader fetches it; it is not logged twice */
  store_lost[3] = true;
  CHECK (session_piece_from_store (s, 3, buf) == -ENOENT);
  CHECK (have (s) == 1 && s->piece_state[3] == PIECE_ABSENT);
  store_lost[3] = false;
  bt_session_store_added (s, 3);
  CHECK (have (s) == 2 && s->have_log_len == 2);

  /* two upload slots: the third peer waits until one is given back */
  struct seeding_peer w[5];
  memset (w, 0, sizeof w);
  CHECK (seeding_take_slot (s, &w[0]) && seeding_take_slot (s, &w[1]));
  CHECK (!seeding_take_slot (s, &w[2]) && w[2].waiting
         && s->choked_waiting == 1);
  CHECK (seeding_should_rotate (s, -1e9));
  CHECK (!seeding_should_rotate (s, 1e18));

  /* the optimistic unchoke: the only waiting peer at once, kept until
   * 30 s have passed (the clock is the caller's argument) */
  CHECK (seeding_optimistic_step (s, 1000) == &w[2]);
  CHECK (seeding_is_optimistic (s, &w[2]) && !seeding_is_optimistic (s, &w[0]));
  CHECK (!seeding_take_slot (s, &w[3]) && !seeding_take_slot (s, &w[4]));
  CHECK (s->choked_waiting == 3);
  CHECK (seeding_optimistic_step (s, 1029) == &w[2]);
  /* every 30 s another one, at random among the waiting: never the same
   * twice in a row, and each of them in time */
  unsigned chosen[5] = { 0 };
  struct seeding_peer *prev = &w[2];
  for (int round = 1; round <= 60; round++)
    {
      struct seeding_peer *p = seeding_optimistic_step (s, 1000 + 30.0 * round);
      CHECK (p != NULL && p != prev && (p == &w[2] || p == &w[3] || p == &w[4]));
      if (p != NULL && p >= w && p < w + 5)
        chosen[p - w]++;
      prev = p;
    }
  CHECK (chosen[2] > 0 && chosen[3] > 0 && chosen[4] > 0);
  CHECK (chosen[0] == 0 && chosen[1] == 0);   /* they hold regular slots */
  /* the optimistic peer that loses interest frees its place at once */
  struct seeding_peer *opt = prev;
  seeding_stop_waiting (s, opt);
  CHECK (!opt->waiting && s->choked_waiting == 2 && s->optimistic == NULL);
  struct seeding_peer *next = seeding_optimistic_step (s, 1000 + 30.0 * 60 + 1);
  CHECK (next != NULL && next != opt && next->waiting);
  /* one that takes a regular slot is no longer optimistic nor waiting */
  seeding_release_slot (s);
  CHECK (seeding_take_slot (s, next) && !next->waiting
         && s->optimistic == NULL && s->choked_waiting == 1);
  /* the last waiting peer leaves: no one to choose */
  for (int i = 2; i < 5; i++)
    seeding_stop_waiting (s, &w[i]);
  CHECK (s->choked_waiting == 0 && s->waiting == NULL);
  CHECK (seeding_optimistic_step (s, 1e6) == NULL);
  CHECK (!seeding_should_rotate (s, -1e9));
  seeding_release_slot (s);
  seeding_release_slot (s);
  CHECK (s->unchoked == 0);

  bt_session_close (s);
  free (buf);
  bt_metainfo_free (mi);
  if (check_failures == 0)
    printf ("seeding: all checks passed\n");
  return check_failures != 0;
}
