/* Fuzz harness: bt/tracker_parse.c, tracker replies.  The first byte
 * chooses the form: even, an HTTP tracker's bencoded body; odd, a UDP
 * announce reply (with the transaction id taken from its bytes 4-7, so
 * the fuzzer can match it). */
#include <stdint.h>
#include <stdlib.h>

#include "bt/tracker.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  struct bt_reply r;
  int rc;
  if (data[0] % 2 == 0)
    rc = bt_tracker_parse_http (data + 1, size - 1, &r);
  else
    {
      uint32_t txid = size >= 9 ? (uint32_t) data[5] << 24
                                  | (uint32_t) data[6] << 16
                                  | (uint32_t) data[7] << 8 | data[8] : 0;
      rc = bt_tracker_parse_udp (data + 1, size - 1, txid, &r);
    }
  if (rc == 0)
    {
      if (r.peer_count > BT_MAX_PEERS_PER_REPLY)
        abort ();
      for (size_t i = 0; i < r.peer_count; i++)
        if (r.peers[i].addr_len == 0)
          abort ();
      bt_reply_clear (&r);
    }
  return 0;
}
