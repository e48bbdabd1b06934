/* Fuzz harness: bt/magnet_uri.c.  The input is a magnet URI, then
 * optionally a newline and an info dictionary as a peer would send it;
 * a URI that parses is turned into a torrent with that dictionary. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bt/bt.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const uint8_t *nl = memchr (data, '\n', size);
  size_t ulen = nl ? (size_t) (nl - data) : size;
  char *uri = malloc (ulen + 1);
  if (uri == NULL)
    return 0;
  memcpy (uri, data, ulen);
  uri[ulen] = '\0';
  struct bt_magnet *m;
  if (bt_magnet_parse (uri, &m) == 0)
    {
      struct bt_metainfo *mi = NULL;
      if (nl != NULL
          && bt_magnet_metainfo (m, nl + 1, size - ulen - 1, &mi) == 0)
        bt_metainfo_free (mi);
      bt_magnet_free (m);
    }
  free (uri);
  return 0;
}
