/* Unit tests for a session with no network (no trackers, no peers): a
 * store's pieces are verified before they are returned, a corrupt one is
 * never handed out (EIO after the timeout), and bad indexes are refused. */
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/unit/check.h"
#include "bt.h"
#include "error.h"
#include "test_fixture.h"

static int corrupt_piece = -1;
static int reads;

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
  memcpy (buf, content + (size_t) index * PLEN, len);
  if ((int) index == corrupt_piece)
    buf[len / 2] ^= 1;
  return 0;
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

  bt_session_close (s);
  free (buf);
  bt_metainfo_free (mi);
  if (check_failures == 0)
    printf ("session: all checks passed\n");
  return check_failures != 0;
}
