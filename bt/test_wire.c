/* Unit tests for peer wire framing and parsing (bt/wire.c). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../tests/unit/check.h"
#include "error.h"
#include "wire.h"

static const struct bt_wire_limits lim = { .piece_count = 10, .fast = true };
static const struct bt_wire_limits slow = { .piece_count = 10,
                                            .fast = false };

/* Parse bytes expecting result want. */
static int
parse (const uint8_t *b, size_t len, const struct bt_wire_limits *l,
       struct bt_msg *m, size_t *used)
{
  return bt_wire_parse (b, len, l, m, used);
}

static void
test_roundtrip (void)
{
  static const int ids[] = { BT_MSG_CHOKE, BT_MSG_UNCHOKE, BT_MSG_INTERESTED,
                             BT_MSG_NOT_INTERESTED, BT_MSG_HAVE,
                             BT_MSG_REQUEST, BT_MSG_CANCEL, BT_MSG_PORT,
                             BT_MSG_SUGGEST, BT_MSG_HAVE_ALL,
                             BT_MSG_HAVE_NONE, BT_MSG_REJECT,
                             BT_MSG_ALLOWED_FAST, BT_MSG_KEEPALIVE };
  for (size_t i = 0; i < sizeof ids / sizeof *ids; i++)
    {
      struct bt_msg in = { .id = ids[i], .index = 7, .begin = 16384,
                           .length = 16384, .port = 6881 }, out;
      uint8_t buf[17];
      size_t n = bt_wire_put_simple (buf, &in), used = 0;
      CHECK (parse (buf, n, &lim, &out, &used) == 1);
      CHECK (used == n && out.id == ids[i]);
      if (n == 9)
        CHECK (out.index == 7);
      if (n == 17)
        CHECK (out.index == 7 && out.begin == 16384 && out.length == 16384);
      if (ids[i] == BT_MSG_PORT)
        CHECK (out.port == 6881);
      /* every proper prefix asks for more */
      for (size_t k = 0; k < n; k++)
        CHECK (parse (buf, k, &lim, &out, &used) == 0);
    }
}

static void
test_piece_and_bitfield (void)
{
  uint8_t buf[13 + 100];
  bt_wire_put_piece_header (buf, 9, 32768, 100);
  memset (buf + 13, 0xab, 100);
  struct bt_msg m;
  size_t used;
  CHECK (parse (buf, sizeof buf, &lim, &m, &used) == 1);
  CHECK (m.id == BT_MSG_PIECE && m.index == 9 && m.begin == 32768
         && m.data_len == 100 && m.data == buf + 13 && used == sizeof buf);
  bt_wire_put_piece_header (buf, 10, 0, 100);     /* index out of range */
  CHECK (parse (buf, sizeof buf, &lim, &m, &used) == -EPROTO);

  uint8_t bf[7];
  bt_wire_put_header (bf, BT_MSG_BITFIELD, 2);
  bf[5] = 0xff;
  bf[6] = 0xc0;                 /* pieces 8 and 9; 6 spare bits clear */
  CHECK (parse (bf, 7, &lim, &m, &used) == 1 && m.data_len == 2);
  bf[6] = 0xc1;                 /* a spare bit set */
  CHECK (parse (bf, 7, &lim, &m, &used) == -EPROTO);
  uint8_t bf3[8];
  bt_wire_put_header (bf3, BT_MSG_BITFIELD, 3);   /* wrong length */
  CHECK (parse (bf3, 8, &lim, &m, &used) == -EPROTO);
}

static void
test_hostile (void)
{
  struct bt_msg m;
  size_t used;
  /* a 64 MiB length prefix is refused before any buffer is sized */
  uint8_t big[5] = { 0x04, 0, 0, 0, BT_MSG_PIECE };
  CHECK (parse (big, 5, &lim, &m, &used) == -EPROTO);
  CHECK (strstr (error_message (), "too long") != NULL);
  uint8_t huge[4] = { 0xff, 0xff, 0xff, 0xff };
  CHECK (parse (huge, 4, &lim, &m, &used) == -EPROTO);
  /* fixed-size messages with the wrong size */
  uint8_t have_short[8] = { 0, 0, 0, 4, BT_MSG_HAVE, 0, 0, 1 };
  CHECK (parse (have_short, 8, &lim, &m, &used) == -EPROTO);
  uint8_t choke_long[6] = { 0, 0, 0, 2, BT_MSG_CHOKE, 0 };
  CHECK (parse (choke_long, 6, &lim, &m, &used) == -EPROTO);
  /* have for a piece past the end */
  uint8_t have_bad[9] = { 0, 0, 0, 5, BT_MSG_HAVE, 0, 0, 0, 10 };
  CHECK (parse (have_bad, 9, &lim, &m, &used) == -EPROTO);
  /* request of 0 bytes and of more than the largest block */
  struct bt_msg r = { .id = BT_MSG_REQUEST, .index = 1, .begin = 0,
                      .length = 0 };
  uint8_t rb[17];
  bt_wire_put_simple (rb, &r);
  CHECK (parse (rb, 17, &lim, &m, &used) == -EPROTO);
  r.length = BT_MAX_BLOCK + 1;
  bt_wire_put_simple (rb, &r);
  CHECK (parse (rb, 17, &lim, &m, &used) == -EPROTO);
  /* fast messages without the fast extension */
  struct bt_msg ha = { .id = BT_MSG_HAVE_ALL };
  uint8_t hb[17];
  size_t n = bt_wire_put_simple (hb, &ha);
  CHECK (parse (hb, n, &slow, &m, &used) == -EPROTO);
  /* unknown id, empty extended, piece with no block */
  uint8_t unk[5] = { 0, 0, 0, 1, 99 };
  CHECK (parse (unk, 5, &lim, &m, &used) == -EPROTO);
  uint8_t ext0[5] = { 0, 0, 0, 1, BT_MSG_EXTENDED };
  CHECK (parse (ext0, 5, &lim, &m, &used) == -EPROTO);
  uint8_t p8[13];
  bt_wire_put_piece_header (p8, 1, 0, 0);
  CHECK (parse (p8, 13, &lim, &m, &used) == -EPROTO);
  /* an extended message just over the limit */
  uint8_t ext_big[5];
  bt_wire_put_header (ext_big, BT_MSG_EXTENDED, BT_MAX_EXTENDED + 1);
  CHECK (parse (ext_big, 5, &lim, &m, &used) == -EPROTO);
}

static void
test_handshake (void)
{
  struct bt_handshake hs = { { 0 } }, out;
  hs.reserved[BT_RESERVED_FAST_BYTE] = BT_RESERVED_FAST_BIT;
  memset (hs.info_hash, 0x11, 20);
  memset (hs.peer_id, 0x22, 20);
  uint8_t buf[BT_HANDSHAKE_LEN];
  bt_wire_put_handshake (buf, &hs);
  CHECK (bt_wire_parse_handshake (buf, sizeof buf, &out) == 0);
  CHECK (memcmp (&hs, &out, sizeof hs) == 0);
  CHECK (bt_wire_parse_handshake (buf, 67, &out) == -EPROTO);
  buf[0] = 18;
  CHECK (bt_wire_parse_handshake (buf, sizeof buf, &out) == -EPROTO);
  buf[0] = 19;
  buf[5] = 'X';
  CHECK (bt_wire_parse_handshake (buf, sizeof buf, &out) == -EPROTO);
}

int
main (void)
{
  test_roundtrip ();
  test_piece_and_bitfield ();
  test_hostile ();
  test_handshake ();
  if (check_failures == 0)
    printf ("wire: all checks passed\n");
  return check_failures != 0;
}
