/* Unit tests for magnet URIs and building a torrent from fetched
 * metadata (bt/magnet.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/unit/check.h"
#include "bt.h"
#include "error.h"

static const uint8_t hash[20] = {
  0xc1, 0x2f, 0xe1, 0xc0, 0x6b, 0xba, 0x25, 0x4a, 0x9d, 0xc9,
  0xf5, 0x19, 0xb3, 0x35, 0xaa, 0x7c, 0x13, 0x67, 0xa8, 0x8a,
};

static void
test_hex_and_base32 (void)
{
  struct bt_magnet *m = NULL;
  int r = bt_magnet_parse ("magnet:?xt=urn:btih:"
                           "C12FE1C06BBA254A9DC9F519B335AA7C1367A88A"
                           "&dn=disk+one.img&tr=http%3A%2F%2Fa%3A1%2Fann%3Fk%3Da+b"
                           "&tr=udp://b:2&x.pe=127.0.0.1:6881", &m);
  CHECK (r == 0);
  if (r == 0)
    {
      CHECK (memcmp (m->info_hash, hash, 20) == 0);
      CHECK (m->name && strcmp (m->name, "disk one.img") == 0);
      CHECK (m->tracker_count == 2);
      CHECK (m->tracker_count == 2
             && strcmp (m->trackers[0], "http://a:1/ann?k=a+b") == 0
             && strcmp (m->trackers[1], "udp://b:2") == 0);
      CHECK (m->peer_count == 1
             && strcmp (m->peers[0], "127.0.0.1:6881") == 0);
      bt_magnet_free (m);
    }
  m = NULL;
  r = bt_magnet_parse ("magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK",
                       &m);
  CHECK (r == 0);
  if (r == 0)
    {
      CHECK (memcmp (m->info_hash, hash, 20) == 0);
      CHECK (m->name == NULL && m->tracker_count == 0);
      bt_magnet_free (m);
    }
  /* Lower-case base32 is accepted too. */
  m = NULL;
  r = bt_magnet_parse ("magnet:?xt=urn:btih:yex6dqdlxisuvhoj6um3gnnkpqjwpkek",
                       &m);
  CHECK (r == 0 && memcmp (m->info_hash, hash, 20) == 0);
  bt_magnet_free (m);
}

static void
test_bad (void)
{
  static const char *const bad[] = {
    "http://x/y.torrent",
    "magnet:?dn=nohash",
    "magnet:?xt=urn:btih:C12FE1C06BBA254A9DC9F519B335AA7C1367A88",
    "magnet:?xt=urn:btih:G12FE1C06BBA254A9DC9F519B335AA7C1367A88A",
    "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE1",
    "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK"
    "&xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK",
    "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK&tr=http%3",
    "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK&tr=a%00b",
    "magnet:?xt=urn:btmh:1220aaaa",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    {
      struct bt_magnet *m = NULL;
      int r = bt_magnet_parse (bad[i], &m);
      if (r != -EINVAL)
        fprintf (stderr, "accepted: %s\n", bad[i]);
      CHECK (r == -EINVAL && m == NULL);
      CHECK (strlen (error_message ()) > 0);
    }
}

static void
test_metainfo (void)
{
  static const char info[] = "d6:lengthi5e4:name1:a12:piece lengthi16384e"
                             "6:pieces20:AAAAAAAAAAAAAAAAAAAAe";
  struct bt_magnet *m = NULL;
  int r = bt_magnet_parse ("magnet:?xt=urn:btih:"
                           "0a9e3e273a9c62626a57c63be187222044589d3b"
                           "&tr=http://t:1/announce&tr=udp://u:2", &m);
  CHECK (r == 0);
  if (r != 0)
    return;
  struct bt_metainfo *mi = NULL;
  r = bt_magnet_metainfo (m, (const uint8_t *) info, sizeof info - 1, &mi);
  CHECK (r == 0);
  if (r == 0)
    {
      CHECK (mi->total_length == 5 && strcmp (mi->name, "a") == 0);
      CHECK (mi->tier_count == 2
             && strcmp (mi->tiers[0][0], "http://t:1/announce") == 0);
      bt_metainfo_free (mi);
    }
  /* The same dictionary under another info-hash is refused. */
  m->info_hash[0] ^= 1;
  mi = NULL;
  r = bt_magnet_metainfo (m, (const uint8_t *) info, sizeof info - 1, &mi);
  CHECK (r == -EPROTO && mi == NULL);
  CHECK (strstr (error_message (), "SHA-1") != NULL);
  bt_magnet_free (m);
}

int
main (void)
{
  test_hex_and_base32 ();
  test_bad ();
  test_metainfo ();
  if (check_failures == 0)
    printf ("magnet: all checks passed\n");
  return check_failures != 0;
}
