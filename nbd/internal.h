/* diskshelf nbd: private structures shared by the files of nbd/.
 *
 * Thread model of one connection (struct nbd_conn):
 *  - lock protects state, gen, the cookie table, the queue of requests
 *    waiting for a connection, and each request's state/error fields;
 *  - wlock serialises writers on the socket; the socket and TLS session
 *    are replaced (on reconnect) only with both locks held, and gen is
 *    bumped then, so a writer that sees its gen unchanged under wlock
 *    writes to the right socket;
 *  - one thread at a time holds the reader role (conn->reading): a
 *    caller waiting for its own reply reads the socket itself and
 *    dispatches every reply it meets (leader/follower), so a lone
 *    request costs no thread switch; when its reply is in, it hands the
 *    role to another waiter.  The reader role owns the read buffer and
 *    the reply-tracking fields of in-flight requests;
 *  - the connection's own thread reconnects after a loss and, while the
 *    connection is up, watches the socket for the server closing it
 *    (POLLRDHUP); when nobody reads (no request in flight) it takes the
 *    reader role and declares the connection lost, so that a server
 *    stopping gracefully sees us close and a reconnect starts at once.
 *    After NBD_IDLE_PROBE_SECONDS without a request it reads one block
 *    (a probe, never replayed), since a server stopping gracefully may
 *    only say so (NBD_ESHUTDOWN) when asked.  An NBD_ESHUTDOWN on one
 *    connection makes every other connection of the client probe at
 *    once (nbd_client_server_stopping): a server that waits for its
 *    clients to leave (nbdkit on SIGTERM) is let go at once, not after
 *    the idle connections' next probe.
 * A request lives on its caller's stack; the caller waits on its own
 * condition variable until the reader (or the reconnect logic) marks it
 * done, and only then returns.
 */
#ifndef DISKSHELF_NBD_INTERNAL_H
#define DISKSHELF_NBD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#include <gnutls/gnutls.h>

#include "nbd.h"
#include "text.h"       /* text_escape for server text in messages */
#include "protocol.h"

#define NBD_MAX_CONNECTIONS 16
#define NBD_TABLE_SIZE 64
#define NBD_READ_BUFFER (64 * 1024)
/* Seconds an extra multi-conn connection may take to negotiate. */
#define NBD_EXTRA_CONN_TIMEOUT 5.0
/* Chunks one structured reply may have: enough for a server that splits
 * a read at every 512-byte change between data and hole, few enough
 * that tracking them costs little memory and time. */
/* Seconds an idle connection waits before checking the server is still
 * serving (a server stopping gracefully, like nbdkit on SIGTERM, sends
 * nothing and waits for us to leave; it says NBD_ESHUTDOWN only when
 * asked something). */
#define NBD_IDLE_PROBE_SECONDS 10
#define NBD_MAX_REPLY_CHUNKS(count) (64 + (count) / 512)

/* What one negotiation produced. */
struct nbd_export_info
{
  uint64_t size;
  uint16_t eflags;
  bool structured;           /* structured replies on */
  bool has_allocation;       /* base:allocation selected */
  uint32_t allocation_id;    /* its context id (may be 0) */
  uint32_t min_block;        /* >= 1 */
  uint32_t pref_block;
  uint32_t max_payload;      /* <= NBD_MAX_PAYLOAD */
  bool tls;
};

/* A byte range already covered by a READ reply. */
struct nbd_range
{
  uint64_t start, end;
};

enum nbd_req_state { REQ_NEW, REQ_QUEUED, REQ_SENT, REQ_DONE };

struct nbd_req
{
  /* Set by the caller before submission, read-only afterwards. */
  uint16_t type;
  uint16_t flags;
  uint64_t offset;
  uint32_t count;
  void *rbuf;                /* READ destination */
  const void *wbuf;          /* WRITE payload */
  struct nbd_extent *extent; /* BLOCK_STATUS result */
  struct nbd_conn *conn;     /* the connection it goes over */
  bool probe;                /* the idle check: never queued or replayed */

  /* protected by conn->lock */
  enum nbd_req_state state;
  int error;                 /* positive errno once done */
  bool timed_out;
  bool waiting;              /* its caller sleeps on cond */
  uint64_t cookie;
  uint64_t gen;              /* connection generation it was sent on */
  struct timespec deadline;
  pthread_cond_t cond;
  struct nbd_req *next;      /* cookie table chain or queue link */
  char message[256];         /* the reason when failed */

  /* reader thread only, while SENT */
  struct nbd_range *cover;   /* READ chunks seen (contiguous ones merged) */
  size_t ncover, cover_cap;
  uint64_t covered;          /* bytes in them */
  bool cover_unsorted;       /* a chunk came before an earlier one */
  uint32_t nchunks;          /* chunks of this reply so far */
  bool got_error_chunk;
  uint32_t first_error;
  bool got_extent;
  bool data_chunk_seen;
};

enum nbd_conn_state { CONN_DOWN, CONN_UP, CONN_FAILED, CONN_CLOSING };

struct nbd_conn
{
  struct nbd_client *client;
  unsigned index;

