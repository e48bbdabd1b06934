/* Fuzz harness: the fixed-newstyle handshake (nbd/handshake.c's
 * nbd_handshake) against a server whose every byte is the input:
 * greeting, option replies (STRUCTURED_REPLY, SET_META_CONTEXT, GO with
 * its INFO replies, errors with strings), the EXPORT_NAME fallback.
 * The first input byte picks the URI: bit 0 an export name.  (TLS is
 * not fuzzed here: after STARTTLS the bytes belong to GnuTLS.) */
#include <stdint.h>

#include "fuzz_nbd_conn.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct fuzz_nbd f;
  const char *uri;

  if (size < 1)
    return 0;
  uri = (data[0] & 1) ? "nbd+unix:///disk?socket=/fuzz"
                      : "nbd+unix:///?socket=/fuzz";
  if (fuzz_nbd_open (&f, uri, data + 1, size - 1) < 0)
    return 0;
  if (nbd_handshake (f.conn) == 0)
    {
      /* What a successful negotiation promises the rest of the code. */
      struct nbd_export_info *i = &f.conn->info;
      if (i->min_block == 0 || i->max_payload > NBD_MAX_PAYLOAD
          || i->size > INT64_MAX || (i->has_allocation && !i->structured))
        abort ();
    }
  fuzz_nbd_close (&f);
  return 0;
}
