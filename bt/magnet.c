/* diskshelf bt: a magnet link's metadata fetch.  Fetches the info
 * dictionary from peers with the metadata extension (BEP 9) over the
 * extension protocol (BEP 10), then hands it to the metainfo parser as a
 * torrent whose announce-list is the magnet's trackers (magnet_uri.c
 * parses the URI and builds that torrent).
 *
 * The fetch is deliberately simple: one connection at a time, tried in
 * turn, until one peer delivers metadata whose SHA-1 is the info-hash or
 * the timeout passes.  Metadata is small (a few KiB to a few MiB), so
 * this costs nothing worth a thread pool.
 *
 * Thread model: bt_magnet_fetch blocks the calling thread and touches
 * only its arguments.  Every byte from a peer is treated as hostile:
 * sizes are bounded (BT_MAX_METADATA, BT_MAX_EXTENDED) and every piece
 * is checked against the size the peer announced.
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bencode.h"
#include "bt.h"
#include "clock.h"
#include "error.h"
#include "internal.h"
#include "sockio.h"
#include "tracker.h"
#include "wire.h"

#define MAX_FETCH_PEERS 200
#define OUR_UT_METADATA 1       /* the id we give ut_metadata */
#define PER_PEER_TIME 15.0      /* seconds one peer may take */

/* ---- One peer ---- */

struct fetch
{
  const struct bt_magnet *m;
  uint8_t peer_id[20];
  int fd;
  double deadline;
  uint8_t *meta;          /* metadata_size bytes being assembled */
  size_t meta_size;
  uint8_t *got;           /* per 16 KiB piece: received */
  uint32_t pieces, received;
  unsigned peer_ut;       /* the peer's id for ut_metadata */
};

/* Send all of buf before the peer's deadline. */
static int
send_all (struct fetch *f, const void *buf, size_t len)
{
  return bt_send_all (f->fd, buf, len, f->deadline, 0);
}

/* Receive exactly len bytes before the peer's deadline. */
static int
recv_exact (struct fetch *f, uint8_t *buf, size_t len)
{
  return bt_recv_exact (f->fd, buf, len, f->deadline, 0);
}

/* Send an extension message: id 20, ext_id, then payload. */
static int
send_extended (struct fetch *f, uint8_t ext_id, const char *payload,
               size_t len)
{
  uint8_t head[6];
  bt_wire_put_header (head, BT_MSG_EXTENDED, (uint32_t) (len + 1));
  head[5] = ext_id;
  int r = send_all (f, head, 6);
  return r < 0 ? r : send_all (f, payload, len);
}

/* The length of the bencoded value at the start of p, or 0 if it does
 * not end within len (bounded depth). */
static size_t
bencode_span (const uint8_t *p, size_t len, int depth)
{
  if (len == 0 || depth > BT_BENCODE_MAX_DEPTH)
    return 0;
  if (p[0] == 'i')
    {
      const uint8_t *e = memchr (p, 'e', len);
      return e ? (size_t) (e - p) + 1 : 0;
    }
  if (p[0] == 'l' || p[0] == 'd')
    {
      size_t at = 1;
      while (at < len && p[at] != 'e')
        {
          size_t n = bencode_span (p + at, len - at, depth + 1);
          if (n == 0)
            return 0;
          at += n;
        }
      return at < len ? at + 1 : 0;
    }
  size_t n = 0, at = 0;
  while (at < len && p[at] >= '0' && p[at] <= '9' && at < 9)
    n = n * 10 + (p[at++] - '0');
  if (at == 0 || at >= len || p[at] != ':' || n > len - at - 1)
    return 0;
  return at + 1 + n;
}

/* The peer's extension handshake: ut_metadata id and metadata_size. */
static int
on_ext_handshake (struct fetch *f, const uint8_t *p, size_t len)
{
  struct bt_bdoc *doc;
  struct bt_bnode *root;
  int r = bt_bencode_parse (p, len, &doc, &root);
  if (r < 0)
    return error_prefix (-r, "extension handshake");
  const struct bt_bnode *mdict = bt_bdict_get_type (root, "m", BT_BDICT);
  const struct bt_bnode *ut = bt_bdict_get_type (mdict, "ut_metadata",
                                                  BT_BINT);
  const struct bt_bnode *size = bt_bdict_get_type (root, "metadata_size",
                                                    BT_BINT);
  int64_t id = ut ? ut->ival : 0, sz = size ? size->ival : 0;
  bt_bdoc_free (doc);
  if (id <= 0 || id > 255)
    return error_set (EPROTO, "peer does not offer ut_metadata");
  if (sz <= 0 || sz > (int64_t) BT_MAX_METADATA)
    return error_set (EPROTO, "peer announces metadata_size %lld (at most "
                      "%u)", (long long) sz, BT_MAX_METADATA);
  f->peer_ut = (unsigned) id;
  f->meta_size = (size_t) sz;
  f->pieces = (uint32_t) ((f->meta_size + BT_BLOCK_SIZE - 1)
                          / BT_BLOCK_SIZE);
  f->meta = malloc (f->meta_size);
  f->got = calloc (f->pieces, 1);
  if (f->meta == NULL || f->got == NULL)
    return error_set (ENOMEM, "magnet: out of memory");
  for (uint32_t i = 0; i < f->pieces; i++)
    {
      char req[64];
      int n = snprintf (req, sizeof req, "d8:msg_typei0e5:piecei%uee", i);
      r = send_extended (f, (uint8_t) f->peer_ut, req, n);
      if (r < 0)
        return r;
    }
  return 0;
}

