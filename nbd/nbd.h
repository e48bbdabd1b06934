/* diskshelf nbd: a standalone NBD client library.
 *
 * It speaks fixed-newstyle NBD (with the oldstyle greeting detected and
 * refused), optionally over TLS (GnuTLS: X.509 or PSK), with structured
 * replies, base:allocation block status and the server's block-size
 * constraints.  It knows nothing of FUSE or of the diskshelf catalog.
 *
 * Thread model: an nbd_client may be used from any number of threads at
 * once; many requests are in flight on each connection, and replies are
 * matched to requests by cookie in any order.  The calling threads read
 * the replies themselves (one at a time per connection, handing the role
 * on), so a lone request costs no thread switch; each connection also has
 * a thread that reconnects, with back-off, when it is lost, after which
 * the interrupted requests are sent again.  A lost connection is any sign
 * that the server is gone: end of stream or a reset (noticed while idle
 * too: the connection's thread watches the socket, and after 10 s without
 * a request reads one block), or an NBD_ESHUTDOWN reply from a server that
 * is stopping.  A request fails with EIO when
 * its reply does not come within the timeout or when the server cannot be
 * reached again within the retry time.
 *
 * Errors: functions return 0 (or a count) on success and a negative
 * errno on failure; the reason is kept per thread and read back with
 * nbd_get_error ().
 *
 * Every byte from the server is treated as hostile: lengths, offsets,
 * chunk overlaps, error codes and string sizes are all checked, and
 * nothing the server sizes is allocated without a bound (option replies
 * 64 KiB, strings 4096 bytes, chunks per reply 64 + count/512).  Bytes
 * sent in the clear after the STARTTLS reply fail the connection.  TLS
 * over a Unix or vsock socket needs an explicit CA (or tls-hostname).
 */
#ifndef DISKSHELF_NBD_H
#define DISKSHELF_NBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- URIs (nbd/uri.c) ---- */

enum nbd_transport { NBD_TRANSPORT_TCP, NBD_TRANSPORT_UNIX,
                     NBD_TRANSPORT_VSOCK };

/* A parsed NBD URI:
 *   nbd[s][+unix|+vsock]://[user@][host][:port][/export][?query]
 * Every string is owned by the struct (NULL when absent). */
struct nbd_uri
{
  enum nbd_transport transport;
  bool tls;                  /* nbds*: TLS required, never plaintext */
  char *user;                /* userinfo: the TLS PSK username */
  char *host;                /* TCP host (brackets stripped), NULL: localhost */
  uint16_t port;             /* TCP or vsock port, default 10809 */
  uint32_t cid;              /* vsock CID, default 2 */
  char *export_name;         /* decoded path without the leading '/' ("" default) */
  char *socket;              /* socket=: Unix socket path (+unix only) */
  char *tls_certificates;    /* tls-certificates=: X.509 directory */
  char *tls_psk_file;        /* tls-psk-file=: username:hexkey lines */
  char *tls_hostname;        /* tls-hostname=: name to verify */
  int tls_verify_peer;       /* tls-verify-peer=: -1 unset, 0, 1 */
};

/* Parse text into a new struct.  Returns 0 or -EINVAL (with a message
 * naming the problem).  The caller frees *out with nbd_uri_free. */
int nbd_uri_parse (const char *text, struct nbd_uri **out);

void nbd_uri_free (struct nbd_uri *uri);

/* True if text starts with one of the NBD URI schemes. */
bool nbd_uri_is_nbd (const char *text);

/* ---- Connecting (nbd/client.c) ---- */

/* Settings beyond the URI.  Zero values mean the defaults. */
struct nbd_settings
{
  double timeout;            /* seconds a request may wait for its reply
                                (and connect + handshake); default 30 */
  double retry_time;         /* seconds of reconnecting before EIO;
                                default 30 */
  unsigned connections;      /* connections when the server allows
                                multi-conn; default 4, max 16 */
  const char *ca_file;       /* extra trusted CA bundle (PEM) or NULL */
  int verify_peer;           /* -1: URI or default (yes); 0 no; 1 yes */
  const char *name;          /* prefix for messages, e.g. the URI */
};

struct nbd_client;

/* Connect and negotiate the first connection (the others follow on
 * demand).  Borrowed: uri and settings are copied.  The caller closes
 * *out with nbd_close. */
int nbd_open (const struct nbd_uri *uri, const struct nbd_settings *settings,
              struct nbd_client **out);

/* Disconnect politely (NBD_CMD_DISC) and free everything.  No other call
 * may be running. */
void nbd_close (struct nbd_client *c);

/* Stop waiting for replies, in every client of the process: requests
 * being waited for fail with EIO within about a second, later ones as
 * soon as they would wait.  For a program that is going away (its mount
 * was lazily unmounted) while a server is silent.  Cannot be undone;
 * safe from any thread. */
void nbd_abort_waits (void);

/* What the server said at negotiation. */
uint64_t nbd_get_size (struct nbd_client *c);
bool nbd_is_read_only (struct nbd_client *c);
bool nbd_can_flush (struct nbd_client *c);
bool nbd_can_trim (struct nbd_client *c);
bool nbd_can_zero (struct nbd_client *c);
bool nbd_can_cache (struct nbd_client *c);
bool nbd_can_multi_conn (struct nbd_client *c);
bool nbd_can_block_status (struct nbd_client *c);
uint32_t nbd_get_block_size (struct nbd_client *c, int which); /* 0 min, 1 pref, 2 max */
unsigned nbd_get_connections (struct nbd_client *c);
bool nbd_is_tls (struct nbd_client *c);

/* ---- I/O (nbd/rw.c) ----
 * All are synchronous for the calling thread and may run concurrently
 * from many threads.  Ranges must lie inside the export; they are split
 * to the server's maximum and aligned to its minimum block size. */

int nbd_pread (struct nbd_client *c, void *buf, size_t count, uint64_t offset);
int nbd_pwrite (struct nbd_client *c, const void *buf, size_t count,
                uint64_t offset);
int nbd_flush (struct nbd_client *c);
int nbd_trim (struct nbd_client *c, uint64_t offset, uint64_t length);
int nbd_zero (struct nbd_client *c, uint64_t offset, uint64_t length);
int nbd_cache (struct nbd_client *c, uint64_t offset, uint64_t length);

/* One run of base:allocation status. */
struct nbd_extent
{
  uint64_t length;
  uint32_t flags;            /* NBD_STATE_HOLE (1) | NBD_STATE_ZERO (2) */
};

/* Describe the run starting at offset: one extent (consecutive extents
 * with equal flags merged), clamped to the export.  Without block status
 * support the rest of the export is one data extent. */
int nbd_block_status (struct nbd_client *c, uint64_t offset,
                      struct nbd_extent *out);

/* Counters for status output. */
struct nbd_stats
{
  uint64_t requests;
  uint64_t reconnects;
  uint64_t timeouts;
  uint64_t protocol_errors;
  bool connected;
  char last_loss[256];   /* why a connection was last lost, "" if never */
};
void nbd_get_stats (struct nbd_client *c, struct nbd_stats *out);

/* ---- Errors (nbd/errors.c) ---- */

/* The calling thread's last error message ("" if none); owned by the
 * library, valid until the next failing call on this thread. */
const char *nbd_get_error (void);

/* The errno of the calling thread's last error (0 if none). */
int nbd_get_errno (void);

#endif
