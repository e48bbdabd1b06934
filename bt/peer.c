/* diskshelf bt: one peer connection, in its own thread.
 *
 * Outgoing or incoming, a connection does the BEP 3 handshake (offering
 * the fast extension, BEP 6, and the extension protocol, BEP 10), sends
 * what we have (bitfield, have-all or have-none), says interested when
 * the peer has a piece a reader waits for, keeps up to `pipeline` 16 KiB
 * requests in flight over a few pieces at once, assembles each piece,
 * verifies its SHA-1 and only then hands it to the session.  A peer whose
 * piece fails the hash is banned.  When seeding it unchokes an
 * interested peer when it gets one of the session's upload slots
 * (seeding.c), serves blocks of verified pieces under the upload rate
 * limit, and chokes the peer again when it loses interest or has held
 * its slot for a while with others waiting.
 *
 * Thread model: the connection's fields are touched only by its thread,
 * except `next` and `fd` (set under the session lock; other threads wake
 * the connection through wake_fd and shut fd down when closing).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bencode.h"
#include "clock.h"
#include "error.h"
#include "internal.h"
#include "sockio.h"
#include "wire.h"

/* Pieces assembled at once per connection: enough to keep `pipeline`
 * blocks in flight when pieces are small (64 x 16 KiB pieces), at least
 * MIN_ASSEMBLIES, and never more bytes than the larger of the two
 * (assemblies_for). */
#define MIN_ASSEMBLIES 8
#define MAX_ASSEMBLIES 64
#define DEAD_AFTER 150.0        /* nothing received at all, seconds */
#define KEEPALIVE_AFTER 90.0
#define IO_TIMEOUT 30.0
#define RECV_BUFFER (256 * 1024)  /* first receive buffer, bytes */
#define RECV_MIN_ROOM (64 * 1024) /* grown below this much room */
/* End game: another connection joins a piece a reader is blocked on
 * each time this long (seconds) has passed since the piece was first
 * taken (the second after 1 s, the third after 2 s, ...), up to
 * ENDGAME_COPIES connections: sooner, the copies usually all arrive and
 * all but one are thrown away; with only two, two peers that stall
 * (they claim the piece, then send nothing) held the reader until the
 * entry's timeout although a seed had it. */
#define ENDGAME_AFTER 1.0
#define ENDGAME_COPIES 4
/* A seed is not asked for a piece another unchoking peer has until a
 * reader has waited this long for it: the origin's upload goes to what
 * only it has, also when readers are blocked (a fleet reading in step). */
#define SEED_SPARED_SECONDS 0.5
/* A peer that has sent no block for STALL_AFTER seconds while requests
 * are in flight is stalled: the pieces it has not started go back to
 * the pool (cancelled), and it is asked for nothing new for
 * STALL_PAUSE seconds or until a block does arrive.  Before, it kept
 * up to a pipeline's worth of pieces (read-ahead included) until the
 * connection's own timeout, and every reader that reached one waited
 * for the end game. */
#define STALL_AFTER 5.0
#define STALL_PAUSE 30.0
/* A peer's rejects (BEP 6) are remembered this long (seconds) after the
 * first of them, then forgotten: a reject says "not now" (the peer
 * choked, or its store was still taking the piece in), and a piece
 * refused for good by the one peer that unchokes us held its reader
 * until the entry's timeout. */
#define REFUSED_FORGET 5.0

enum block_state { BLOCK_NONE, BLOCK_REQUESTED, BLOCK_GOT };

/* A request to send: piece, offset, length. */
struct req
{
  uint32_t index, begin, length;
};

/* A piece being put together from blocks. */
struct assembly
{
  uint32_t index;
  uint32_t size;
  uint32_t nblocks;
  uint32_t received;
  uint8_t *buf;
  uint8_t *block;               /* enum block_state per block */
};

struct bt_conn
{
  struct bt_conn *next;         /* session lock */
  struct bt_session *s;
  int fd;
  int wake_fd;
  ssize_t peer_index;           /* -1: incoming */
  uint64_t serial;              /* unique in the session (fixed) */
  bool ban_by_reader;           /* session lock; a reader found a piece
                                   it sent bad (conn_ban_locked) */
  char addr[80];
  bool fast, ext;
  bool counted;                 /* in stats.peers_connected */
  bool ban;                     /* set on a hash failure */
  bool self;                    /* we connected to ourselves */
  bool got_piece;
  uint8_t *peer_has;
  uint32_t peer_has_count;      /* bits set in peer_has */
  bool in_avail;                /* peer_has counted in the session's
                                   avail[] (a non-seed unchoking us) */
  uint64_t pick_random;         /* tie-breaks between equal pieces */
  bool peer_choking, peer_interested, am_choking, am_interested;
  uint32_t have_sent;           /* position in the session's have_log */
  struct assembly as[MAX_ASSEMBLIES];
  unsigned nas;
  unsigned outstanding;         /* requests sent, block not yet here */
  struct req cancels[64];       /* requests of dropped pieces, to cancel */
  unsigned ncancels;
  uint8_t *refused;             /* pieces this peer rejected */
  double refused_since;         /* first reject still in refused, or 0 */
  uint8_t *rbuf;
  size_t rlen, rcap;
  uint8_t *serve_buf;
  int64_t serve_index;
  bool has_slot;                /* holds a regular upload slot */
  struct seeding_peer seat;     /* waiting for one; the optimistic
                                   unchoke picks among those */
  double unchoked_at;
  double rotated_at;            /* when it last gave its slot up for
                                   others: it waits a little then */
  double last_recv, last_send, last_block;
  double stalled_at;            /* 0, or when it was found stalled */
};

