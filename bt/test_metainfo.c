/* Unit tests for metainfo parsing (bt/metainfo.c): torrents made by
 * mktorrent, transmission-create and libtorrent (bt/testdata/), and
 * hand-made malformed ones.  argv[1] is the testdata directory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/unit/check.h"
#include "bt.h"
#include "error.h"

static const char *testdata;

/* Load testdata/NAME. */
static int
load (const char *name, struct bt_metainfo **mi)
{
  char path[4096];
  snprintf (path, sizeof path, "%s/%s", testdata, name);
  int r = bt_metainfo_load (path, mi);
  if (r < 0)
    fprintf (stderr, "%s: %s\n", name, error_message ());
  return r;
}

static void
check_hash (const struct bt_metainfo *mi, const char *hex)
{
  char buf[41];
  bt_info_hash_hex (mi, buf);
  if (strcmp (buf, hex) != 0)
    fprintf (stderr, "info-hash %s, want %s\n", buf, hex);
  CHECK (strcmp (buf, hex) == 0);
}

static void
test_mktorrent_single (void)
{
  struct bt_metainfo *mi;
  CHECK (load ("single.torrent", &mi) == 0);
  check_hash (mi, "48b458266ede2f65da3b90e43661488c1f0d3ff9");
  CHECK (!mi->multi_file && !mi->hybrid && !mi->private_);
  CHECK (strcmp (mi->name, "single.bin") == 0);
  CHECK (mi->piece_length == 32768 && mi->piece_count == 4);
  CHECK (mi->total_length == 100000);
  CHECK (bt_metainfo_piece_size (mi, 0) == 32768);
  CHECK (bt_metainfo_piece_size (mi, 3) == 100000 - 3 * 32768);
  CHECK (bt_metainfo_piece_size (mi, 4) == 0);
  CHECK (mi->file_count == 1 && strcmp (mi->files[0].path, "single.bin") == 0);
  CHECK (mi->tier_count == 1
         && strcmp (mi->tiers[0][0], "http://127.0.0.1:1/announce") == 0
         && mi->tiers[0][1] == NULL);
  CHECK (mi->url_count == 0);
  bt_metainfo_free (mi);
}

static void
test_mktorrent_multi (void)
{
  struct bt_metainfo *mi;
  CHECK (load ("multi.torrent", &mi) == 0);
  check_hash (mi, "5ef1c6d1e3ed0a90c0eafc0af9c6e034fc642e1b");
  CHECK (mi->multi_file && strcmp (mi->name, "multi") == 0);
  CHECK (mi->file_count == 3);
  CHECK (strcmp (mi->files[0].path, "a.bin") == 0 && mi->files[0].offset == 0
         && mi->files[0].length == 40000);
  CHECK (strcmp (mi->files[1].path, "c.txt") == 0
         && mi->files[1].offset == 40000 && mi->files[1].length == 6);
  CHECK (strcmp (mi->files[2].path, "sub/b.bin") == 0
         && mi->files[2].offset == 40006 && mi->files[2].length == 70001);
  CHECK (mi->total_length == 110007 && mi->piece_count == 4);
  /* BEP 12: two tiers, the first with two trackers */
  CHECK (mi->tier_count == 2);
  CHECK (strcmp (mi->tiers[0][0], "http://t1.example/announce") == 0);
  CHECK (strcmp (mi->tiers[0][1], "http://t1b.example/announce") == 0);
  CHECK (mi->tiers[0][2] == NULL);
  CHECK (strcmp (mi->tiers[1][0], "udp://t2.example:6969/announce") == 0);
  /* BEP 19 */
  CHECK (mi->url_count == 1
         && strcmp (mi->url_list[0], "http://ws.example/files/") == 0);
  CHECK (bt_metainfo_find_file (mi, "sub/b.bin") == 2);
  CHECK (bt_metainfo_find_file (mi, "b.bin") == -ENOENT);
  CHECK (strstr (error_message (), "it has: a.bin, c.txt, sub/b.bin") != NULL);
  bt_metainfo_free (mi);
}

static void
test_transmission_private0 (void)
{
  struct bt_metainfo *mi;
  CHECK (load ("tc.torrent", &mi) == 0);
  check_hash (mi, "376b70f30fb53cc33adeb7b9d282c1bcf6c20bb1");
  CHECK (!mi->private_ && mi->total_length == 100000);
  bt_metainfo_free (mi);
}

