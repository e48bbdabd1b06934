/* Fuzz harness: the transmission phase's receive path (nbd/transmit.c's
 * nbd_read_one, through nbd_conn_recv): simple replies and structured
 * chunks (data, holes, block status, errors) for a few requests in
 * flight, in any order, until the stream ends or the client gives up.
 * Input: byte 0 bit 0 structured replies negotiated, bit 1 base:allocation
 * negotiated; byte 1 its context id; then the server's bytes.  Cookies 1
 * to 5 are in flight (see REQS). */
#include <stdint.h>

#include "fuzz_nbd_conn.h"

static const struct { uint16_t type; uint64_t offset; uint32_t count; } REQS[] = {
  { NBD_CMD_READ, 0, 4096 },
  { NBD_CMD_READ, 1000, 100000 },      /* big: straight into the buffer */
  { NBD_CMD_BLOCK_STATUS, 0, 1 << 20 },
  { NBD_CMD_WRITE, 512, 512 },
  { NBD_CMD_READ, 7, 1 },
};
#define NREQS (sizeof REQS / sizeof REQS[0])

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static char wbuf[512];
  struct nbd_req reqs[NREQS];
  struct nbd_extent extents[NREQS];
  void *bufs[NREQS];
  struct fuzz_nbd f;
  bool fatal;
  size_t i;

  if (size < 2)
    return 0;
  if (fuzz_nbd_open (&f, "nbd+unix:///?socket=/fuzz", data + 2, size - 2) < 0)
    return 0;
  f.conn->info.structured = data[0] & 1;
  f.conn->info.has_allocation = (data[0] & 3) == 3;
  f.conn->info.allocation_id = data[1];
  f.conn->info.size = 1 << 30;
  f.conn->state = CONN_UP;
  memset (reqs, 0, sizeof reqs);
  for (i = 0; i < NREQS; i++)
    {
      struct nbd_req *r = &reqs[i];

      r->type = REQS[i].type;
      r->offset = REQS[i].offset;
      r->count = REQS[i].count;
      r->conn = f.conn;
      bufs[i] = r->type == NBD_CMD_READ ? malloc (r->count) : NULL;
      r->rbuf = bufs[i];
      r->wbuf = wbuf;
      r->extent = &extents[i];
      r->cookie = i + 1;
      r->state = REQ_SENT;
      pthread_cond_init (&r->cond, NULL);
      nbd_table_insert (f.conn, r);
    }

  while (f.conn->in_flight > 0 && nbd_read_one (f.conn, &fatal) == 0)
    ;

  for (i = 0; i < NREQS; i++)
    {
      struct nbd_req *r = &reqs[i];

      /* What a successful reply promises the caller. */
      if (r->state == REQ_DONE && r->error == 0
          && r->type == NBD_CMD_BLOCK_STATUS
          && (extents[i].length == 0 || extents[i].length > r->count))
        abort ();
      if (r->state == REQ_SENT)
        nbd_table_remove (f.conn, r->cookie);
      free (r->cover);
      free (bufs[i]);
      pthread_cond_destroy (&r->cond);
    }
  fuzz_nbd_close (&f);
  return 0;
}
