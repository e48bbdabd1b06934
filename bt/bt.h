/* diskshelf bt: a standalone BitTorrent client library.
 *
 * It reads metainfo files (BEP 3 single and multi-file, BEP 12
 * announce-list, BEP 19 url-list; the v1 part of hybrid v1/v2 torrents),
 * announces to HTTP(S) (BEP 23 compact peers) and UDP (BEP 15) trackers,
 * speaks the peer wire protocol (BEP 3, BEP 6 fast extension, BEP 10
 * extension handshake), fetches pieces on demand from several peers with
 * many 16 KiB requests in flight, verifies every piece's SHA-1 before it
 * is stored or served, and seeds verified pieces from a store the caller
 * provides.  It knows nothing of FUSE or of the diskshelf catalog.
 *
 * Thread model: a bt_session may be used from any number of threads at
 * once.  It runs one tracker thread, one listener thread and one thread
 * per peer connection; bt_read_piece blocks the calling thread until the
 * piece is verified or the session's timeout passes.
 *
 * Errors: functions return 0 on success and a negative errno on failure,
 * with the reason recorded by error_set (common/error.h), readable on the
 * calling thread with error_message ().
 *
 * Every byte from a peer or a tracker is treated as hostile.
 */
#ifndef DISKSHELF_BT_H
#define DISKSHELF_BT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Metainfo (bt/metainfo.c) ---- */

struct bt_file
{
  char *path;                /* sanitised, components joined by '/';
                                multi-file: without the torrent's name */
  uint64_t length;
  uint64_t offset;           /* in the concatenation of all files */
  bool pad;                  /* BEP 47 padding file (attr "p") */
};

struct bt_metainfo
{
  uint8_t info_hash[20];     /* SHA-1 over the raw bytes of info */
  char *name;                /* sanitised single path component */
  bool multi_file;
  bool hybrid;               /* had "meta version" 2 beside the v1 keys */
  bool private_;             /* info.private = 1 (BEP 27) */
  uint32_t piece_length;
  uint32_t piece_count;
  uint64_t total_length;
  uint8_t *pieces;           /* piece_count * 20 bytes of SHA-1 */
  struct bt_file *files;     /* file_count entries, in torrent order */
  size_t file_count;
  char ***tiers;             /* announce tiers (BEP 12, else "announce"):
                                tier_count NULL-ended lists of URLs */
  size_t tier_count;
  char **url_list;           /* BEP 19 web seeds, url_count entries */
  size_t url_count;
};

/* Parse a metainfo file's bytes.  Returns 0 and a new *out, or -EINVAL
 * with a message saying what is wrong and, where it helps, how to make a
 * usable torrent; -ENOMEM.  The caller frees *out with
 * bt_metainfo_free. */
int bt_metainfo_parse (const uint8_t *data, size_t len,
                       struct bt_metainfo **out);

/* Read and parse a metainfo file (messages are prefixed with path). */
int bt_metainfo_load (const char *path, struct bt_metainfo **out);

void bt_metainfo_free (struct bt_metainfo *mi);

/* Bytes in piece index (the last one may be short); 0 if out of range. */
uint32_t bt_metainfo_piece_size (const struct bt_metainfo *mi,
                                 uint32_t index);

/* The index of the file whose path is path, or -ENOENT with a message
 * listing a few names. */
int bt_metainfo_find_file (const struct bt_metainfo *mi, const char *path);

/* True when buf (the whole piece, bt_metainfo_piece_size bytes) matches
 * piece index's SHA-1. */
bool bt_piece_verify (const struct bt_metainfo *mi, uint32_t index,
                      const uint8_t *buf);

/* Hex form of the info-hash into buf (41 bytes). */
void bt_info_hash_hex (const struct bt_metainfo *mi, char buf[41]);

/* ---- Sessions (bt/session.c) ---- */

/* Where verified pieces are kept.  The session calls these from any of
 * its threads at once; the store protects itself.  Any callback may be
 * NULL: no has_piece means the store holds nothing at the start, no
 * write_piece means fetched pieces are only handed to their readers. */
struct bt_store_ops
{
  /* True if the store holds piece index (it is verified before use). */
  bool (*has_piece) (void *ctx, uint32_t index);
  /* Fill buf with the len bytes of piece index; 0 or a negative errno:
   * -EAGAIN when the store does not hold it yet but is taking it in
   * (the piece stays ours; the peer asking is refused for now), any
   * other error when the store lost it (evicted: no longer offered). */
  int (*read_piece) (void *ctx, uint32_t index, uint8_t *buf, size_t len);
  /* Keep a verified piece; 0 or a negative errno (then it is not
   * advertised to peers). */
  int (*write_piece) (void *ctx, uint32_t index, const uint8_t *buf,
                      size_t len);
};

/* Settings for a session.  Zero values mean the defaults. */
struct bt_settings
{
  const char *name;          /* prefix for messages, e.g. the .torrent */
  double timeout;            /* seconds a bt_read_piece waits; default 60 */
  unsigned max_peers;        /* outgoing connections; default 16 */
  unsigned pipeline;         /* requests in flight per peer; default 64 */
  bool listen;               /* accept incoming connections (seeding) */
  const char *listen_address;  /* default 0.0.0.0 */
  uint16_t listen_port;      /* 0: any free port; else the first free
                                one of listen_port .. +15, then any
                                (see bt_session_port, announced) */
  unsigned max_unchoked;     /* upload slots (unchoked peers); default 4 */
  uint64_t upload_rate;      /* bytes/s uploaded at most; 0: no limit */
  double announce_retry;     /* first retry after a failed announce, s;
                                doubles up to 300; default 15 */
  double announce_min_interval;  /* floor under the tracker's interval,
                                    default 30 */
  double connect_timeout;    /* TCP connect + handshake, default 10 */
  const char *ca_file;       /* HTTPS trackers: extra trusted CAs */
  const char *const *extra_peers;  /* NULL-ended "host:port" peers to try
                                      besides the trackers' */
};

