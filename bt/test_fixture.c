/* diskshelf bt unit tests: the shared in-memory torrent (see
 * test_fixture.h). */
#include "test_fixture.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"

uint8_t content[TOTAL];

struct bt_metainfo *
make_torrent (void)
{
  static char buf[4096];
  unsigned count = (TOTAL + PLEN - 1) / PLEN;

  for (size_t i = 0; i < TOTAL; i++)
    content[i] = (uint8_t) (i * 7 + i / 251);
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
