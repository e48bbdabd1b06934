/* diskshelf bt: peer wire messages (BEP 3, BEP 6 fast extension, BEP 10
 * extension protocol): framing, parsing and serialising, nothing else.
 *
 * Every length and index is checked before use against the limits the
 * caller passes (the torrent's piece count and the largest block it will
 * accept), so a parsed message can be acted on without further bounds
 * checks except block offsets within a piece (the piece size is the
 * connection's business).
 *
 * Thread model: pure functions over their arguments.
 */
#ifndef DISKSHELF_BT_WIRE_H
#define DISKSHELF_BT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BT_HANDSHAKE_LEN 68
#define BT_BLOCK_SIZE 16384u
/* The largest block we accept in a request or a piece message; peers
 * must not ask for more than 16 KiB, a few tolerate up to 128 KiB. */
#define BT_MAX_BLOCK (128u * 1024)
/* Extension messages (BEP 10) above this are refused. */
#define BT_MAX_EXTENDED (1u << 20)

/* Reserved-byte bits (BEP 6 fast: reserved[7] & 0x04, BEP 10:
 * reserved[5] & 0x10). */
#define BT_RESERVED_FAST_BYTE 7
#define BT_RESERVED_FAST_BIT 0x04
#define BT_RESERVED_EXT_BYTE 5
#define BT_RESERVED_EXT_BIT 0x10

enum bt_msg_id
{
  BT_MSG_KEEPALIVE = -1,
  BT_MSG_CHOKE = 0, BT_MSG_UNCHOKE = 1, BT_MSG_INTERESTED = 2,
  BT_MSG_NOT_INTERESTED = 3, BT_MSG_HAVE = 4, BT_MSG_BITFIELD = 5,
  BT_MSG_REQUEST = 6, BT_MSG_PIECE = 7, BT_MSG_CANCEL = 8, BT_MSG_PORT = 9,
  BT_MSG_SUGGEST = 0x0d, BT_MSG_HAVE_ALL = 0x0e, BT_MSG_HAVE_NONE = 0x0f,
  BT_MSG_REJECT = 0x10, BT_MSG_ALLOWED_FAST = 0x11, BT_MSG_EXTENDED = 20,
};

struct bt_handshake
{
  uint8_t reserved[8];
  uint8_t info_hash[20];
  uint8_t peer_id[20];
};

/* One parsed message; pointers borrow the input buffer. */
struct bt_msg
{
  int id;                     /* enum bt_msg_id; unknown ids are errors */
  uint32_t index, begin, length;  /* have, request, piece, cancel, ... */
  const uint8_t *data;        /* bitfield bits, piece block, extended
                                 payload (after its id byte) */
  size_t data_len;
  uint8_t ext_id;             /* BT_MSG_EXTENDED: 0 is the handshake */
  uint16_t port;              /* BT_MSG_PORT */
};

struct bt_wire_limits
{
  uint32_t piece_count;       /* indexes must be below this */
  bool fast;                  /* fast-extension messages allowed */
};

/* Parse a 68-byte handshake.  Returns 0 or -EPROTO with a message. */
int bt_wire_parse_handshake (const uint8_t *buf, size_t len,
                             struct bt_handshake *out);

/* Write a handshake into out (68 bytes). */
void bt_wire_put_handshake (uint8_t out[BT_HANDSHAKE_LEN],
                            const struct bt_handshake *hs);

/* Parse one framed message from the start of buf.  Returns 1 and sets
 * *msg and *used when a whole message is there, 0 when more bytes are
 * needed (*used says how many the frame needs in all, when known), or
 * -EPROTO with a message when the bytes break the protocol. */
int bt_wire_parse (const uint8_t *buf, size_t len,
                   const struct bt_wire_limits *lim,
                   struct bt_msg *msg, size_t *used);

/* Serialise a message without payload data (everything but bitfield,
 * piece and extended) into out; returns its length (at most 17). */
size_t bt_wire_put_simple (uint8_t out[17], const struct bt_msg *msg);

/* Write the 4+1+8 byte header of a piece message carrying len bytes. */
void bt_wire_put_piece_header (uint8_t out[13], uint32_t index,
                               uint32_t begin, uint32_t len);

/* Write the 5-byte header of a message with id and payload_len bytes
 * following (bitfield, extended). */
void bt_wire_put_header (uint8_t out[5], uint8_t id, uint32_t payload_len);

#endif
