/* diskshelf nbd: the transmission phase on one connection: sending
 * requests (any thread, serialised by wlock) and the reader loop that
 * matches simple and structured replies to requests by cookie.  Every
 * field from the server is checked before it picks a length, an offset or
 * a buffer (proto.md "Transmission", notes section 5.2). */
#include "internal.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Send req's header (and WRITE payload) if the connection is still the
 * generation the request was registered on. */
int
nbd_send_request (struct nbd_conn *conn, struct nbd_req *req)
{
  struct nbd_request_header h;
  struct iovec iov[2];
  int r;

  h.magic = htobe32 (NBD_REQUEST_MAGIC);
  h.flags = htobe16 (req->flags);
  h.type = htobe16 (req->type);
  h.cookie = htobe64 (req->cookie);
  h.offset = htobe64 (req->offset);
  h.count = htobe32 (req->count);
  iov[0].iov_base = &h;
  iov[0].iov_len = sizeof h;
  iov[1].iov_base = (void *) req->wbuf;
  iov[1].iov_len = req->type == NBD_CMD_WRITE ? req->count : 0;

  pthread_mutex_lock (&conn->wlock);
  if (conn->gen != req->gen)
    r = -ENOTCONN;
  else
    r = nbd_conn_send (conn, iov, iov[1].iov_len ? 2 : 1);
  pthread_mutex_unlock (&conn->wlock);
  return r;
}

/* Say goodbye: NBD_CMD_DISC, then close our sending side. */
void
nbd_send_disconnect (struct nbd_conn *conn)
{
  struct nbd_req req = { .type = NBD_CMD_DISC };

  pthread_mutex_lock (&conn->lock);
  req.gen = conn->gen;
  req.cookie = conn->next_cookie++;
  pthread_mutex_unlock (&conn->lock);
  if (nbd_send_request (conn, &req) == 0)
    {
      pthread_mutex_lock (&conn->wlock);
      if (conn->tls)
        gnutls_bye (conn->tls, GNUTLS_SHUT_WR);
      if (conn->fd >= 0)
        shutdown (conn->fd, SHUT_WR);
      pthread_mutex_unlock (&conn->wlock);
    }
}

/* Record a protocol violation for the connection's name. */
static int
violation (struct nbd_conn *conn, const char *what)
{
  atomic_fetch_add (&conn->client->protocol_errors, 1);
  return nbd_set_error (EPROTO, "%s: protocol error from the server: %s",
                        conn->client->name, what);
}

/* The server answered NBD_ESHUTDOWN: it is stopping and will serve no
 * more.  That is a lost connection, not a failed request: the caller
 * drops it (so the server can exit) and the request is sent again after
 * a reconnect. */
static int
server_shutting_down (struct nbd_conn *conn)
{
  return nbd_set_error (ESHUTDOWN, "%s: the server is shutting down",
                        conn->client->name);
}

/* Look a cookie up under the lock. */
static struct nbd_req *
find (struct nbd_conn *conn, uint64_t cookie)
{
  struct nbd_req *req;

  pthread_mutex_lock (&conn->lock);
  req = nbd_table_find (conn, cookie);
  pthread_mutex_unlock (&conn->lock);
  return req;
}

/* Finish req with err (0 for success). */
static void
complete (struct nbd_conn *conn, struct nbd_req *req, int err,
          const char *why)
{
  pthread_mutex_lock (&conn->lock);
  nbd_req_complete (conn, req, err, why);
  pthread_mutex_unlock (&conn->lock);
}

/* Record [start, end) of a READ as received: appended (or merged with
 * the previous chunk when it follows it), so that each chunk costs O(1);
 * overlaps and gaps are found once, when the reply is done.  Returns 0
 * or -ENOMEM. */
