/* diskshelf bt: peer wire framing and parsing (see wire.h). */
#include <errno.h>
#include <string.h>

#include "error.h"
#include "wire.h"

static const char protocol_name[] = "BitTorrent protocol";

/* Read a big-endian 32-bit number. */
static uint32_t
get32 (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8
         | p[3];
}

/* Write a big-endian 32-bit number. */
static void
put32 (uint8_t *p, uint32_t v)
{
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}

/* Parse the handshake (BEP 3: pstrlen, pstr, reserved, hash, peer id). */
int
bt_wire_parse_handshake (const uint8_t *buf, size_t len,
                         struct bt_handshake *out)
{
  if (len < BT_HANDSHAKE_LEN)
    return error_set (EPROTO, "handshake: %zu bytes, need %d", len,
                      BT_HANDSHAKE_LEN);
  if (buf[0] != 19 || memcmp (buf + 1, protocol_name, 19) != 0)
    return error_set (EPROTO, "handshake: not the BitTorrent protocol");
  memcpy (out->reserved, buf + 20, 8);
  memcpy (out->info_hash, buf + 28, 20);
  memcpy (out->peer_id, buf + 48, 20);
  return 0;
}

/* Write a handshake. */
void
bt_wire_put_handshake (uint8_t out[BT_HANDSHAKE_LEN],
                       const struct bt_handshake *hs)
{
  out[0] = 19;
  memcpy (out + 1, protocol_name, 19);
  memcpy (out + 20, hs->reserved, 8);
  memcpy (out + 28, hs->info_hash, 20);
  memcpy (out + 48, hs->peer_id, 20);
}

/* Check that index is a valid piece index. */
static int
check_index (uint32_t index, const struct bt_wire_limits *lim,
             const char *what)
{
  if (index >= lim->piece_count)
    return error_set (EPROTO, "%s: piece %u out of range (%u pieces)", what,
                      index, lim->piece_count);
  return 0;
}

/* The exact payload length of fixed-size messages, or -1 if variable. */
static long
fixed_payload (int id)
{
  switch (id)
    {
    case BT_MSG_CHOKE: case BT_MSG_UNCHOKE: case BT_MSG_INTERESTED:
    case BT_MSG_NOT_INTERESTED: case BT_MSG_HAVE_ALL: case BT_MSG_HAVE_NONE:
      return 0;
    case BT_MSG_HAVE: case BT_MSG_SUGGEST: case BT_MSG_ALLOWED_FAST:
      return 4;
    case BT_MSG_REQUEST: case BT_MSG_CANCEL: case BT_MSG_REJECT:
      return 12;
    case BT_MSG_PORT:
      return 2;
    default:
      return -1;
    }
}

/* The largest payload any message may carry under these limits. */
static size_t
max_payload (const struct bt_wire_limits *lim)
{
  size_t bitfield = ((size_t) lim->piece_count + 7) / 8;
  size_t m = 8 + BT_MAX_BLOCK;
  if (bitfield > m)
    m = bitfield;
  if (BT_MAX_EXTENDED > m)
    m = BT_MAX_EXTENDED;
  return m;
}