static void
test_hybrid_uses_v1 (void)
{
  struct bt_metainfo *mi;
  CHECK (load ("hybrid.torrent", &mi) == 0);
  /* the v1 info-hash: SHA-1 over the whole info dictionary */
  check_hash (mi, "fa32dcd8535d6dc70c982b13593807dd25c746cc");
  CHECK (mi->hybrid && mi->multi_file);
  CHECK (mi->piece_length == 16384 && mi->piece_count == 9);
  CHECK (mi->file_count == 6 && mi->total_length == 9 * 16384);
  CHECK (mi->files[1].pad && !mi->files[0].pad);
  CHECK (strcmp (mi->files[2].path, "c.txt") == 0
         && mi->files[2].offset == 49152);
  CHECK (bt_metainfo_find_file (mi, ".pad/9152") == -ENOENT);
  bt_metainfo_free (mi);
}

static void
test_v2_only_refused (void)
{
  struct bt_metainfo *mi;
  char path[4096];
  snprintf (path, sizeof path, "%s/v2only.torrent", testdata);
  CHECK (bt_metainfo_load (path, &mi) == -EINVAL);
  CHECK (strstr (error_message (), "v2-only torrent (BEP 52) is not "
                 "supported") != NULL);
}

/* Build a single-file torrent: info = d <before> 6:pieces N:<n bytes>
 * <after> e, the keys in `before` and `after` already sorted. */
static size_t
build (char *out, size_t size, const char *top_before, const char *before,
       size_t npieces_bytes, const char *after)
{
  int n = snprintf (out, size, "d%s4:infod%s6:pieces%zu:", top_before,
                    before, npieces_bytes);
  memset (out + n, 'P', npieces_bytes);
  n += npieces_bytes;
  n += snprintf (out + n, size - n, "%see", after);
  return n;
}

/* Expect parse failure with msg in the message. */
static void
expect_bad (const char *buf, size_t len, const char *msg)
{
  struct bt_metainfo *mi = NULL;
  int r = bt_metainfo_parse ((const uint8_t *) buf, len, &mi);
  if (r != -EINVAL || strstr (error_message (), msg) == NULL)
    fprintf (stderr, "wanted \"%s\", got %d \"%s\" for %.*s\n", msg, r,
             error_message (), (int) (len > 200 ? 200 : len), buf);
  CHECK (r == -EINVAL);
  CHECK (strstr (error_message (), msg) != NULL);
  CHECK (mi == NULL);
}