/* A ut_metadata message; returns 1 when the metadata is complete. */
static int
on_metadata (struct fetch *f, const uint8_t *p, size_t len)
{
  if (f->meta == NULL)
    return error_set (EPROTO, "ut_metadata before the extension "
                      "handshake");
  size_t dlen = bencode_span (p, len, 0);
  if (dlen == 0)
    return error_set (EPROTO, "ut_metadata: bad bencoded header");
  struct bt_bdoc *doc;
  struct bt_bnode *root;
  int r = bt_bencode_parse (p, dlen, &doc, &root);
  if (r < 0)
    return error_prefix (-r, "ut_metadata");
  const struct bt_bnode *type = bt_bdict_get_type (root, "msg_type",
                                                    BT_BINT);
  const struct bt_bnode *piece = bt_bdict_get_type (root, "piece", BT_BINT);
  int64_t t = type ? type->ival : -1, i = piece ? piece->ival : -1;
  bt_bdoc_free (doc);
  if (t == 0)
    return 0;                   /* a request: we have nothing to give */
  if (i < 0 || i >= f->pieces)
    return error_set (EPROTO, "ut_metadata: piece %lld out of range",
                      (long long) i);
  if (t == 2)
    return error_set (EPROTO, "peer rejected metadata piece %lld",
                      (long long) i);
  if (t != 1)
    return 0;
  size_t begin = (size_t) i * BT_BLOCK_SIZE;
  size_t want = f->meta_size - begin < BT_BLOCK_SIZE
                ? f->meta_size - begin : BT_BLOCK_SIZE;
  if (len - dlen != want)
    return error_set (EPROTO, "ut_metadata: piece %lld has %zu bytes, "
                      "expected %zu", (long long) i, len - dlen, want);
  memcpy (f->meta + begin, p + dlen, want);
  if (!f->got[i])
    {
      f->got[i] = 1;
      f->received++;
    }
  if (f->received < f->pieces)
    return 0;
  uint8_t digest[20];
  if (gnutls_hash_fast (GNUTLS_DIG_SHA1, f->meta, f->meta_size, digest) != 0
      || memcmp (digest, f->m->info_hash, 20) != 0)
    return error_set (EPROTO, "metadata fails its SHA-1");
  return 1;
}

/* Connect, handshake and fetch the whole metadata from one peer. */
static int
fetch_from (struct fetch *f, const struct bt_peer_addr *a)
{
  f->fd = socket (a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK
                  | SOCK_CLOEXEC, 0);
  if (f->fd < 0)
    return error_set (errno, "socket: %s", strerror (errno));
  int r = bt_connect_within (f->fd, (const struct sockaddr *) &a->addr,
                             a->addr_len, f->deadline - clock_seconds ());
  if (r < 0)
    return r;

  struct bt_handshake hs = { { 0 } };
  hs.reserved[BT_RESERVED_EXT_BYTE] |= BT_RESERVED_EXT_BIT;
  memcpy (hs.info_hash, f->m->info_hash, 20);
  memcpy (hs.peer_id, f->peer_id, 20);
  uint8_t hbuf[BT_HANDSHAKE_LEN];
  bt_wire_put_handshake (hbuf, &hs);
  r = send_all (f, hbuf, sizeof hbuf);
  if (r == 0)
    r = recv_exact (f, hbuf, sizeof hbuf);
  if (r == 0)
    r = bt_wire_parse_handshake (hbuf, sizeof hbuf, &hs);
  if (r < 0)
    return error_prefix (-r, "handshake");
  if (memcmp (hs.info_hash, f->m->info_hash, 20) != 0)
    return error_set (EPROTO, "handshake for another torrent");
  if (!(hs.reserved[BT_RESERVED_EXT_BYTE] & BT_RESERVED_EXT_BIT))
    return error_set (EPROTO, "peer lacks the extension protocol");
  static const char ext_hs[] = "d1:md11:ut_metadatai1eee";
  r = send_extended (f, 0, ext_hs, sizeof ext_hs - 1);
  if (r < 0)
    return r;

  uint8_t *msg = NULL;
  for (;;)
    {
      uint8_t lenbuf[4];
      r = recv_exact (f, lenbuf, 4);
      if (r < 0)
        break;
      uint32_t len = (uint32_t) lenbuf[0] << 24 | (uint32_t) lenbuf[1] << 16
                     | (uint32_t) lenbuf[2] << 8 | lenbuf[3];
      if (len == 0)
        continue;
      if (len > BT_MAX_EXTENDED + 64)
        {
          r = error_set (EPROTO, "message of %u bytes", len);
          break;
        }
      free (msg);
      msg = malloc (len);
      if (msg == NULL)
        {
          r = error_set (ENOMEM, "magnet: out of memory");
          break;
        }
      r = recv_exact (f, msg, len);
      if (r < 0)
        break;
      if (msg[0] != BT_MSG_EXTENDED || len < 2)
        continue;               /* bitfield, have, ...: not our concern */
      if (msg[1] == 0)
        r = f->meta ? 0 : on_ext_handshake (f, msg + 2, len - 2);
      else if (msg[1] == OUR_UT_METADATA)
        r = on_metadata (f, msg + 2, len - 2);
      if (r != 0)
        break;
    }
  free (msg);
  return r == 1 ? 0 : r;
}