static int
cover (struct nbd_req *req, uint64_t start, uint64_t end)
{
  struct nbd_range *last = req->ncover ? &req->cover[req->ncover - 1] : NULL;

  req->covered += end - start;
  if (last && last->end == start)
    {
      last->end = end;
      return 0;
    }
  if (last && start < last->end)
    req->cover_unsorted = true;
  if (req->ncover == req->cover_cap)
    {
      size_t cap = req->cover_cap ? req->cover_cap * 2 : 8;
      struct nbd_range *p = realloc (req->cover, cap * sizeof *p);
      if (p == NULL)
        return -ENOMEM;
      req->cover = p;
      req->cover_cap = cap;
    }
  req->cover[req->ncover].start = start;
  req->cover[req->ncover].end = end;
  req->ncover++;
  return 0;
}

/* Order ranges by start, for qsort. */
static int
range_compare (const void *a, const void *b)
{
  const struct nbd_range *x = a, *y = b;

  return x->start < y->start ? -1 : x->start > y->start;
}

/* True if the READ chunks of req tile the request exactly: every chunk
 * lies inside it (checked as they came), they add up to its length, and
 * none overlaps another (O(n log n) in the number of chunks). */
static bool
covered_exactly (struct nbd_req *req)
{
  size_t i;

  if (req->covered != req->count)
    return false;
  if (req->cover_unsorted)
    qsort (req->cover, req->ncover, sizeof req->cover[0], range_compare);
  for (i = 1; i < req->ncover; i++)
    if (req->cover[i].start < req->cover[i - 1].end)
      return false;
  return true;
}

/* Check an [offset, offset+n) chunk of a READ lies in the request and
 * does not overlap earlier chunks. */
static int
check_read_chunk (struct nbd_conn *conn, struct nbd_req *req,
                  uint64_t offset, uint64_t n)
{
  if (req->type != NBD_CMD_READ)
    return violation (conn, "read data for a command that is not a read");
  if (n == 0 || offset < req->offset || n > req->count
      || offset - req->offset > req->count - n)
    return violation (conn, "read chunk outside the requested range");
  /* Every chunk lies inside the request: more bytes than it asked for
   * means some overlap. */
  if (req->covered + n > req->count)
    return violation (conn, "overlapping read chunks");
  if (cover (req, offset, offset + n) < 0)
    return nbd_set_error (ENOMEM, "%s: out of memory", conn->client->name);
  req->data_chunk_seen = true;
  return 0;
}

/* Read the descriptors of a base:allocation chunk and keep the first run
 * (equal flags merged), clamped to the request. */
static int
read_extents (struct nbd_conn *conn, struct nbd_req *req, uint32_t left)
{
  struct nbd_block_descriptor d[256];
  uint64_t total = 0;
  uint32_t flags = 0;
  bool merging = true;
  int r;

  while (left > 0)
    {
      uint32_t k = left / sizeof d[0];
      uint32_t i;

      if (k > sizeof d / sizeof d[0])
        k = sizeof d / sizeof d[0];
      r = nbd_conn_recv (conn, d, k * sizeof d[0]);
      if (r < 0)
        return r;
      left -= k * (uint32_t) sizeof d[0];
      for (i = 0; i < k && merging; i++)
        {
          uint32_t len = be32toh (d[i].length);
          uint32_t f = be32toh (d[i].status_flags)
                       & (NBD_STATE_HOLE | NBD_STATE_ZERO);

          if (len == 0)
            {
              merging = false;
              break;
            }
          if (total == 0)
            flags = f;
          else if (f != flags)
            {
              merging = false;
              break;
            }
          total += len;
          if (total >= req->count)
            merging = false;
        }
    }
  if (total == 0)
    return violation (conn, "empty block status extent");
  if (total > req->count && req->count > 0)
    total = req->count;
  req->extent->length = total;
  req->extent->flags = flags;
  req->got_extent = true;
  return 0;
}

