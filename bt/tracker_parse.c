/* diskshelf bt: parsing tracker replies, HTTP (bencoded) and UDP. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bencode.h"
#include "error.h"
#include "tracker.h"

/* Free the peers of a reply. */
void
bt_reply_clear (struct bt_reply *r)
{
  free (r->peers);
  memset (r, 0, sizeof *r);
}

/* Grow the peer array to hold extra more entries. */
static int
reserve_peers (struct bt_reply *out, size_t extra)
{
  if (extra > BT_MAX_PEERS_PER_REPLY - out->peer_count)
    extra = BT_MAX_PEERS_PER_REPLY - out->peer_count;
  struct bt_peer_addr *p = realloc (out->peers, (out->peer_count + extra + 1)
                                    * sizeof *p);
  if (p == NULL)
    return error_set (ENOMEM, "tracker reply: out of memory");
  out->peers = p;
  return 0;
}

/* Add one IPv4 or IPv6 peer unless it is port 0 or the list is full. */
static void
add_peer (struct bt_reply *out, int family, const uint8_t *ip, uint16_t port)
{
  if (port == 0 || out->peer_count >= BT_MAX_PEERS_PER_REPLY)
    return;
  struct bt_peer_addr *pa = &out->peers[out->peer_count++];
  memset (pa, 0, sizeof *pa);
  if (family == AF_INET)
    {
      struct sockaddr_in *sin = (struct sockaddr_in *) &pa->addr;
      sin->sin_family = AF_INET;
      memcpy (&sin->sin_addr, ip, 4);
      sin->sin_port = htons (port);
      pa->addr_len = sizeof *sin;
    }
  else
    {
      struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &pa->addr;
      sin6->sin6_family = AF_INET6;
      memcpy (&sin6->sin6_addr, ip, 16);
      sin6->sin6_port = htons (port);
      pa->addr_len = sizeof *sin6;
    }
}

/* Add compact peers (BEP 23 / BEP 7 form). */
int
bt_tracker_add_compact (struct bt_reply *out, const uint8_t *p, size_t len,
                        int family)
{
  size_t each = family == AF_INET ? 6 : 18;
  if (len % each != 0)
    return error_set (EPROTO, "tracker reply: compact peers of %zu bytes, "
                      "not a multiple of %zu", len, each);
  int r = reserve_peers (out, len / each);
  if (r < 0)
    return r;
  for (size_t i = 0; i < len; i += each)
    add_peer (out, family, p + i, (uint16_t) (p[i + each - 2] << 8
                                              | p[i + each - 1]));
  return 0;
}

/* Add peers from the non-compact list-of-dicts form. */
static int
add_dict_peers (struct bt_reply *out, const struct bt_bnode *list)
{
  int r = reserve_peers (out, list->count);
  if (r < 0)
    return r;
  for (const struct bt_bnode *d = list->first; d != NULL; d = d->next)
    {
      const struct bt_bnode *ip = bt_bdict_get_type (d, "ip", BT_BSTR);
      const struct bt_bnode *port = bt_bdict_get_type (d, "port", BT_BINT);
      if (ip == NULL || port == NULL || port->ival <= 0
          || port->ival > 65535 || ip->str_len >= 64)
        continue;
      char text[64];
      memcpy (text, ip->str, ip->str_len);
      text[ip->str_len] = '\0';
      uint8_t bin[16];
      if (inet_pton (AF_INET, text, bin) == 1)
        add_peer (out, AF_INET, bin, port->ival);
      else if (inet_pton (AF_INET6, text, bin) == 1)
        add_peer (out, AF_INET6, bin, port->ival);
    }
  return 0;
}

/* Parse an HTTP announce body. */
int
bt_tracker_parse_http (const uint8_t *body, size_t len, struct bt_reply *out)
{
  memset (out, 0, sizeof *out);
  struct bt_bdoc *doc;
  struct bt_bnode *root;
  int r = bt_bencode_parse (body, len, &doc, &root);
  if (r < 0)
    return error_prefix (EPROTO, "tracker reply is not bencoded");
  const struct bt_bnode *fail = bt_bdict_get_type (root, "failure reason",
                                                   BT_BSTR);
  const struct bt_bnode *interval = bt_bdict_get_type (root, "interval",
                                                       BT_BINT);
  const struct bt_bnode *min_iv = bt_bdict_get_type (root, "min interval",
                                                     BT_BINT);
  const struct bt_bnode *peers = bt_bdict_get (root, "peers");
  const struct bt_bnode *peers6 = bt_bdict_get_type (root, "peers6", BT_BSTR);
  if (root->type != BT_BDICT)
    r = error_set (EPROTO, "tracker reply is not a dictionary");
  else if (fail != NULL)
    r = error_set (EREMOTEIO, "tracker refused: %.*s",
                   (int) (fail->str_len > 200 ? 200 : fail->str_len),
                   (const char *) fail->str);
  else if (interval == NULL || interval->ival < 0
           || interval->ival > 7 * 24 * 3600)
    r = error_set (EPROTO, "tracker reply has no valid interval");
  else
    {
      out->interval = interval->ival;
      if (min_iv != NULL && min_iv->ival > 0
          && min_iv->ival <= 7 * 24 * 3600)
        out->min_interval = min_iv->ival;
      if (peers != NULL && peers->type == BT_BSTR)
        r = bt_tracker_add_compact (out, peers->str, peers->str_len,
                                    AF_INET);
      else if (peers != NULL && peers->type == BT_BLIST)
        r = add_dict_peers (out, peers);
      if (r == 0 && peers6 != NULL)
        r = bt_tracker_add_compact (out, peers6->str, peers6->str_len,
                                    AF_INET6);
    }
  bt_bdoc_free (doc);
  if (r < 0)
    bt_reply_clear (out);
  return r;
}

/* Read a big-endian 32-bit number. */
static uint32_t
get32 (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8
         | p[3];
}

/* Parse a UDP announce reply (BEP 15: action 1, txid, interval,
 * leechers, seeders, then 6-byte peers; action 3 is an error). */
int
bt_tracker_parse_udp (const uint8_t *buf, size_t len, uint32_t txid,
                      struct bt_reply *out)
{
  memset (out, 0, sizeof *out);
  if (len < 8)
    return error_set (EPROTO, "UDP tracker reply of %zu bytes", len);
  uint32_t action = get32 (buf);
  if (get32 (buf + 4) != txid)
    return error_set (EPROTO, "UDP tracker reply for another transaction");
  if (action == 3)
    return error_set (EREMOTEIO, "tracker refused: %.*s",
                      (int) (len - 8 > 200 ? 200 : len - 8),
                      (const char *) buf + 8);
  if (action != 1)
    return error_set (EPROTO, "UDP tracker reply has action %u, not announce",
                      action);
  if (len < 20)
    return error_set (EPROTO, "UDP tracker announce reply of %zu bytes (is "
                      "the torrent registered with the tracker?)", len);
  out->interval = get32 (buf + 8);
  if (out->interval > 7 * 24 * 3600)
    out->interval = 7 * 24 * 3600;
  size_t plen = (len - 20) - (len - 20) % 6;
  int r = bt_tracker_add_compact (out, buf + 20, plen, AF_INET);
  if (r < 0)
    bt_reply_clear (out);
  return r;
}
