/* Fuzz harness: base:allocation block status payloads (nbd/transmit.c's
 * read_extents, reached through nbd_read_one): the input is the list of
 * descriptors of one NBD_REPLY_TYPE_BLOCK_STATUS chunk, framed here with
 * a valid header for a BLOCK_STATUS request of 1 MiB at offset 0 (byte 0
 * of the input, bit 0, sets REQ_ONE-style short requests: 4 KiB). */
#include <endian.h>
#include <stdint.h>

#include "fuzz_nbd_conn.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct nbd_req req;
  struct nbd_extent extent = { 0, 0 };
  struct fuzz_nbd f;
  struct nbd_structured_reply h;
  uint32_t id = htobe32 (7);
  uint8_t *stream;
  bool fatal;

  if (size < 1 || size > NBD_MAX_EXTENTS_CHUNK)
    return 0;
  /* Whole descriptors only: the framing checks have their own harness. */
  size = 1 + ((size - 1) & ~(size_t) 7);
  stream = malloc (sizeof h + 4 + size - 1);
  if (stream == NULL)
    return 0;
  h.magic = htobe32 (NBD_STRUCTURED_REPLY_MAGIC);
  h.flags = htobe16 (NBD_REPLY_FLAG_DONE);
  h.type = htobe16 (NBD_REPLY_TYPE_BLOCK_STATUS);
  h.cookie = htobe64 (1);
  h.length = htobe32 ((uint32_t) (4 + size - 1));
  memcpy (stream, &h, sizeof h);
  memcpy (stream + sizeof h, &id, 4);
  memcpy (stream + sizeof h + 4, data + 1, size - 1);
  if (fuzz_nbd_open (&f, "nbd+unix:///?socket=/fuzz", stream,
                     sizeof h + 4 + size - 1) < 0)
    {
      free (stream);
      return 0;
    }
  free (stream);
  f.conn->info.structured = true;
  f.conn->info.has_allocation = true;
  f.conn->info.allocation_id = 7;
  f.conn->state = CONN_UP;
  memset (&req, 0, sizeof req);
  req.type = NBD_CMD_BLOCK_STATUS;
  req.count = (data[0] & 1) ? 4096 : 1 << 20;
  req.extent = &extent;
  req.conn = f.conn;
  req.cookie = 1;
  req.state = REQ_SENT;
  pthread_cond_init (&req.cond, NULL);
  nbd_table_insert (f.conn, &req);
  nbd_read_one (f.conn, &fatal);
  if (req.state == REQ_DONE && req.error == 0
      && (extent.length == 0 || extent.length > req.count
          || (extent.flags & ~3u) != 0))
    abort ();
  if (req.state == REQ_SENT)
    nbd_table_remove (f.conn, 1);
  pthread_cond_destroy (&req.cond);
  fuzz_nbd_close (&f);
  return 0;
}