/* Handle one error chunk (type has bit 15 set). */
static int
error_chunk (struct nbd_conn *conn, struct nbd_req *req, uint16_t type,
             uint32_t length)
{
  struct { uint32_t error; uint16_t msglen; } __attribute__ ((packed)) e;
  char msg[NBD_MAX_STRING];
  uint32_t err;
  uint16_t msglen;
  int r;

  if (length < 6)
    return violation (conn, "error chunk too short");
  r = nbd_conn_recv (conn, &e, sizeof e);
  if (r < 0)
    return r;
  err = be32toh (e.error);
  msglen = be16toh (e.msglen);
  if (msglen > NBD_MAX_STRING)
    {
      char what[128];
      snprintf (what, sizeof what, "error message of %u bytes is longer "
                "than %u", (unsigned) msglen, (unsigned) NBD_MAX_STRING);
      return violation (conn, what);
    }
  if (msglen > length - 6)
    return violation (conn, "error message longer than its chunk");
  if (type == NBD_REPLY_TYPE_ERROR_OFFSET && length - 6 - msglen != 8)
    return violation (conn, "error-offset chunk with a bad length");
  r = nbd_conn_recv (conn, msg, msglen);
  if (r < 0)
    return r;
  r = nbd_conn_skip (conn, length - 6 - msglen);
  if (r < 0)
    return r;
  if (err == NBD_ESHUTDOWN)
    return server_shutting_down (conn);
  if (!req->got_error_chunk)
    {
      req->got_error_chunk = true;
      req->first_error = err;
      text_escape (req->message, sizeof req->message, msg, msglen);
    }
  if (err == 0)
    req->first_error = UINT32_MAX;  /* protocol violation: EPROTO */
  return 0;
}

/* Read one structured chunk (its first 16 bytes are in hdr16). */
static int
structured_chunk (struct nbd_conn *conn, const char *hdr16)
{
  struct nbd_structured_reply h;
  struct nbd_req *req;
  uint16_t flags, type;
  uint32_t length;
  uint64_t off;
  int r;

  memcpy (&h, hdr16, 16);
  r = nbd_conn_recv (conn, (char *) &h + 16, 4);
  if (r < 0)
    return r;
  flags = be16toh (h.flags);
  type = be16toh (h.type);
  length = be32toh (h.length);
  if (!conn->info.structured)
    return violation (conn, "structured reply that was not negotiated");
  if (length > NBD_MAX_PAYLOAD + 8 && length > NBD_MAX_EXTENTS_CHUNK)
    {
      char what[128];
      snprintf (what, sizeof what, "chunk of %" PRIu32 " bytes is longer "
                "than any allowed reply (%u)", length,
                (unsigned) NBD_MAX_PAYLOAD + 8);
      return violation (conn, what);
    }

  req = find (conn, be64toh (h.cookie));
  if (req == NULL)
    {
      /* Not ours (a late reply to a replayed request, or junk): the
       * framing still holds, so skip it. */
      atomic_fetch_add (&conn->client->protocol_errors, 1);
      return nbd_conn_skip (conn, length);
    }
  if (++req->nchunks > NBD_MAX_REPLY_CHUNKS (req->count))
    {
      char what[128];
      snprintf (what, sizeof what, "too many chunks in one reply (more "
                "than %" PRIu32 " for %" PRIu32 " bytes)",
                (uint32_t) NBD_MAX_REPLY_CHUNKS (req->count), req->count);
      return violation (conn, what);
    }

  switch (type)
    {
    case NBD_REPLY_TYPE_NONE:
      if (length != 0 || !(flags & NBD_REPLY_FLAG_DONE))
        return violation (conn, "NONE chunk with a payload or without DONE");
      break;

    case NBD_REPLY_TYPE_OFFSET_DATA:
      if (length < 9)
        return violation (conn, "data chunk too short");
      r = nbd_conn_recv (conn, &off, 8);
      if (r < 0)
        return r;
      off = be64toh (off);
      r = check_read_chunk (conn, req, off, length - 8);
      if (r < 0)
        return r;
      r = nbd_conn_recv (conn, (char *) req->rbuf + (off - req->offset),
                         length - 8);
      if (r < 0)
        return r;
      break;

    case NBD_REPLY_TYPE_OFFSET_HOLE:
      {
        struct { uint64_t offset; uint32_t size; } __attribute__ ((packed)) hole;
        if (length != 12)
          return violation (conn, "hole chunk with a bad length");
        r = nbd_conn_recv (conn, &hole, sizeof hole);
        if (r < 0)
          return r;
        off = be64toh (hole.offset);
        r = check_read_chunk (conn, req, off, be32toh (hole.size));
        if (r < 0)
          return r;
        memset ((char *) req->rbuf + (off - req->offset), 0,
                be32toh (hole.size));
      }
      break;

    case NBD_REPLY_TYPE_BLOCK_STATUS:
      {
        uint32_t id;
        if (req->type != NBD_CMD_BLOCK_STATUS)
          return violation (conn, "block status for another command");
        if (length < 12 || (length - 4) % 8 != 0
            || length > NBD_MAX_EXTENTS_CHUNK)
          return violation (conn, "block status chunk with a bad length");
        r = nbd_conn_recv (conn, &id, 4);
        if (r < 0)
          return r;
        id = be32toh (id);
        if (!conn->info.has_allocation || id != conn->info.allocation_id)
          r = nbd_conn_skip (conn, length - 4);
        else if (req->got_extent)
          return violation (conn, "the same context twice in one reply");
        else
          r = read_extents (conn, req, length - 4);
        if (r < 0)
          return r;
      }
      break;

    default:
      if (!NBD_REPLY_TYPE_IS_ERR (type))
        return violation (conn, "unknown reply chunk type");
      r = error_chunk (conn, req, type, length);
      if (r < 0)
        return r;
      break;
    }

  if (flags & NBD_REPLY_FLAG_DONE)
    {
      if (req->got_error_chunk)
        {
          uint32_t e = req->first_error;
          complete (conn, req, e == UINT32_MAX ? EPROTO
                    : nbd_errno_from_wire (e), req->message);
        }
      else if (req->type == NBD_CMD_READ && !covered_exactly (req))
        return violation (conn, req->covered == req->count
                          ? "overlapping read chunks"
                          : "read reply does not cover the request");
      else if (req->type == NBD_CMD_BLOCK_STATUS && !req->got_extent)
        complete (conn, req, EPROTO, "no base:allocation extents in reply");
      else
        complete (conn, req, 0, NULL);
    }
  return 0;
}

