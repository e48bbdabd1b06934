/* diskshelf bt: tracker announces.  HTTP(S) (BEP 3, compact peers BEP
 * 23) through libcurl and UDP (BEP 15) over a plain socket, plus the
 * pure parsers of their replies (fuzzed).
 *
 * Thread model: the announce functions block the calling thread (for at
 * most the given timeout) and touch only their arguments; the session's
 * tracker thread is the only caller.
 */
#ifndef DISKSHELF_BT_TRACKER_H
#define DISKSHELF_BT_TRACKER_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define BT_MAX_PEERS_PER_REPLY 2000
#define BT_MAX_TRACKER_REPLY (1u << 20)

enum bt_event { BT_EVENT_NONE, BT_EVENT_COMPLETED, BT_EVENT_STARTED,
                BT_EVENT_STOPPED };

struct bt_peer_addr
{
  struct sockaddr_storage addr;   /* AF_INET or AF_INET6 */
  socklen_t addr_len;
};

struct bt_announce
{
  const uint8_t *info_hash;   /* 20 bytes */
  const uint8_t *peer_id;     /* 20 bytes */
  uint16_t port;
  uint64_t uploaded, downloaded, left;
  enum bt_event event;
  uint32_t key;
  int numwant;
  double timeout;             /* seconds for the whole announce */
  const atomic_bool *cancel;  /* if set and true, give up at once
                                 (-ECANCELED); may be NULL */
  const char *ca_file;        /* HTTPS: extra trusted CAs or NULL */
};

/* A tracker's answer.  peers is malloc'd; free with bt_reply_clear. */
struct bt_reply
{
  uint32_t interval;          /* seconds */
  uint32_t min_interval;      /* 0 if not given */
  struct bt_peer_addr *peers;
  size_t peer_count;
};

void bt_reply_clear (struct bt_reply *r);

/* Parse an HTTP tracker's bencoded body.  A "failure reason" becomes
 * -EREMOTEIO with the tracker's words; malformed bodies -EPROTO. */
int bt_tracker_parse_http (const uint8_t *body, size_t len,
                           struct bt_reply *out);

/* Parse a UDP announce reply for transaction id txid.  An error reply
 * (action 3) becomes -EREMOTEIO; short or mismatched ones -EPROTO. */
int bt_tracker_parse_udp (const uint8_t *buf, size_t len, uint32_t txid,
                          struct bt_reply *out);

/* Append compact peers (6 bytes IPv4 or 18 bytes IPv6 each). */
int bt_tracker_add_compact (struct bt_reply *out, const uint8_t *p,
                            size_t len, int family);

/* Announce to url (http://, https:// or udp://). */
int bt_tracker_announce (const char *url, const struct bt_announce *a,
                         struct bt_reply *out);

#endif