  pthread_mutex_t lock;
  pthread_mutex_t wlock;
  pthread_cond_t reader_cond;  /* wakes the reader to reconnect */
  int wake_fd;                 /* eventfd: wakes the connection's thread
                                  from watching an idle socket */
  enum nbd_conn_state state;   /* protected by lock */
  uint64_t gen;                /* protected by lock and wlock */
  uint64_t next_cookie;        /* protected by lock */
  struct nbd_req *table[NBD_TABLE_SIZE];  /* protected by lock */
  struct nbd_req *queue;       /* protected by lock */
  size_t in_flight;            /* protected by lock */
  uint64_t submitted;          /* protected by lock: requests sent, so
                                  the idle check sees activity */
  size_t big_reads;            /* protected by lock (read racily as a
                                  hint): READs in flight whose payload
                                  goes straight to the caller's buffer */
  struct timespec down_since;  /* protected by lock */
  bool reading;                /* protected by lock: a thread holds the
                                  reader role */
  bool check_now;              /* atomic: another connection heard the
                                  server is shutting down, so check
                                  this one at once, not at the next
                                  idle probe */

  int fd;                      /* replaced under lock + wlock */
  gnutls_session_t tls;        /* idem */

  pthread_t reader;
  bool reader_started;

  /* reader (or handshake) only */
  char *rbuf;
  size_t rpos, rlen;
  double io_timeout;           /* the socket's receive timeout, seconds */
  bool negotiating;            /* the handshake must end by hs_deadline */
  struct timespec hs_deadline;

  struct nbd_export_info info;
};

struct nbd_client
{
  struct nbd_uri *uri;
  double timeout;
  double retry_time;
  unsigned want_connections;
  char *ca_file;
  bool verify_peer;
  char *name;

  /* TLS credentials, loaded once and shared read-only. */
  gnutls_certificate_credentials_t x509;
  gnutls_psk_client_credentials_t psk;

  struct nbd_export_info info;       /* from the first connection */
  unsigned nconns;                   /* fixed after nbd_open */
  struct nbd_conn *conns[NBD_MAX_CONNECTIONS];
  atomic_uint next_conn;
  pthread_rwlock_t rmw_lock;         /* unaligned read-modify-write */
  pthread_mutex_t loss_lock;
  char last_loss[256];               /* protected by loss_lock: why a
                                        connection was last lost */
  bool closing;                      /* protected by loss_lock: nbd_close
                                        began, conns[] may be freed */

  atomic_uint_fast64_t requests;
  atomic_uint_fast64_t reconnects;
  atomic_uint_fast64_t timeouts;
  atomic_uint_fast64_t protocol_errors;
};

/* errors.c */
int nbd_set_error (int errnum, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
int nbd_prefix_error (int errnum, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
int nbd_errno_from_wire (uint32_t err);

/* socket.c: connecting and moving bytes (plain or TLS). */
int nbd_socket_connect (struct nbd_client *c, int *fd_out);
int nbd_socket_set_timeout (int fd, double seconds);
int nbd_conn_send (struct nbd_conn *conn, struct iovec *iov, int iovcnt);
int nbd_conn_recv (struct nbd_conn *conn, void *buf, size_t n);
int nbd_conn_skip (struct nbd_conn *conn, size_t n);
int nbd_conn_wait_readable (struct nbd_conn *conn,
                            const struct timespec *deadline);
void nbd_conn_drop_transport (struct nbd_conn *conn);

/* tls.c */
int nbd_tls_load_credentials (struct nbd_client *c);
void nbd_tls_free_credentials (struct nbd_client *c);
int nbd_tls_handshake (struct nbd_conn *conn);

/* handshake.c: negotiate on conn->fd; fills conn->info. */
int nbd_handshake (struct nbd_conn *conn);

/* transmit.c: the reader loop and sending requests. */
int nbd_send_request (struct nbd_conn *conn, struct nbd_req *req);
int nbd_read_one (struct nbd_conn *conn, bool *fatal);
void nbd_send_disconnect (struct nbd_conn *conn);

/* request.c: the request table and waiting. */
void nbd_table_insert (struct nbd_conn *conn, struct nbd_req *req);
struct nbd_req *nbd_table_remove (struct nbd_conn *conn, uint64_t cookie);
struct nbd_req *nbd_table_find (struct nbd_conn *conn, uint64_t cookie);
void nbd_req_complete (struct nbd_conn *conn, struct nbd_req *req, int err,
                       const char *why);
int nbd_run (struct nbd_client *c, struct nbd_req *reqs, size_t n);
int nbd_run_probe (struct nbd_conn *conn);

/* connection.c */
int nbd_conn_new (struct nbd_client *c, unsigned index,
                  struct nbd_conn **out);
void nbd_conn_free (struct nbd_conn *conn);
int nbd_conn_connect (struct nbd_conn *conn, double handshake_timeout);
void nbd_conn_lost (struct nbd_conn *conn, bool fatal, const char *why);
void nbd_conn_wake (struct nbd_conn *conn);
void nbd_client_server_stopping (struct nbd_client *c,
                                 struct nbd_conn *from);
void *nbd_reader_thread (void *arg);

/* Time helpers. */
void nbd_deadline_after (struct timespec *ts, double seconds);
bool nbd_deadline_passed (const struct timespec *ts);

/* True once nbd_abort_waits ran (request.c). */
bool nbd_waits_aborted (void);

#endif
