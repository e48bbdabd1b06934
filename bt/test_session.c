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

#define PLEN 32768
#define TOTAL (3 * PLEN + 100)

static uint8_t content[TOTAL];
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

/* Build a trackerless single-file torrent of content in memory. */
static struct bt_metainfo *
make_torrent (void)
{
  static char buf[4096];
  unsigned count = (TOTAL + PLEN - 1) / PLEN;
  int n = snprintf (buf, sizeof buf, "d4:infod6:lengthi%de4:name1:x12:piece "
                    "lengthi%de6:pieces%u:", TOTAL, PLEN, count * 20);
  for (unsigned i = 0; i < count; i++)
    {
      size_t len = i + 1 < count ? PLEN : TOTAL - (size_t) i * PLEN;
      gnutls_hash_fast (GNUTLS_DIG_SHA1, content + (size_t) i * PLEN, len,
                        buf + n);
      n += 20;
    }
  n += snprintf (buf + n, sizeof buf - n, "ee");
  struct bt_metainfo *mi;
  if (bt_metainfo_parse ((uint8_t *) buf, n, &mi) < 0)
    {
      fprintf (stderr, "%s\n", error_message ());
      exit (1);
    }
  return mi;
}

int
main (void)
{
  for (size_t i = 0; i < TOTAL; i++)
    content[i] = (uint8_t) (i * 7 + i / 251);
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