static void
test_handmade (void)
{
  static char buf[65536];
  size_t n;
  struct bt_metainfo *mi;

  /* A good one first, to show the builder works. */
  n = build (buf, sizeof buf, "", "6:lengthi100e4:name1:x12:piece lengthi64e",
             40, "");
  CHECK (bt_metainfo_parse ((uint8_t *) buf, n, &mi) == 0);
  CHECK (mi->piece_count == 2 && mi->tier_count == 0);
  bt_metainfo_free (mi);

  n = build (buf, sizeof buf, "", "6:lengthi100e4:name1:x12:piece lengthi64e",
             60, "");
  expect_bad (buf, n, "holds 3 hashes but 100 bytes in pieces of 64 need 2");
  n = build (buf, sizeof buf, "", "6:lengthi100e4:name1:x12:piece lengthi64e",
             41, "");
  expect_bad (buf, n, "not a multiple of 20");
  n = build (buf, sizeof buf, "", "6:lengthi100e4:name1:x12:piece lengthi0e",
             40, "");
  expect_bad (buf, n, "piece length");
  n = build (buf, sizeof buf, "", "6:lengthi0e4:name1:x12:piece lengthi64e",
             0, "");
  expect_bad (buf, n, "content is empty");
  n = build (buf, sizeof buf, "", "6:lengthi-5e4:name1:x12:piece lengthi64e",
             20, "");
  expect_bad (buf, n, "info.length");
  n = build (buf, sizeof buf, "", "6:lengthi100e4:name2:..12:piece lengthi64e",
             40, "");
  expect_bad (buf, n, "leaves the torrent's directory");
  n = build (buf, sizeof buf, "", "6:lengthi100e4:name3:a/b12:piece "
             "lengthi64e", 40, "");
  expect_bad (buf, n, "containing '/'");
  n = build (buf, sizeof buf, "", "6:lengthi100e4:name0:12:piece lengthi64e",
             40, "");
  expect_bad (buf, n, "empty path component");
  /* unsorted keys inside info: the hash would be ambiguous */
  n = build (buf, sizeof buf, "", "4:name1:x6:lengthi100e12:piece lengthi64e",
             40, "");
  expect_bad (buf, n, "unsorted keys");
  /* both length and files */
  n = build (buf, sizeof buf, "", "5:filesle6:lengthi100e4:name1:x12:piece "
             "lengthi64e", 40, "");
  expect_bad (buf, n, "exactly one of length");
  /* multi-file paths */
  static const char *const bad_paths[][2] = {
    { "l2:..1:ae", "leaves the torrent's directory" },
    { "l1:a2:..e", "leaves the torrent's directory" },
    { "l1:.e", "leaves the torrent's directory" },
    { "l0:e", "empty path component" },
    { "le", "no valid path" },
    { "l4:/etce", "containing '/'" },
    { "li5ee", "is not a string" },
  };
  for (size_t i = 0; i < sizeof bad_paths / sizeof *bad_paths; i++)
    {
      char before[256];
      snprintf (before, sizeof before, "5:filesld6:lengthi100e4:path%see"
                "4:name1:x12:piece lengthi64e", bad_paths[i][0]);
      n = build (buf, sizeof buf, "", before, 40, "");
      expect_bad (buf, n, bad_paths[i][1]);
    }
  n = build (buf, sizeof buf, "", "5:filesld6:lengthi50e4:pathl1:aeed6:"
             "lengthi50e4:pathl1:aeee4:name1:x12:piece lengthi64e", 40, "");
  expect_bad (buf, n, "appears twice");
  n = build (buf, sizeof buf, "", "5:filesle4:name1:x12:piece lengthi64e", 0,
             "");
  expect_bad (buf, n, "info.files is empty");
  /* unknown meta version */
  n = build (buf, sizeof buf, "", "6:lengthi100e12:meta versioni3e4:name1:x"
             "12:piece lengthi64e", 40, "");
  expect_bad (buf, n, "unknown meta version 3");
  /* not a torrent at all */
  expect_bad ("i5e", 3, "top level is not a dictionary");
  expect_bad ("de", 2, "no info dictionary");
  expect_bad ("d4:info", 7, "not a valid torrent file");
  /* trailing garbage after a good torrent */
  n = build (buf, sizeof buf, "", "6:lengthi100e4:name1:x12:piece lengthi64e",
             40, "");
  buf[n++] = 'x';
  expect_bad (buf, n, "trailing bytes");
  /* trackers: announce-list beats announce; bad entries refused */
  n = build (buf, sizeof buf, "8:announce3:one13:announce-listll3:twoel5:"
             "threeee", "6:lengthi100e4:name1:x12:piece lengthi64e", 40, "");
  CHECK (bt_metainfo_parse ((uint8_t *) buf, n, &mi) == 0);
  CHECK (mi->tier_count == 2 && strcmp (mi->tiers[0][0], "two") == 0
         && strcmp (mi->tiers[1][0], "three") == 0);
  bt_metainfo_free (mi);
  n = build (buf, sizeof buf, "13:announce-listli5ee", "6:lengthi100e4:name1"
             ":x12:piece lengthi64e", 40, "");
  expect_bad (buf, n, "tier 0 is not a list");
  /* url-list (outside info) as a list; an empty string means none */
  const char *ul = "d4:infod6:lengthi1e4:name1:x12:piece lengthi64e6:pieces"
                   "20:PPPPPPPPPPPPPPPPPPPPe8:url-listl3:ws13:ws2ee";
  CHECK (bt_metainfo_parse ((const uint8_t *) ul, strlen (ul), &mi) == 0);
  CHECK (mi->url_count == 2 && strcmp (mi->url_list[1], "ws2") == 0);
  bt_metainfo_free (mi);
  ul = "d4:infod6:lengthi1e4:name1:x12:piece lengthi64e6:pieces"
       "20:PPPPPPPPPPPPPPPPPPPPe8:url-list0:e";
  CHECK (bt_metainfo_parse ((const uint8_t *) ul, strlen (ul), &mi) == 0);
  CHECK (mi->url_count == 0);
  bt_metainfo_free (mi);
  /* private flag */
  n = build (buf, sizeof buf, "", "6:lengthi100e4:name1:x12:piece lengthi64e",
             40, "7:privatei1e");
  CHECK (bt_metainfo_parse ((uint8_t *) buf, n, &mi) == 0);
  CHECK (mi->private_);
  bt_metainfo_free (mi);
}

int
main (int argc, char **argv)
{
  if (argc != 2)
    {
      fprintf (stderr, "usage: test-bt-metainfo TESTDATA-DIR\n");
      return 2;
    }
  testdata = argv[1];
  test_mktorrent_single ();
  test_mktorrent_multi ();
  test_transmission_private0 ();
  test_hybrid_uses_v1 ();
  test_v2_only_refused ();
  test_handmade ();
  if (check_failures == 0)
    printf ("metainfo: all checks passed\n");
  return check_failures != 0;
}
