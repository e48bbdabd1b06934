/* Unit tests for a session with no network (no trackers, no peers): a
 * store's pieces are verified before they are returned, a corrupt one is
 * never handed out (EIO after the timeout), and bad indexes are refused;
 * a piece a connection hands over unverified is checked by the reader
 * waiting for it: a bad copy is counted and waited past, a good one is
 * returned; a piece the store is still taking in (-EAGAIN) stays ours
 * when a peer asks for it, one the store lost is absent. */
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tests/unit/check.h"
#include "bt.h"
#include "error.h"
#include "internal.h"
#include "thread.h"
#include "test_fixture.h"

static int corrupt_piece = -1;
static int reads;
static int store_error[4];   /* per piece: what read_piece fails with */

/* has_piece: the store claims everything. */
static bool
has (void *ctx, uint32_t index)
{
  return true;
}

/* read_piece: the content, with one piece corrupted if asked. */
static int
read_piece (void *ctx, uint32_t index, uint8_t *buf, size_t len)
{
  reads++;
  if (store_error[index] != 0)
    return store_error[index];
  memcpy (buf, content + (size_t) index * PLEN, len);
  if ((int) index == corrupt_piece)
    buf[len / 2] ^= 1;
  return 0;
}

/* A reader of piece 1 on its own thread. */
struct reader
{
  struct bt_session *s;
  uint8_t buf[PLEN];
  int r;
};

static void *
reader_main (void *arg)
{
  struct reader *rd = arg;
  rd->r = bt_read_piece (rd->s, 1, rd->buf);
  return NULL;
}

/* Wait (up to 5 s) until a reader waits for piece 1, or the session has
 * counted `failures` hash failures. */
static bool
wait_for (struct bt_session *s, bool want, uint64_t failures)
{
  for (int i = 0; i < 500; i++)
    {
      bool ok;
      pthread_mutex_lock (&s->lock);
      ok = want ? s->wants != NULL && s->wants->waiters > 0
                : s->stats.hash_failures >= failures;
      pthread_mutex_unlock (&s->lock);
      if (ok)
        return true;
      nanosleep (&(struct timespec) { 0, 10000000 }, NULL);
    }
  return false;
}

/* A connection's unverified piece goes to the reader waiting for it,
 * which checks it: the bad copy is never returned. */
static void
test_reader_verifies (struct bt_metainfo *mi)
{
  struct bt_settings set = { .timeout = 10, .name = "unit" };
  struct bt_session *s;
  struct reader rd = { .r = 1 };
  pthread_t t;

  CHECK (bt_session_open (mi, &set, NULL, NULL, &s) == 0);
  rd.s = s;
  CHECK (thread_create ("test-reader", &t, NULL, reader_main, &rd) == 0);
  CHECK (wait_for (s, true, 0));
  uint8_t *bad = malloc (PLEN), *good = malloc (PLEN);
  memcpy (bad, content + PLEN, PLEN);
  bad[7] ^= 0x40;
  memcpy (good, content + PLEN, PLEN);
  CHECK (session_piece_assembled (s, 1, bad, 99, -1));
  CHECK (wait_for (s, false, 1));
  CHECK (rd.r == 1);                    /* still waiting */
  CHECK (session_piece_assembled (s, 1, good, 100, -1));
  pthread_join (t, NULL);
  CHECK (rd.r == 0);
  CHECK (memcmp (rd.buf, content + PLEN, PLEN) == 0);
  struct bt_stats st;
  bt_session_stats (s, &st);
  CHECK (st.hash_failures == 1 && st.pieces_fetched == 1);
  /* Nobody wants piece 2: a connection verifies it itself. */
  uint8_t *other = malloc (PLEN);
  CHECK (!session_piece_assembled (s, 2, other, 101, -1));
  free (other);
  bt_session_close (s);
}

int
main (void)
{
  struct bt_metainfo *mi = make_torrent ();
  CHECK (mi->piece_count == 4 && mi->tier_count == 0);

  struct bt_store_ops ops = { .has_piece = has, .read_piece = read_piece };
  struct bt_settings set = { .timeout = 0.5, .name = "unit" };
  struct bt_session *s;
  corrupt_piece = 2;
  CHECK (bt_session_open (mi, &set, &ops, NULL, &s) == 0);
  uint8_t *buf = malloc (PLEN);

  /* good pieces come from the store, verified once */
  CHECK (bt_read_piece (s, 0, buf) == 0);
  CHECK (memcmp (buf, content, PLEN) == 0);
  CHECK (bt_read_piece (s, 3, buf) == 0);
  CHECK (memcmp (buf, content + 3 * PLEN, 100) == 0);

  /* the corrupt one is never returned: no peer has it either, so EIO */
  memset (buf, 0, PLEN);
  CHECK (bt_read_piece (s, 2, buf) == -EIO);
  CHECK (strstr (error_message (), "piece 2: no peer delivered a verified "
                 "copy within 0.5 s") != NULL);
  for (size_t i = 0; i < PLEN; i++)
    if (buf[i] != 0)
      {
        CHECK (!"bytes of a bad piece reached the caller");
        break;
      }
  struct bt_stats st;
  bt_session_stats (s, &st);
  CHECK (st.hash_failures == 1);

  /* out of range */
  CHECK (bt_read_piece (s, 4, buf) == -EINVAL);

  /* A peer asks for verified pieces the store cannot give now: piece 0
   * is still being taken in (-EAGAIN: refused, but still ours), piece 3
   * was evicted (absent from then on, so never offered again). */
  store_error[0] = -EAGAIN;
  store_error[3] = -ENOENT;
  CHECK (session_piece_from_store (s, 0, buf) < 0);
  CHECK (session_piece_from_store (s, 3, buf) < 0);
  CHECK (s->piece_state[0] == PIECE_VERIFIED);
  CHECK (s->piece_state[3] == PIECE_ABSENT);
  store_error[0] = store_error[3] = 0;
  CHECK (session_piece_from_store (s, 0, buf) == 0);
  CHECK (memcmp (buf, content, PLEN) == 0);

  bt_session_close (s);
  free (buf);
  test_reader_verifies (mi);
  bt_metainfo_free (mi);
  if (check_failures == 0)
    printf ("session: all checks passed\n");
  return check_failures != 0;
}