/* Parse one message (see wire.h). */
int
bt_wire_parse (const uint8_t *buf, size_t len,
               const struct bt_wire_limits *lim, struct bt_msg *msg,
               size_t *used)
{
  if (len < 4)
    {
      *used = 4;
      return 0;
    }
  uint32_t frame = get32 (buf);
  if (frame == 0)
    {
      memset (msg, 0, sizeof *msg);
      msg->id = BT_MSG_KEEPALIVE;
      *used = 4;
      return 1;
    }
  if (frame - 1 > max_payload (lim))
    return error_set (EPROTO, "message of %u bytes is too long", frame);
  *used = 4 + (size_t) frame;
  if (len < *used)
    return 0;
  memset (msg, 0, sizeof *msg);
  const uint8_t *p = buf + 5;
  size_t plen = frame - 1;
  msg->id = buf[4];
  long want = fixed_payload (msg->id);
  if (want >= 0 && plen != (size_t) want)
    return error_set (EPROTO, "message %d: payload of %zu bytes, must be %ld",
                      msg->id, plen, want);
  bool fast_only = msg->id == BT_MSG_SUGGEST || msg->id == BT_MSG_HAVE_ALL
                   || msg->id == BT_MSG_HAVE_NONE || msg->id == BT_MSG_REJECT
                   || msg->id == BT_MSG_ALLOWED_FAST;
  if (fast_only && !lim->fast)
    return error_set (EPROTO, "message %d: fast extension not negotiated",
                      msg->id);
  switch (msg->id)
    {
    case BT_MSG_CHOKE: case BT_MSG_UNCHOKE: case BT_MSG_INTERESTED:
    case BT_MSG_NOT_INTERESTED: case BT_MSG_HAVE_ALL: case BT_MSG_HAVE_NONE:
      return 1;
    case BT_MSG_HAVE: case BT_MSG_SUGGEST: case BT_MSG_ALLOWED_FAST:
      msg->index = get32 (p);
      return check_index (msg->index, lim, "have") < 0 ? -EPROTO : 1;
    case BT_MSG_REQUEST: case BT_MSG_CANCEL: case BT_MSG_REJECT:
      msg->index = get32 (p);
      msg->begin = get32 (p + 4);
      msg->length = get32 (p + 8);
      if (check_index (msg->index, lim, "request") < 0)
        return -EPROTO;
      if (msg->length == 0 || msg->length > BT_MAX_BLOCK)
        return error_set (EPROTO, "request: block of %u bytes", msg->length);
      return 1;
    case BT_MSG_PORT:
      msg->port = (uint16_t) (p[0] << 8 | p[1]);
      return 1;
    case BT_MSG_BITFIELD:
      {
        size_t need = ((size_t) lim->piece_count + 7) / 8;
        if (plen != need)
          return error_set (EPROTO, "bitfield of %zu bytes, must be %zu",
                            plen, need);
        unsigned spare = need * 8 - lim->piece_count;
        if (spare > 0 && (p[need - 1] & ((1u << spare) - 1)) != 0)
          return error_set (EPROTO, "bitfield has spare bits set");
        msg->data = p;
        msg->data_len = plen;
        return 1;
      }
    case BT_MSG_PIECE:
      if (plen < 8 || plen - 8 > BT_MAX_BLOCK || plen == 8)
        return error_set (EPROTO, "piece message of %zu bytes", plen);
      msg->index = get32 (p);
      msg->begin = get32 (p + 4);
      if (check_index (msg->index, lim, "piece") < 0)
        return -EPROTO;
      msg->data = p + 8;
      msg->data_len = plen - 8;
      msg->length = plen - 8;
      return 1;
    case BT_MSG_EXTENDED:
      if (plen < 1)
        return error_set (EPROTO, "extended message without an id");
      msg->ext_id = p[0];
      msg->data = p + 1;
      msg->data_len = plen - 1;
      return 1;
    default:
      return error_set (EPROTO, "unknown message id %d", msg->id);
    }
}

/* Serialise a message without variable payload. */
size_t
bt_wire_put_simple (uint8_t out[17], const struct bt_msg *msg)
{
  if (msg->id == BT_MSG_KEEPALIVE)
    {
      put32 (out, 0);
      return 4;
    }
  long payload = fixed_payload (msg->id);
  if (payload < 0)
    payload = 0;
  put32 (out, 1 + payload);
  out[4] = msg->id;
  switch (payload)
    {
    case 4:
      put32 (out + 5, msg->index);
      break;
    case 12:
      put32 (out + 5, msg->index);
      put32 (out + 9, msg->begin);
      put32 (out + 13, msg->length);
      break;
    case 2:
      out[5] = msg->port >> 8;
      out[6] = msg->port;
      break;
    }
  return 5 + payload;
}

/* Header of a piece message. */
void
bt_wire_put_piece_header (uint8_t out[13], uint32_t index, uint32_t begin,
                          uint32_t len)
{
  put32 (out, 9 + len);
  out[4] = BT_MSG_PIECE;
  put32 (out + 5, index);
  put32 (out + 9, begin);
}

/* Header of a variable-length message. */
void
bt_wire_put_header (uint8_t out[5], uint8_t id, uint32_t payload_len)
{
  put32 (out, 1 + payload_len);
  out[4] = id;
}