struct bt_session;

/* Counters for status and tests. */
struct bt_stats
{
  unsigned peers_known;
  unsigned peers_connected;
  unsigned peers_banned;
  uint64_t pieces_fetched;   /* verified pieces from peers */
  uint64_t hash_failures;
  uint64_t bytes_down;       /* piece payload bytes received */
  uint64_t bytes_discarded;  /* payload received and not used: blocks no
                                longer asked for, or of pieces dropped
                                before they were whole */
  uint64_t bytes_up;         /* piece payload bytes sent */
  uint64_t requests_cancelled;  /* requests the peer cancelled before
                                   they were served */
  unsigned peers_unchoked;   /* peers holding an upload slot now */
  uint32_t pieces_have;      /* pieces held (verified or claimed) */
  uint64_t announces_ok;
  uint64_t announces_failed;
};

/* Start a session over mi (borrowed: it must outlive the session).
 * Returns 0 and *out, or a negative errno with a message. */
int bt_session_open (const struct bt_metainfo *mi,
                     const struct bt_settings *settings,
                     const struct bt_store_ops *store, void *store_ctx,
                     struct bt_session **out);

/* Fill buf (bt_metainfo_piece_size bytes) with verified piece index:
 * from the store if it holds it, else from the swarm.  Many threads may
 * wait for pieces at once.  Returns 0, -EINVAL for a bad index, or -EIO
 * when no peer delivered a good copy within the timeout.  After a read
 * timed out with no peer connected, later reads fail with -EIO at once
 * for one timeout, unless a peer connects meanwhile (an empty swarm
 * costs one timeout, not one per piece asked).  A verified piece the
 * store no longer gives back (a store may drop pieces) is fetched
 * again. */
int bt_read_piece (struct bt_session *s, uint32_t index, uint8_t *buf);

/* Start fetching piece index in the background, so that a later
 * bt_read_piece finds it ready (a sequential reader's read-ahead).  At
 * most about 32 MiB of such pieces are kept waiting for their reader;
 * beyond that the oldest unread one is dropped.  Never blocks. */
void bt_prefetch_piece (struct bt_session *s, uint32_t index);

/* Make every bt_read_piece waiting now, or called later, fail at once
 * with -EIO: the caller is closing and must not wait for the swarm (the
 * session itself runs on until bt_session_close).  Never blocks long. */
void bt_session_abort_reads (struct bt_session *s);

/* The store gained pieces outside the session (a restarted daemon's
 * disk cache, a web seed): ask has_piece again for every piece the
 * session lacks and announce the new ones to connected peers.  Any
 * thread; not under a store callback. */
void bt_session_store_changed (struct bt_session *s);

/* The store gained piece index outside the session (a web seed): offer
 * it to peers as the store's (verified on first use).  Any thread. */
void bt_session_store_added (struct bt_session *s, uint32_t index);

/* The TCP port the session listens on (0 if it does not). */
uint16_t bt_session_port (const struct bt_session *s);

void bt_session_stats (struct bt_session *s, struct bt_stats *out);

/* Send "stopped" to the trackers (briefly), close every connection, join
 * every thread and free the session. */
void bt_session_close (struct bt_session *s);

/* ---- Magnet links (bt/magnet_uri.c, bt/magnet.c) ---- */

/* The metadata (info dictionary) fetched from peers is refused above
 * this size. */
#define BT_MAX_METADATA (16u << 20)

struct bt_magnet
{
  uint8_t info_hash[20];     /* xt=urn:btih: 40 hex or 32 base32 */
  char *name;                /* dn=, or NULL */
  char **trackers;           /* tr= (decoded), tracker_count entries */
  size_t tracker_count;
  char **peers;              /* x.pe= "host:port", peer_count entries */
  size_t peer_count;
};

/* Parse a magnet URI.  Returns 0 and a new *out, or -EINVAL with a
 * message; -ENOMEM.  Free with bt_magnet_free. */
int bt_magnet_parse (const char *uri, struct bt_magnet **out);

void bt_magnet_free (struct bt_magnet *m);

/* Fetch the magnet's metadata from peers (the magnet's trackers, its
 * x.pe peers and set->extra_peers) within set->timeout seconds (default
 * 60), check its SHA-1 against the info-hash and parse it as a torrent
 * whose announce-list is the magnet's trackers.  Blocks the caller.
 * Returns 0 and a new *out, or a negative errno with a message. */
int bt_magnet_fetch (const struct bt_magnet *m,
                     const struct bt_settings *set,
                     struct bt_metainfo **out);

/* The same fetch, giving the raw info dictionary (its SHA-1 is the
 * info-hash) instead of the torrent: what a caller keeps in a cache and
 * turns into the torrent with bt_magnet_metainfo.  *info is malloc'd,
 * the caller frees it. */
int bt_magnet_fetch_info (const struct bt_magnet *m,
                          const struct bt_settings *set, uint8_t **info,
                          size_t *info_len);

/* Parse a torrent made from the raw info dictionary and trackers (what
 * bt_magnet_fetch does once it holds the metadata). */
int bt_magnet_metainfo (const struct bt_magnet *m, const uint8_t *info,
                        size_t len, struct bt_metainfo **out);

#endif