/* ---- The fetch ---- */

static void
add_peer (struct bt_peer_addr *list, size_t *n, const struct bt_peer_addr *a)
{
  for (size_t i = 0; i < *n; i++)
    if (list[i].addr_len == a->addr_len
        && memcmp (&list[i].addr, &a->addr, a->addr_len) == 0)
      return;
  if (*n < MAX_FETCH_PEERS)
    list[(*n)++] = *a;
}

int
bt_magnet_fetch_info (const struct bt_magnet *m,
                      const struct bt_settings *set, uint8_t **info,
                      size_t *info_len)
{
  double timeout = set && set->timeout > 0 ? set->timeout : 60;
  const char *name = set && set->name ? set->name : "magnet";
  double deadline = clock_seconds () + timeout;
  struct bt_peer_addr *peers = calloc (MAX_FETCH_PEERS, sizeof *peers);
  size_t npeers = 0, tried = 0;
  char last[256] = "";
  struct fetch f = { .m = m, .fd = -1 };
  int r;

  if (peers == NULL)
    return error_set (ENOMEM, "magnet: out of memory");
  memcpy (f.peer_id, "-DS0100-", 8);
  if (getrandom (f.peer_id + 8, 12, 0) != 12)
    memset (f.peer_id + 8, 'x', 12);
  for (size_t i = 0; i < m->peer_count; i++)
    {
      struct bt_peer_addr a;
      if (bt_parse_host_port (m->peers[i], &a) == 0)
        add_peer (peers, &npeers, &a);
    }
  for (const char *const *p = set ? set->extra_peers : NULL; p && *p; p++)
    {
      struct bt_peer_addr a;
      if (bt_parse_host_port (*p, &a) == 0)
        add_peer (peers, &npeers, &a);
    }
  error_clear ();

  while (clock_seconds () < deadline)
    {
      for (size_t i = 0; i < m->tracker_count; i++)
        {
          double left = deadline - clock_seconds ();
          if (left <= 0)
            break;
          struct bt_announce an = {
            .info_hash = m->info_hash, .peer_id = f.peer_id, .port = 0,
            .left = 1, .event = BT_EVENT_STARTED, .numwant = 50,
            .timeout = left < 10 ? left : 10,
            .ca_file = set ? set->ca_file : NULL };
          struct bt_reply rep = { 0 };
          if (bt_tracker_announce (m->trackers[i], &an, &rep) == 0)
            for (size_t k = 0; k < rep.peer_count; k++)
              add_peer (peers, &npeers, &rep.peers[k]);
          else
            snprintf (last, sizeof last, "tracker %s: %s", m->trackers[i],
                      error_message ());
          bt_reply_clear (&rep);
        }
      for (size_t i = 0; i < npeers; i++)
        {
          double now = clock_seconds ();
          if (now >= deadline)
            break;
          f.deadline = now + PER_PEER_TIME < deadline ? now + PER_PEER_TIME
                                                      : deadline;
          tried++;
          r = fetch_from (&f, &peers[i]);
          if (f.fd >= 0)
            close (f.fd);
          f.fd = -1;
          if (r == 0)
            {
              *info = f.meta;
              *info_len = f.meta_size;
              free (f.got);
              free (peers);
              return 0;
            }
          char addr[128];
          session_peer_addr_text (&peers[i], addr, sizeof addr);
          snprintf (last, sizeof last, "peer %s: %s", addr,
                    error_message ());
          free (f.meta);
          free (f.got);
          f.meta = f.got = NULL;
        }
      double left = deadline - clock_seconds ();
      if (left > 0)
        poll (NULL, 0, left < 1 ? (int) (left * 1000) : 1000);
    }
  free (peers);
  return error_set (ETIMEDOUT, "%s: no peer gave the metadata within %g s "
                    "(%zu peers known, %zu connection attempts%s%s)", name,
                    timeout, npeers, tried, last[0] ? "; last: " : "", last);
}

int
bt_magnet_fetch (const struct bt_magnet *m, const struct bt_settings *set,
                 struct bt_metainfo **out)
{
  uint8_t *info;
  size_t len;
  int r = bt_magnet_fetch_info (m, set, &info, &len);
  if (r < 0)
    return r;
  r = bt_magnet_metainfo (m, info, len, out);
  free (info);
  if (r < 0)
    return error_prefix (-r, "%s", set && set->name ? set->name : "magnet");
  return 0;
}
