/* diskshelf bt: the session's private state, shared by session.c
 * (pieces, waiters, peers list), announce.c (tracker thread), listen.c
 * (incoming connections) and peer.c (one thread per connection).
 *
 * Thread model: everything below marked "lock" is protected by
 * bt_session.lock.  Connection threads are detached; the session counts
 * them (live_conns) and close waits for the count to drop to zero.
 */
#ifndef DISKSHELF_BT_INTERNAL_H
#define DISKSHELF_BT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "bt.h"
#include "thread.h"
#include "tracker.h"

/* What the session knows about one piece (piece_state[]). */
enum piece_state
{
  PIECE_ABSENT = 0,
  PIECE_CLAIMED,       /* the store says it has it; not yet verified */
  PIECE_VERIFIED,      /* in the store and its SHA-1 matched */
};

/* A piece some reader is waiting for.  A connection that assembled it
 * hands the bytes over unverified (`raw`), and a reader waiting in
 * bt_read_piece checks the SHA-1 on its own thread: the connection
 * thread, one per peer and the serial part of a download, goes back to
 * the socket at once, and the hashing is spread over the readers.  No
 * byte of `raw` leaves the session before it passed. */
struct want
{
  struct want *next;
  uint32_t index;
  unsigned waiters;    /* readers blocked on it */
  double waited_since; /* when the first of them came (monotonic s) */
  unsigned assigned;   /* connections assembling it */
  double assigned_at;  /* when the first one started (monotonic s) */
  bool done;
  bool prefetch;       /* asked by bt_prefetch_piece, not yet read */
  bool verifying;      /* a reader is checking `raw` (taken out) */
  uint8_t *buf;        /* the verified bytes once done */
  uint8_t *raw;        /* assembled, not yet verified, or NULL */
  uint64_t raw_conn;   /* the connection that sent raw (bt_conn.serial) */
  ssize_t raw_peer;    /* its peers[] index, -1: incoming */
  pthread_cond_t cond; /* done, raw arrived, or stopping (its readers
                          only: no herd of every reader per piece) */
};

enum peer_state { PEER_IDLE, PEER_CONNECTED, PEER_BANNED, PEER_SELF };

/* A peer address learnt from a tracker or the settings. */
struct peer_entry
{
  struct bt_peer_addr addr;
  enum peer_state state;
  unsigned failures;
  double next_try;     /* monotonic seconds */
};

struct bt_conn;

/* A connection's place in the choking rule (seeding.c); owned by the
 * connection, its fields under the session lock. */
struct seeding_peer
{
  bool waiting;                  /* interested, choked, counted in
                                    choked_waiting and linked below */
  struct seeding_peer *next_waiting;
};

struct bt_session
{
  const struct bt_metainfo *mi;
  struct bt_settings set;        /* strings borrowed except name */
  char *name;
  struct bt_store_ops store;
  void *store_ctx;
  uint8_t peer_id[20];
  uint32_t key;

  pthread_mutex_t lock;
  pthread_cond_t cond;           /* conns gone, stopping (readers wait
                                    on their want's own cond) */
  pthread_condattr_t cond_attr;  /* CLOCK_MONOTONIC, for wants' conds */
  uint64_t conn_serial;          /* lock; the last bt_conn.serial */
  bool stopping;                 /* lock */
  atomic_bool cancel;            /* = stopping, read without the lock by
                                    a running announce */
  uint8_t *piece_state;          /* lock; enum piece_state per piece */
  uint32_t verified_count;       /* lock */
  uint32_t *have_log;            /* lock; pieces verified since open, in
                                    order, for HAVE messages */
  uint32_t have_log_len;         /* lock */
  uint8_t *announced;            /* lock; per piece: in have_log or a
                                    greeting's bitfield once already (a
                                    piece lost and fetched again is not
                                    logged twice: have_log stays within
                                    piece_count) */
  uint16_t *avail;               /* lock; per piece: connections to
                                    non-seeds unchoking us that have it */
  struct want *wants;            /* lock; newest first */
  unsigned prefetches;           /* lock; wants with prefetch set */
  struct peer_entry *peers;      /* lock */
  size_t peer_count, peer_cap;   /* lock */
  struct bt_conn *conns;         /* lock; every live connection */
  unsigned live_conns;           /* lock; threads not yet finished */
  unsigned outgoing_conns;       /* lock */
  struct bt_stats stats;         /* lock */
  double starved_at;             /* lock; when a read last timed out with
                                    no peer connected (monotonic s), 0:
                                    never; reads fail at once for a
                                    timeout after it while still no peer
                                    is connected (bt_read_piece) */

  pthread_t tracker_thread;
  bool tracker_started;
  char ***tiers;                 /* tracker thread only: own copy */
  size_t tier_count;

  unsigned unchoked;              /* lock; upload slots taken */
  unsigned choked_waiting;       /* lock; interested peers without one */
  struct seeding_peer *waiting;  /* lock; those peers */
  struct seeding_peer *optimistic; /* lock; unchoked optimistically, or
                                    NULL (one of the waiting) */
  double optimistic_at;          /* lock; when it was chosen */
  uint64_t choke_random;         /* lock; its random choice's state */
  double upload_next;            /* lock; when the rate limit lets the
                                    next byte out (monotonic seconds) */

  int listen_fd;
  uint16_t port;
  pthread_t listen_thread;
  bool listen_started;
};

/* session.c */
int session_piece_from_store (struct bt_session *s, uint32_t index,
                              uint8_t *buf);
void session_piece_verified (struct bt_session *s, uint32_t index,
                             const uint8_t *buf);
bool session_piece_assembled (struct bt_session *s, uint32_t index,
                              uint8_t *buf, uint64_t conn_serial,
                              ssize_t peer_index);
void session_announce_locked (struct bt_session *s, uint32_t index);
void session_avail_add_locked (struct bt_session *s, const uint8_t *map,
                               int delta);
bool session_verify (struct bt_session *s, uint32_t index,
                     const uint8_t *buf);
void session_add_peers (struct bt_session *s, const struct bt_peer_addr *a,
                        size_t n);
void session_maybe_connect_locked (struct bt_session *s);
void session_wake_conns_locked (struct bt_session *s);
int bt_parse_host_port (const char *text, struct bt_peer_addr *out);
void session_peer_addr_text (const struct bt_peer_addr *a, char *buf,
                             size_t len);

/* peer.c */
int conn_start_locked (struct bt_session *s, int fd, ssize_t peer_index);
void conn_wake (struct bt_conn *c);
void conn_shutdown (struct bt_conn *c);
bool conn_ban_locked (struct bt_session *s, uint64_t serial,
                      ssize_t peer_index);
struct bt_conn *conn_next (struct bt_conn *c);

/* seeding.c */
bool seeding_take_slot (struct bt_session *s, struct seeding_peer *p);
void seeding_stop_waiting (struct bt_session *s, struct seeding_peer *p);
struct seeding_peer *seeding_optimistic_step (struct bt_session *s,
                                              double now);
bool seeding_is_optimistic (struct bt_session *s,
                            const struct seeding_peer *p);
void seeding_release_slot (struct bt_session *s);
bool seeding_should_rotate (struct bt_session *s, double since);
void seeding_throttle (struct bt_session *s, uint32_t len);

/* announce.c */
int announce_start (struct bt_session *s);
void announce_stop (struct bt_session *s);

/* listen.c */
int listen_start (struct bt_session *s);
void listen_stop (struct bt_session *s);

#endif