/* How many pieces one connection assembles at once: as many as fill
 * the pipeline (peers such as transmission answer a batch of requests
 * per bandwidth period, so a pipeline cut short by the piece count
 * caps the rate: 8 pieces of 64 KiB were 1 MiB/s), at least
 * MIN_ASSEMBLIES; the memory held is at most the larger of `pipeline`
 * blocks and MIN_ASSEMBLIES pieces. */
static unsigned
assemblies_for (const struct bt_session *s)
{
  uint64_t want = ((uint64_t) s->set.pipeline * BT_BLOCK_SIZE
                   + s->mi->piece_length - 1) / s->mi->piece_length;
  return want < MIN_ASSEMBLIES ? MIN_ASSEMBLIES
         : want > MAX_ASSEMBLIES ? MAX_ASSEMBLIES : (unsigned) want;
}

/* Test bit i of a piece bitmap (BEP 3 order: high bit first). */
static bool
bit_get (const uint8_t *map, uint32_t i)
{
  return map[i / 8] & (0x80 >> (i % 8));
}

/* Set bit i of a piece bitmap. */
static void
bit_set (uint8_t *map, uint32_t i)
{
  map[i / 8] |= 0x80 >> (i % 8);
}

/* The next connection in the session's list (session lock held). */
struct bt_conn *
conn_next (struct bt_conn *c)
{
  return c->next;
}

/* Wake the connection's thread. */
void
conn_wake (struct bt_conn *c)
{
  uint64_t one = 1;
  if (write (c->wake_fd, &one, sizeof one) < 0)
    {
      /* the counter is full: the thread is awake anyway */
    }
}

/* Ban the connection with this serial, and any other to the same peer
 * entry (peer_index >= 0): a reader found a piece it sent bad.  False
 * when none is there any more (session lock held). */
bool
conn_ban_locked (struct bt_session *s, uint64_t serial, ssize_t peer_index)
{
  bool found = false;
  for (struct bt_conn *c = s->conns; c != NULL; c = c->next)
    if (c->serial == serial || (peer_index >= 0
                                && c->peer_index == peer_index))
      {
        c->ban_by_reader = true;
        conn_shutdown (c);
        found = true;
      }
  return found;
}

/* Make the connection's blocking calls return (session closing). */
void
conn_shutdown (struct bt_conn *c)
{
  if (c->fd >= 0)
    shutdown (c->fd, SHUT_RDWR);
  conn_wake (c);
}

/* Send all of buf; a send stuck for IO_TIMEOUT fails. */
static int
send_all (struct bt_conn *c, const void *buf, size_t len)
{
  int r = bt_send_all (c->fd, buf, len, INFINITY, IO_TIMEOUT);
  if (r == 0)
    c->last_send = clock_seconds ();
  return r;
}

/* Send one message without variable payload. */
static int
send_simple (struct bt_conn *c, int id, uint32_t index, uint32_t begin,
             uint32_t length)
{
  struct bt_msg m = { .id = id, .index = index, .begin = begin,
                      .length = length };
  uint8_t out[17];
  return send_all (c, out, bt_wire_put_simple (out, &m));
}