/* Read one simple reply (its 16 bytes are in hdr). */
static int
simple_reply (struct nbd_conn *conn, const struct nbd_simple_reply *hdr)
{
  uint32_t err = be32toh (hdr->error);
  struct nbd_req *req = find (conn, be64toh (hdr->cookie));
  int r;

  if (req == NULL)
    {
      if (err == 0)
        return violation (conn, "reply with an unknown cookie");
      atomic_fetch_add (&conn->client->protocol_errors, 1);
      return 0;
    }
  if (err == NBD_ESHUTDOWN)
    return server_shutting_down (conn);
  if (err == 0 && req->type == NBD_CMD_BLOCK_STATUS)
    return violation (conn, "simple reply to a block status request");
  if (err == 0 && req->type == NBD_CMD_READ)
    {
      if (conn->info.structured)
        return violation (conn, "simple reply to a read after structured "
                          "replies were negotiated");
      r = nbd_conn_recv (conn, req->rbuf, req->count);
      if (r < 0)
        return r;
    }
  complete (conn, req, err ? nbd_errno_from_wire (err) : 0,
            err ? "the server reported an error" : NULL);
  return 0;
}

/* Read and dispatch one reply (or one structured chunk).  Returns 0 or
 * a negative errno; *fatal says it was a protocol violation rather than
 * a lost connection.  Only the thread holding the reader role calls it. */
int
nbd_read_one (struct nbd_conn *conn, bool *fatal)
{
  union { struct nbd_simple_reply s; char raw[16]; } h;
  int r;

  *fatal = false;
  r = nbd_conn_recv (conn, &h, 16);
  if (r < 0)
    return r;
  switch (be32toh (h.s.magic))
    {
    case NBD_SIMPLE_REPLY_MAGIC:
      r = simple_reply (conn, &h.s);
      break;
    case NBD_STRUCTURED_REPLY_MAGIC:
      r = structured_chunk (conn, h.raw);
      break;
    default:
      r = violation (conn, "bad reply magic");
      break;
    }
  if (r == -EPROTO)
    *fatal = true;
  return r;
}
