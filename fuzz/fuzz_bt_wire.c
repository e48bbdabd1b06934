/* Fuzz harness: bt/wire.c, the peer wire parser.  The first three bytes
 * choose the limits (piece count, fast extension); the rest is a stream
 * of messages parsed the way a connection does, message after message,
 * and every parsed message is serialised back where the format allows. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bt/wire.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 3)
    return 0;
  struct bt_wire_limits lim = {
    .piece_count = (uint32_t) (data[0] << 8 | data[1]) + 1,
    .fast = data[2] & 1,
  };
  data += 3;
  size -= 3;
  struct bt_handshake hs;
  if (bt_wire_parse_handshake (data, size, &hs) == 0)
    {
      data += BT_HANDSHAKE_LEN;
      size -= BT_HANDSHAKE_LEN;
    }
  for (;;)
    {
      struct bt_msg m;
      size_t used = 0;
      int r = bt_wire_parse (data, size, &lim, &m, &used);
      if (r <= 0)
        break;
      if (used > size)
        abort ();
      if (m.data_len > 0
          && (m.data < data || m.data + m.data_len > data + used))
        abort ();
      if (m.id != BT_MSG_BITFIELD && m.id != BT_MSG_PIECE
          && m.id != BT_MSG_EXTENDED)
        {
          uint8_t out[17];
          size_t n = bt_wire_put_simple (out, &m);
          if (n != used || memcmp (out, data, n) != 0)
            abort ();
        }
      data += used;
      size -= used;
    }
  return 0;
}