/* Connect to the peer's address within connect_timeout. */
static int
connect_peer (struct bt_conn *c, const struct bt_peer_addr *a)
{
  int fd = socket (a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK
                   | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return error_set (errno, "socket: %s", strerror (errno));
  /* conn_shutdown reads fd under the session lock. */
  pthread_mutex_lock (&c->s->lock);
  c->fd = fd;
  bool stopping = c->s->stopping;
  pthread_mutex_unlock (&c->s->lock);
  if (stopping)
    return error_set (ECANCELED, "session closing");
  return bt_connect_within (c->fd, (const struct sockaddr *) &a->addr,
                            a->addr_len, c->s->set.connect_timeout);
}

/* Send our handshake. */
static int
send_handshake (struct bt_conn *c)
{
  struct bt_handshake hs = { { 0 } };
  hs.reserved[BT_RESERVED_FAST_BYTE] |= BT_RESERVED_FAST_BIT;
  hs.reserved[BT_RESERVED_EXT_BYTE] |= BT_RESERVED_EXT_BIT;
  memcpy (hs.info_hash, c->s->mi->info_hash, 20);
  memcpy (hs.peer_id, c->s->peer_id, 20);
  uint8_t out[BT_HANDSHAKE_LEN];
  bt_wire_put_handshake (out, &hs);
  return send_all (c, out, sizeof out);
}

/* Receive and check the peer's handshake. */
static int
recv_handshake (struct bt_conn *c, double deadline)
{
  uint8_t in[BT_HANDSHAKE_LEN];
  int r = bt_recv_exact (c->fd, in, sizeof in, deadline, 0);
  if (r < 0)
    return error_prefix (-r, "handshake");
  struct bt_handshake hs;
  r = bt_wire_parse_handshake (in, sizeof in, &hs);
  if (r < 0)
    return r;
  if (memcmp (hs.info_hash, c->s->mi->info_hash, 20) != 0)
    return error_set (EPROTO, "handshake for another torrent");
  if (memcmp (hs.peer_id, c->s->peer_id, 20) == 0)
    {
      c->self = true;
      return error_set (ECONNREFUSED, "connected to ourselves");
    }
  c->fast = hs.reserved[BT_RESERVED_FAST_BYTE] & BT_RESERVED_FAST_BIT;
  c->ext = hs.reserved[BT_RESERVED_EXT_BYTE] & BT_RESERVED_EXT_BIT;
  return 0;
}

/* Tell the peer what we have, and our extension handshake. */
static int
send_greeting (struct bt_conn *c)
{
  struct bt_session *s = c->s;
  uint32_t count = s->mi->piece_count;
  size_t bytes = ((size_t) count + 7) / 8;
  uint8_t *msg = calloc (5 + bytes, 1);
  if (msg == NULL)
    return error_set (ENOMEM, "out of memory");
  uint32_t have = 0;
  pthread_mutex_lock (&s->lock);
  for (uint32_t i = 0; i < count; i++)
    if (s->piece_state[i] != PIECE_ABSENT)
      {
        bit_set (msg + 5, i);
        have++;
      }
  c->have_sent = s->have_log_len;
  pthread_mutex_unlock (&s->lock);
  int r = 0;
  if (!s->set.listen)
    have = 0;                   /* not seeding: we serve nothing */
  if (c->fast && have == count)
    r = send_simple (c, BT_MSG_HAVE_ALL, 0, 0, 0);
  else if (c->fast && have == 0)
    r = send_simple (c, BT_MSG_HAVE_NONE, 0, 0, 0);
  else if (have > 0)
    {
      bt_wire_put_header (msg, BT_MSG_BITFIELD, bytes);
      r = send_all (c, msg, 5 + bytes);
    }
  free (msg);
  if (r == 0 && c->ext)
    {
      char ext[96];
      int n = s->port
              ? snprintf (ext + 6, sizeof ext - 6, "d1:mde1:pi%ue4:reqqi%ue"
                          "1:v13:diskshelf 0.1e", s->port, 250u)
              : snprintf (ext + 6, sizeof ext - 6, "d1:mde4:reqqi%ue"
                          "1:v13:diskshelf 0.1e", 250u);
      bt_wire_put_header ((uint8_t *) ext, BT_MSG_EXTENDED, n + 1);
      ext[5] = 0;               /* extension handshake */
      r = send_all (c, ext, 6 + n);
    }
  return r;
}

/* Forget an assembly, returning its piece to the pool (lock held). */
static void
drop_assembly_locked (struct bt_conn *c, unsigned k)
{
  struct bt_session *s = c->s;
  struct assembly *a = &c->as[k];
  for (uint32_t b = 0; b < a->nblocks; b++)
    if (a->block[b] == BLOCK_REQUESTED)
      {
        c->outstanding--;
        /* BEP 3 cancel: the peer need not send what nobody reads. */
        if (c->ncancels < sizeof c->cancels / sizeof c->cancels[0])
          c->cancels[c->ncancels++] = (struct req) {
            a->index, b * BT_BLOCK_SIZE,
            b + 1 == a->nblocks ? a->size - b * BT_BLOCK_SIZE
                                : BT_BLOCK_SIZE };
      }
  if (a->received < a->nblocks)
    s->stats.bytes_discarded += (uint64_t) a->received * BT_BLOCK_SIZE;
  for (struct want *w = s->wants; w != NULL; w = w->next)
    if (w->index == a->index && w->assigned > 0)
      w->assigned--;
  free (a->buf);
  free (a->block);
  c->as[k] = c->as[--c->nas];
}

/* Count the peer's pieces in the session's availability while it is a
 * non-seed that unchokes us, or stop counting them (lock held). */
static void
avail_track_locked (struct bt_conn *c)
{
  bool want = !c->peer_choking && c->peer_has_count < c->s->mi->piece_count;
  if (want != c->in_avail)
    {
      session_avail_add_locked (c->s, c->peer_has, want ? 1 : -1);
      c->in_avail = want;
    }
}

/* The peer's bitfield changes wholesale (bitfield, have-all, have-none):
 * uncount it, let set() change it, count it again. */
static void
avail_replace (struct bt_conn *c, void (*set) (struct bt_conn *, const void *),
               const void *arg)
{
  pthread_mutex_lock (&c->s->lock);
  if (c->in_avail)
    {
      session_avail_add_locked (c->s, c->peer_has, -1);
      c->in_avail = false;
    }
  set (c, arg);
  c->peer_has_count = 0;
  for (uint32_t i = 0; i < c->s->mi->piece_count; i++)
    c->peer_has_count += bit_get (c->peer_has, i);
  avail_track_locked (c);
  pthread_mutex_unlock (&c->s->lock);
}

static void
set_all (struct bt_conn *c, const void *arg)
{
  (void) arg;
  for (uint32_t i = 0; i < c->s->mi->piece_count; i++)
    bit_set (c->peer_has, i);
}

static void
set_none (struct bt_conn *c, const void *arg)
{
  (void) arg;
  memset (c->peer_has, 0, ((size_t) c->s->mi->piece_count + 7) / 8);
}

static void
set_bitfield (struct bt_conn *c, const void *arg)
{
  const struct bt_msg *m = arg;
  memcpy (c->peer_has, m->data, m->data_len);
}

/* A HAVE: one more piece, counted at once for the other connections. */
static void
avail_have (struct bt_conn *c, uint32_t index)
{
  if (bit_get (c->peer_has, index))
    return;
  pthread_mutex_lock (&c->s->lock);
  bit_set (c->peer_has, index);
  c->peer_has_count++;
  if (c->in_avail)
    c->s->avail[index]++;
  avail_track_locked (c);       /* it may have become a seed */
  pthread_mutex_unlock (&c->s->lock);
}

/* A random number for tie-breaks (xorshift; fairness only). */
static uint64_t
pick_next_random (struct bt_conn *c)
{
  uint64_t x = c->pick_random ? c->pick_random : 0x2545f4914f6cdd1du;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return c->pick_random = x;
}

/* Start assembling a piece a reader waits for and the peer has, if any
 * (lock held).  Returns true if one was started.
 *
 * The order: pieces nobody fetches yet first; then pieces a reader is
 * blocked on; from a seed, pieces no other unchoking peer has first
 * (rarest first among the wanted: the origin's upload goes to what only
 * it can give, the rest comes from the other peers); ties at random, so
 * peers reading the same window do not all ask for the same piece.  A
 * seed is not asked for read-ahead another unchoking peer has, nor, for
 * the first SEED_SPARED_SECONDS, for a piece a reader waits on that such
 * a peer has.  A
 * further connection (a seed too: the peer that has it may be slow)
 * takes a piece only for a blocked reader, one more each ENDGAME_AFTER
 * (the end game). */
static bool
pick_piece_locked (struct bt_conn *c)
{
  struct bt_session *s = c->s;
  bool seed = c->peer_has_count == s->mi->piece_count;
  struct want *best = NULL;
  double now = clock_seconds ();
  uint64_t best_rank = 0;
  unsigned ties = 0;
  for (struct want *w = s->wants; w != NULL; w = w->next)
    {
      if (w->done || w->raw != NULL || w->verifying
          || !bit_get (c->peer_has, w->index)
          || bit_get (c->refused, w->index)
          || s->piece_state[w->index] == PIECE_VERIFIED)
        continue;
      bool mine = false;
      for (unsigned k = 0; k < c->nas && !mine; k++)
        mine = c->as[k].index == w->index;
      if (mine || w->assigned >= ENDGAME_COPIES
          || (seed && s->avail[w->index] > 0
              && (w->waiters == 0
                  || now - w->waited_since < SEED_SPARED_SECONDS))
          || (w->assigned > 0
              && (w->waiters == 0
                  || now - w->assigned_at < ENDGAME_AFTER * w->assigned)))
        continue;
      /* lower is better */
      uint64_t rank = ((uint64_t) w->assigned << 32)
                      | ((uint64_t) (w->waiters == 0) << 31)
                      | (seed ? s->avail[w->index] : 0);
      if (best == NULL || rank < best_rank)
        {
          best = w;
          best_rank = rank;
          ties = 1;
        }
      else if (rank == best_rank && pick_next_random (c) % ++ties == 0)
        best = w;
    }
  if (best == NULL)
    return false;
  struct assembly *a = &c->as[c->nas];
  a->index = best->index;
  a->size = bt_metainfo_piece_size (s->mi, best->index);
  a->nblocks = (a->size + BT_BLOCK_SIZE - 1) / BT_BLOCK_SIZE;
  a->received = 0;
  a->buf = malloc (a->size);
  a->block = calloc (a->nblocks, 1);
  if (a->buf == NULL || a->block == NULL)
    {
      free (a->buf);
      free (a->block);
      return false;
    }
  if (best->assigned++ == 0)
    best->assigned_at = now;
  c->nas++;
  return true;
}

/* Decide interest, drop finished pieces and choose requests to send
 * (lock held).  Returns how many requests were put in reqs. */
static unsigned
plan_locked (struct bt_conn *c, struct req *reqs, unsigned max,
             bool *interested)
{
  struct bt_session *s = c->s;
  double now = clock_seconds ();
  if (c->refused_since != 0 && now - c->refused_since > REFUSED_FORGET)
    {
      memset (c->refused, 0, (s->mi->piece_count + 7) / 8);
      c->refused_since = 0;
    }
  for (unsigned k = 0; k < c->nas;)
    if (s->piece_state[c->as[k].index] == PIECE_VERIFIED)
      drop_assembly_locked (c, k);
    else
      {
        bool wanted = false;
        for (struct want *w = s->wants; w != NULL && !wanted; w = w->next)
          wanted = w->index == c->as[k].index && !w->done
                   && w->raw == NULL && !w->verifying;
        /* Keep a piece nobody waits for any more only if it is well
         * under way: it will be stored and served. */
        if (!wanted && c->as[k].received == 0)
          drop_assembly_locked (c, k);
        else
          k++;
      }
  /* Interested while the peer has any piece we lack: an on-demand
   * reader may want any of them next, and a peer that sees us lose
   * interest chokes us, so the next read would wait for its next
   * unchoke round (10 s for aria2). */
  *interested = c->nas > 0;
  for (uint32_t i = 0; i < s->mi->piece_count && !*interested; i++)
    *interested = s->piece_state[i] != PIECE_VERIFIED
                  && bit_get (c->peer_has, i) && !bit_get (c->refused, i);
  unsigned n = 0;
  if (c->peer_choking)
    return 0;
  if (c->outstanding > 0 && now - c->last_block > STALL_AFTER
      && c->stalled_at == 0)
    {
      c->stalled_at = now;
      for (unsigned k = 0; k < c->nas;)
        if (c->as[k].received == 0)
          drop_assembly_locked (c, k);
        else
          k++;
    }
  if (c->stalled_at != 0 && now - c->stalled_at < STALL_PAUSE)
    return 0;
  c->stalled_at = 0;
  while (c->outstanding < s->set.pipeline && n < max)
    {
      struct assembly *a = NULL;
      uint32_t b = 0;
      for (unsigned k = 0; k < c->nas && a == NULL; k++)
        for (b = 0; b < c->as[k].nblocks; b++)
          if (c->as[k].block[b] == BLOCK_NONE)
            {
              a = &c->as[k];
              break;
            }
      if (a == NULL)
        {
          if (c->nas >= assemblies_for (s) || !pick_piece_locked (c))
            break;
          continue;
        }
      a->block[b] = BLOCK_REQUESTED;
      c->outstanding++;
      reqs[n].index = a->index;
      reqs[n].begin = b * BT_BLOCK_SIZE;
      reqs[n].length = (b + 1 == a->nblocks)
                       ? a->size - b * BT_BLOCK_SIZE : BT_BLOCK_SIZE;
      n++;
    }
  return n;
}

static int update_choke (struct bt_conn *c);

/* Bring the peer up to date: haves, interest, requests. */
static int
update (struct bt_conn *c)
{
  struct bt_session *s = c->s;
  uint32_t haves[256];
  unsigned nhaves = 0;
  struct req reqs[64];
  bool interested;
  pthread_mutex_lock (&s->lock);
  while (c->have_sent < s->have_log_len && nhaves < 256)
    haves[nhaves++] = s->have_log[c->have_sent++];
  unsigned nreq = plan_locked (c, reqs, 64, &interested);
  pthread_mutex_unlock (&s->lock);
  /* Every message of this round goes out in one send (at most 64
   * cancels, then the choke from update_choke, then 256 haves, the
   * interest and 64 requests): one syscall here and one wakeup at the
   * peer instead of one per 17-byte message. */
  uint8_t out[(64 + 256 + 1 + 64) * 17];
  size_t len = 0;
  int r = 0;
  for (unsigned i = 0; i < c->ncancels && !c->peer_choking; i++)
    len += bt_wire_put_simple (out + len, &(struct bt_msg) {
                                 .id = BT_MSG_CANCEL,
                                 .index = c->cancels[i].index,
                                 .begin = c->cancels[i].begin,
                                 .length = c->cancels[i].length });
  c->ncancels = 0;
  if (len > 0)
    r = send_all (c, out, len);
  len = 0;
  if (r == 0)
    r = update_choke (c);
  for (unsigned i = 0; i < nhaves && s->set.listen; i++)
    len += bt_wire_put_simple (out + len, &(struct bt_msg) {
                                 .id = BT_MSG_HAVE, .index = haves[i] });
  if (interested != c->am_interested)
    {
      c->am_interested = interested;
      len += bt_wire_put_simple (out + len, &(struct bt_msg) {
                                   .id = interested ? BT_MSG_INTERESTED
                                   : BT_MSG_NOT_INTERESTED });
    }
  if (nreq > 0 && c->outstanding == nreq)
    c->last_block = clock_seconds ();   /* the clock starts now */
  for (unsigned i = 0; i < nreq; i++)
    len += bt_wire_put_simple (out + len, &(struct bt_msg) {
                                 .id = BT_MSG_REQUEST,
                                 .index = reqs[i].index,
                                 .begin = reqs[i].begin,
                                 .length = reqs[i].length });
  if (r == 0 && len > 0)
    r = send_all (c, out, len);
  return r;
}

/* A block arrived: store it, and verify the piece when complete. */
static int
on_piece (struct bt_conn *c, const struct bt_msg *m)
{
  struct bt_session *s = c->s;
  struct assembly *a = NULL;
  unsigned k;
  for (k = 0; k < c->nas && a == NULL; k++)
    if (c->as[k].index == m->index)
      a = &c->as[k];
  k--;
  uint32_t b = m->begin / BT_BLOCK_SIZE;
  /* Blocks of pieces we are not assembling are ignored; a block asked
   * for before a choke is taken (the SHA-1 decides about it anyway). */
  if (a == NULL || m->begin % BT_BLOCK_SIZE != 0 || b >= a->nblocks
      || a->block[b] == BLOCK_GOT
      || m->data_len != ((b + 1 == a->nblocks)
                         ? a->size - b * BT_BLOCK_SIZE : BT_BLOCK_SIZE))
    {
      pthread_mutex_lock (&s->lock);
      s->stats.bytes_discarded += m->data_len;
      pthread_mutex_unlock (&s->lock);
      return 0;
    }
  memcpy (a->buf + m->begin, m->data, m->data_len);
  if (a->block[b] == BLOCK_REQUESTED)
    c->outstanding--;
  a->block[b] = BLOCK_GOT;
  a->received++;
  c->last_block = clock_seconds ();
  c->stalled_at = 0;
  pthread_mutex_lock (&s->lock);
  s->stats.bytes_down += m->data_len;
  pthread_mutex_unlock (&s->lock);
  if (a->received < a->nblocks)
    return 0;
  /* A reader waits for it: it checks the SHA-1 on its own thread. */
  if (session_piece_assembled (s, a->index, a->buf, c->serial,
                               c->peer_index))
    {
      a->buf = NULL;
      c->got_piece = true;
      pthread_mutex_lock (&s->lock);
      drop_assembly_locked (c, k);
      pthread_mutex_unlock (&s->lock);
      return 0;
    }
  bool good = session_verify (s, a->index, a->buf);
  uint32_t index = a->index;
  if (good)
    {
      c->got_piece = true;
      session_piece_verified (s, index, a->buf);
    }
  pthread_mutex_lock (&s->lock);
  drop_assembly_locked (c, k);
  if (!good)
    s->stats.hash_failures++;
  pthread_mutex_unlock (&s->lock);
  if (!good)
    {
      c->ban = true;
      log_warning ("bt: %s: peer %s sent piece %u that fails its SHA-1; "
                   "banning it", s->name, c->addr, index);
      return error_set (EPROTO, "piece %u failed its SHA-1", index);
    }
  return 0;
}

/* The peer rejected a request (BEP 6) or choked without fast: the block
 * goes back to the pool. */
static void
unrequest (struct bt_conn *c, uint32_t index, uint32_t begin)
{
  for (unsigned k = 0; k < c->nas; k++)
    {
      struct assembly *a = &c->as[k];
      uint32_t b = begin / BT_BLOCK_SIZE;
      if (a->index != index || begin % BT_BLOCK_SIZE != 0 || b >= a->nblocks
          || a->block[b] != BLOCK_REQUESTED)
        continue;
      a->block[b] = BLOCK_NONE;
      c->outstanding--;
      bit_set (c->refused, index);
      if (c->refused_since == 0)
        c->refused_since = clock_seconds ();
      pthread_mutex_lock (&c->s->lock);
      drop_assembly_locked (c, k);
      pthread_mutex_unlock (&c->s->lock);
      return;
    }
}

/* Choke or unchoke the peer after its interest or the slots changed
 * (the rule is seeding.c's): an interested peer gets a regular slot when
 * one is free, else waits for one and may be the optimistic unchoke; a
 * peer that lost interest, or held its slot long while others wait,
 * gives the slot back. */
static int
update_choke (struct bt_conn *c)
{
  struct bt_session *s = c->s;
  if (!s->set.listen)
    return 0;
  double now = clock_seconds ();
  if (c->has_slot && (!c->peer_interested
                      || seeding_should_rotate (s, c->unchoked_at)))
    {
      c->has_slot = false;
      if (c->peer_interested)
        c->rotated_at = now;
      seeding_release_slot (s);
    }
  if (!c->peer_interested)
    seeding_stop_waiting (s, &c->seat);
  else if (!c->has_slot && !(c->rotated_at > 0 && now - c->rotated_at < 5.0)
           && seeding_take_slot (s, &c->seat))
    {
      c->has_slot = true;
      c->unchoked_at = now;
    }
  seeding_optimistic_step (s, now);
  bool unchoke = c->has_slot || (c->peer_interested
                                 && seeding_is_optimistic (s, &c->seat));
  if (unchoke == !c->am_choking)
    return 0;
  c->am_choking = !unchoke;
  return send_simple (c, unchoke ? BT_MSG_UNCHOKE : BT_MSG_CHOKE, 0, 0, 0);
}

/* Serve a block of a verified piece. */
static int
on_request (struct bt_conn *c, const struct bt_msg *m)
{
  struct bt_session *s = c->s;
  uint32_t size = bt_metainfo_piece_size (s->mi, m->index);
  if (m->begin > size || m->length > size - m->begin)
    return error_set (EPROTO, "request past the end of piece %u", m->index);
  if (c->am_choking || !s->set.listen)
    return c->fast ? send_simple (c, BT_MSG_REJECT, m->index, m->begin,
                                  m->length) : 0;
  if (c->serve_index != m->index)
    {
      if (c->serve_buf == NULL
          && (c->serve_buf = malloc (s->mi->piece_length)) == NULL)
        return error_set (ENOMEM, "out of memory");
      c->serve_index = -1;
      if (session_piece_from_store (s, m->index, c->serve_buf) < 0)
        return c->fast ? send_simple (c, BT_MSG_REJECT, m->index, m->begin,
                                      m->length) : 0;
      c->serve_index = m->index;
    }
  seeding_throttle (s, m->length);
  uint8_t *out = malloc (13 + m->length);
  if (out == NULL)
    return error_set (ENOMEM, "out of memory");
  bt_wire_put_piece_header (out, m->index, m->begin, m->length);
  memcpy (out + 13, c->serve_buf + m->begin, m->length);
  int r = send_all (c, out, 13 + m->length);
  free (out);
  if (r == 0)
    {
      pthread_mutex_lock (&s->lock);
      s->stats.bytes_up += m->length;
      pthread_mutex_unlock (&s->lock);
    }
  return r;
}

/* Act on one message from the peer. */
static int
handle (struct bt_conn *c, const struct bt_msg *m)
{
  switch (m->id)
    {
    case BT_MSG_KEEPALIVE: case BT_MSG_CANCEL: case BT_MSG_PORT:
    case BT_MSG_SUGGEST: case BT_MSG_ALLOWED_FAST:
      return 0;
    case BT_MSG_CHOKE:
      /* BEP 3: pending requests are dropped.  With the fast extension
       * the peer should reject each one instead (BEP 6), but not every
       * peer does, so ask again after the unchoke either way; a block
       * that still arrives is taken if it is requested again by then. */
      pthread_mutex_lock (&c->s->lock);
      c->peer_choking = true;
      avail_track_locked (c);
      pthread_mutex_unlock (&c->s->lock);
      for (unsigned k = 0; k < c->nas; k++)
        for (uint32_t b = 0; b < c->as[k].nblocks; b++)
          if (c->as[k].block[b] == BLOCK_REQUESTED)
            {
              c->as[k].block[b] = BLOCK_NONE;
              c->outstanding--;
            }
      return 0;
    case BT_MSG_UNCHOKE:
      pthread_mutex_lock (&c->s->lock);
      c->peer_choking = false;
      avail_track_locked (c);
      pthread_mutex_unlock (&c->s->lock);
      return 0;
    case BT_MSG_INTERESTED:
      c->peer_interested = true;
      return update_choke (c);
    case BT_MSG_NOT_INTERESTED:
      c->peer_interested = false;
      return update_choke (c);
    case BT_MSG_HAVE:
      avail_have (c, m->index);
      return 0;
    case BT_MSG_HAVE_ALL:
      avail_replace (c, set_all, NULL);
      return 0;
    case BT_MSG_HAVE_NONE:
      avail_replace (c, set_none, NULL);
      return 0;
    case BT_MSG_BITFIELD:
      avail_replace (c, set_bitfield, m);
      return 0;
    case BT_MSG_REQUEST:
      return on_request (c, m);
    case BT_MSG_PIECE:
      return on_piece (c, m);
    case BT_MSG_REJECT:
      unrequest (c, m->index, m->begin);
      return 0;
    case BT_MSG_EXTENDED:
      if (m->ext_id == 0)
        {
          /* The extension handshake must be bencoded; we use nothing in
           * it yet, so only check it. */
          struct bt_bdoc *doc;
          struct bt_bnode *root;
          if (bt_bencode_parse (m->data, m->data_len, &doc, &root) < 0)
            return error_prefix (EPROTO, "extension handshake");
          bt_bdoc_free (doc);
        }
      return 0;
    default:
      return 0;
    }
}

/* How many of the messages after a request on_readable looks through
 * for its cancel. */
#define CANCEL_LOOKAHEAD 256

/* True when a CANCEL of request m is among the next whole messages of
 * buf (the peer took it back before we served it: BEP 3). */
static bool
cancelled_later (const uint8_t *buf, size_t len,
                 const struct bt_wire_limits *lim, const struct bt_msg *m)
{
  size_t off = 0;
  for (unsigned i = 0; i < CANCEL_LOOKAHEAD; i++)
    {
      struct bt_msg next;
      size_t used = 0;
      if (bt_wire_parse (buf + off, len - off, lim, &next, &used) <= 0)
        return false;
      if (next.id == BT_MSG_CANCEL && next.index == m->index
          && next.begin == m->begin && next.length == m->length)
        return true;
      off += used;
    }
  return false;
}

/* Read what the socket has and handle every whole message; a request
 * cancelled further on in what was read is not served. */
static int
on_readable (struct bt_conn *c)
{
  /* Room for many blocks per recv: a fast peer fills 64 KiB between two
   * polls, and every round trip through poll, recv and update costs a
   * few syscalls and the session lock. */
  if (c->rcap - c->rlen < RECV_MIN_ROOM)
    {
      size_t cap = c->rcap ? c->rcap * 2 : RECV_BUFFER;
      uint8_t *p = realloc (c->rbuf, cap);
      if (p == NULL)
        return error_set (ENOMEM, "out of memory");
      c->rbuf = p;
      c->rcap = cap;
    }
  ssize_t n = recv (c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return 0;
  if (n < 0)
    return error_set (errno, "recv: %s", strerror (errno));
  if (n == 0)
    return error_set (ECONNRESET, "connection closed by the peer");
  c->rlen += n;
  c->last_recv = clock_seconds ();
  struct bt_wire_limits lim = { .piece_count = c->s->mi->piece_count,
                                .fast = c->fast };
  size_t off = 0;
  int r = 0;
  for (;;)
    {
      struct bt_msg m;
      size_t used = 0;
      r = bt_wire_parse (c->rbuf + off, c->rlen - off, &lim, &m, &used);
      if (r <= 0)
        {
          /* Make room for a long message (bounded by the parser). */
          if (r == 0 && used > c->rcap)
            {
              uint8_t *p = realloc (c->rbuf, used);
              if (p == NULL)
                return error_set (ENOMEM, "out of memory");
              c->rbuf = p;
              c->rcap = used;
            }
          break;
        }
      if (m.id == BT_MSG_REQUEST
          && cancelled_later (c->rbuf + off + used, c->rlen - off - used,
                              &lim, &m))
        {
          pthread_mutex_lock (&c->s->lock);
          c->s->stats.requests_cancelled++;
          pthread_mutex_unlock (&c->s->lock);
        }
      else if ((r = handle (c, &m)) < 0)
        return r;
      off += used;
    }
  if (r < 0)
    return r;
  memmove (c->rbuf, c->rbuf + off, c->rlen - off);
  c->rlen -= off;
  return 0;
}

/* The message loop, until an error, a dead peer or the session stops. */
static int
run (struct bt_conn *c)
{
  struct bt_session *s = c->s;
  double snub = s->set.connect_timeout * 2;
  for (;;)
    {
      pthread_mutex_lock (&s->lock);
      bool stopping = s->stopping;
      pthread_mutex_unlock (&s->lock);
      if (stopping)
        return 0;
      int r = update (c);
      if (r < 0)
        return r;
      double now = clock_seconds ();
      if (c->outstanding > 0 && now - c->last_block > snub)
        return error_set (ETIMEDOUT, "no block for %.0f s with %u requests "
                          "in flight", snub, c->outstanding);
      if (now - c->last_recv > DEAD_AFTER)
        return error_set (ETIMEDOUT, "silent for %.0f s", DEAD_AFTER);
      if (now - c->last_send > KEEPALIVE_AFTER
          && (r = send_simple (c, BT_MSG_KEEPALIVE, 0, 0, 0)) < 0)
        return r;
      struct pollfd pfd[2] = { { .fd = c->fd, .events = POLLIN },
                               { .fd = c->wake_fd, .events = POLLIN } };
      int n = poll (pfd, 2, 1000);
      if (n < 0 && errno != EINTR)
        return error_set (errno, "poll: %s", strerror (errno));
      if (n <= 0)
        continue;
      if (pfd[1].revents)
        {
          uint64_t v;
          if (read (c->wake_fd, &v, sizeof v) < 0)
            {
              /* nothing to drain */
            }
        }
      if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
        {
          r = on_readable (c);
          if (r < 0)
            return r;
        }
    }
}

/* Remove the connection from the session and free it. */
static void
conn_finish (struct bt_conn *c, int result)
{
  struct bt_session *s = c->s;
  seeding_stop_waiting (s, &c->seat);
  if (c->has_slot)
    seeding_release_slot (s);
  pthread_mutex_lock (&s->lock);
  if (result < 0 && !s->stopping)
    log_debug ("bt: %s: peer %s: %s", s->name, c->addr, error_message ());
  while (c->nas > 0)
    drop_assembly_locked (c, c->nas - 1);
  if (c->in_avail)
    session_avail_add_locked (s, c->peer_has, -1);
  for (struct bt_conn **pp = &s->conns; *pp != NULL; pp = &(*pp)->next)
    if (*pp == c)
      {
        *pp = c->next;
        break;
      }
  if (c->counted)
    s->stats.peers_connected--;
  if (c->peer_index >= 0)
    {
      struct peer_entry *e = &s->peers[c->peer_index];
      s->outgoing_conns--;
      if (c->ban || c->ban_by_reader)
        {
          e->state = PEER_BANNED;
          s->stats.peers_banned++;
        }
      else if (c->self)
        e->state = PEER_SELF;
      else
        {
          e->state = PEER_IDLE;
          e->failures = c->got_piece ? 0 : e->failures + 1;
          unsigned shift = e->failures < 6 ? e->failures : 6;
          e->next_try = clock_seconds () + (1u << shift);
        }
    }
  s->live_conns--;
  pthread_cond_broadcast (&s->cond);
  if (!s->stopping)
    session_wake_conns_locked (s);
  pthread_mutex_unlock (&s->lock);
  if (c->fd >= 0)
    close (c->fd);
  close (c->wake_fd);
  free (c->peer_has);
  free (c->refused);
  free (c->rbuf);
  free (c->serve_buf);
  free (c);
}

/* The connection thread's body. */
static void *
conn_main (void *opaque)
{
  struct bt_conn *c = opaque;
  struct bt_session *s = c->s;
  int r = 0;
  if (c->peer_index >= 0)
    {
      pthread_mutex_lock (&s->lock);
      struct bt_peer_addr a = s->peers[c->peer_index].addr;
      pthread_mutex_unlock (&s->lock);
      session_peer_addr_text (&a, c->addr, sizeof c->addr);
      r = connect_peer (c, &a);
      if (r == 0)
        r = send_handshake (c);
      if (r == 0)
        r = recv_handshake (c, clock_seconds () + s->set.connect_timeout);
    }
  else
    {
      struct bt_peer_addr a = { .addr_len = sizeof a.addr };
      getpeername (c->fd, (struct sockaddr *) &a.addr, &a.addr_len);
      session_peer_addr_text (&a, c->addr, sizeof c->addr);
      fcntl (c->fd, F_SETFL, fcntl (c->fd, F_GETFL) | O_NONBLOCK);
      r = recv_handshake (c, clock_seconds () + s->set.connect_timeout);
      if (r == 0)
        r = send_handshake (c);
    }
  if (r == 0)
    {
      pthread_mutex_lock (&s->lock);
      s->stats.peers_connected++;
      c->counted = true;
      pthread_mutex_unlock (&s->lock);
      log_debug ("bt: %s: connected to %s%s%s", s->name, c->addr,
                 c->fast ? " (fast)" : "", c->ext ? " (ext)" : "");
      c->last_recv = c->last_block = clock_seconds ();
      r = send_greeting (c);
    }
  if (r == 0)
    r = run (c);
  conn_finish (c, r);
  return NULL;
}

/* Start a connection thread: outgoing to peers[peer_index] when fd is
 * -1, or over an accepted fd (lock held). */
int
conn_start_locked (struct bt_session *s, int fd, ssize_t peer_index)
{
  size_t bytes = ((size_t) s->mi->piece_count + 7) / 8;
  struct bt_conn *c = calloc (1, sizeof *c);
  if (c == NULL)
    return -ENOMEM;
  c->s = s;
  c->fd = fd;
  c->peer_index = peer_index;
  c->serial = ++s->conn_serial;
  c->peer_choking = c->am_choking = true;
  c->serve_index = -1;
  c->peer_has = calloc (bytes, 1);
  c->refused = calloc (bytes, 1);
  c->wake_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  c->pick_random = ((uint64_t) s->key << 32) ^ (uintptr_t) c;
  pthread_attr_t attr;
  pthread_attr_init (&attr);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  pthread_t th;
  if (c->peer_has == NULL || c->refused == NULL || c->wake_fd < 0
      || thread_create ("ds-bt-peer", &th, &attr, conn_main, c) != 0)
    {
      pthread_attr_destroy (&attr);
      if (c->wake_fd >= 0)
        close (c->wake_fd);
      free (c->peer_has);
      free (c->refused);
      free (c);
      return -EAGAIN;
    }
  pthread_attr_destroy (&attr);
  c->next = s->conns;
  s->conns = c;
  s->live_conns++;
  return 0;
}
