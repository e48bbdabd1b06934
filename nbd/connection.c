/* diskshelf nbd: one connection to the server: connecting and
 * negotiating, the reader thread, and what happens when the connection
 * is lost (replay after a reconnect with back-off, or EIO). */
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* Create an unconnected connection object. */
int
nbd_conn_new (struct nbd_client *c, unsigned index, struct nbd_conn **out)
{
  struct nbd_conn *conn = calloc (1, sizeof *conn);
  pthread_condattr_t attr;

  if (conn == NULL || (conn->rbuf = malloc (NBD_READ_BUFFER)) == NULL)
    {
      free (conn);
      return nbd_set_error (ENOMEM, "%s: out of memory", c->name);
    }
  conn->wake_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (conn->wake_fd < 0)
    {
      int err = errno;
      free (conn->rbuf);
      free (conn);
      return nbd_set_error (err, "%s: eventfd: %s", c->name, strerror (err));
    }
  conn->client = c;
  conn->index = index;
  conn->fd = -1;
  conn->state = CONN_DOWN;
  conn->next_cookie = 1;
  pthread_mutex_init (&conn->lock, NULL);
  pthread_mutex_init (&conn->wlock, NULL);
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&conn->reader_cond, &attr);
  pthread_condattr_destroy (&attr);
  clock_gettime (CLOCK_MONOTONIC, &conn->down_since);
  *out = conn;
  return 0;
}

/* Free a connection whose reader has stopped. */
void
nbd_conn_free (struct nbd_conn *conn)
{
  if (conn == NULL)
    return;
  nbd_conn_drop_transport (conn);
  pthread_mutex_destroy (&conn->lock);
  pthread_mutex_destroy (&conn->wlock);
  pthread_cond_destroy (&conn->reader_cond);
  close (conn->wake_fd);
  free (conn->rbuf);
  free (conn);
}

/* Open a socket and negotiate, each socket operation of the handshake
 * bounded by handshake_timeout seconds; on success the connection is
 * usable (state still set by the caller) with the client's timeout.
 * Only the reader thread or nbd_open calls this, while no request can
 * be sent. */
int
nbd_conn_connect (struct nbd_conn *conn, double handshake_timeout)
{
  struct nbd_client *c = conn->client;
  int fd, r;

  r = nbd_socket_connect (c, &fd);
  if (r < 0)
    return r;
  nbd_socket_set_timeout (fd, handshake_timeout);
  pthread_mutex_lock (&conn->lock);
  pthread_mutex_lock (&conn->wlock);
  conn->fd = fd;
  conn->rpos = conn->rlen = 0;
  conn->io_timeout = handshake_timeout;
  pthread_mutex_unlock (&conn->wlock);
  pthread_mutex_unlock (&conn->lock);

  /* The socket timeout bounds each read; this bounds the whole
   * negotiation, which a server trickling bytes could stretch forever. */
  conn->negotiating = true;
  nbd_deadline_after (&conn->hs_deadline, handshake_timeout);
  r = nbd_handshake (conn);
  conn->negotiating = false;
  if (r == 0 && c->nconns > 0)
    {
      /* A reconnect must find the same export. */
      if (conn->info.size != c->info.size)
        r = nbd_set_error (ESTALE, "%s: the export changed size from %llu "
                           "to %llu", c->name,
                           (unsigned long long) c->info.size,
                           (unsigned long long) conn->info.size);
      else if ((conn->info.eflags & NBD_FLAG_READ_ONLY)
               && !(c->info.eflags & NBD_FLAG_READ_ONLY))
        r = nbd_set_error (EROFS, "%s: the export became read-only",
                           c->name);
      else if (conn->info.min_block > c->info.min_block
               || conn->info.max_payload < c->info.max_payload
               || conn->info.structured != c->info.structured)
        r = nbd_set_error (EPROTO, "%s: the server's limits changed",
                           c->name);
    }
  if (r == 0)
    {
      /* The socket keeps a timeout: a server that stops in the middle
       * of a reply cannot hold the reader role forever. */
      nbd_socket_set_timeout (fd, c->timeout);
      conn->io_timeout = c->timeout;
      return 0;
    }
  pthread_mutex_lock (&conn->lock);
  pthread_mutex_lock (&conn->wlock);
  nbd_conn_drop_transport (conn);
  pthread_mutex_unlock (&conn->wlock);
  pthread_mutex_unlock (&conn->lock);
  return r;
}

/* The connection broke (or the server broke the protocol): drop the
 * transport, replay what was in flight after a reconnect, or fail it. */
void
nbd_conn_lost (struct nbd_conn *conn, bool fatal, const char *why)
{
  size_t i;

  if (conn->fd >= 0)
    shutdown (conn->fd, SHUT_RDWR);
  pthread_mutex_lock (&conn->lock);
  pthread_mutex_lock (&conn->wlock);
  nbd_conn_drop_transport (conn);
  conn->gen++;
  pthread_mutex_unlock (&conn->wlock);
  if (conn->state != CONN_CLOSING)
    {
      struct nbd_client *c = conn->client;

      conn->state = CONN_DOWN;
      pthread_mutex_lock (&c->loss_lock);
      snprintf (c->last_loss, sizeof c->last_loss, "connection %u: %s",
                conn->index, why);
      pthread_mutex_unlock (&c->loss_lock);
    }
  clock_gettime (CLOCK_MONOTONIC, &conn->down_since);
  for (i = 0; i < NBD_TABLE_SIZE; i++)
    while (conn->table[i])
      {
        struct nbd_req *req = conn->table[i];

        if (req->timed_out && nbd_waits_aborted ())
          /* Given up early because the program is going away (a lazy
           * unmount): an I/O error, as for a request still queued. */
          nbd_req_complete (conn, req, EIO, "given up: the program is "
                            "shutting down");
        else if (req->timed_out)
          nbd_req_complete (conn, req, ETIMEDOUT, "no reply within the "
                            "timeout");
        else if (fatal || conn->state == CONN_CLOSING || req->probe)
          nbd_req_complete (conn, req, EIO, why);
        else
          {
            /* Queue it; its caller sends it again after the reconnect. */
            nbd_table_remove (conn, req->cookie);
            req->state = REQ_QUEUED;
            req->deadline = conn->down_since;
            req->deadline.tv_sec += (time_t) conn->client->retry_time;
            req->next = conn->queue;
            conn->queue = req;
          }
      }
  pthread_cond_signal (&conn->reader_cond);
  pthread_mutex_unlock (&conn->lock);
  nbd_conn_wake (conn);
}

/* Wake the connection's thread if it is watching the socket. */
void
nbd_conn_wake (struct nbd_conn *conn)
{
  uint64_t one = 1;
  /* A failure is EAGAIN: the counter is already set, the thread wakes. */
  ssize_t r = write (conn->wake_fd, &one, sizeof one);

  (void) r;
}

/* The server answered NBD_ESHUTDOWN on `from`: it is stopping, and a
 * server like nbdkit waits for every client connection to go before it
 * exits.  Make each other connection check at once (an idle one sends
 * its probe and drops on the same answer; a busy one hears it in its
 * next reply) instead of holding the server until its own idle probe.
 * loss_lock keeps nbd_close from freeing connections meanwhile; no
 * connection lock is taken under it (nbd_conn_lost takes them the other
 * way round). */
void
nbd_client_server_stopping (struct nbd_client *c, struct nbd_conn *from)
{
  unsigned i;

  pthread_mutex_lock (&c->loss_lock);
  for (i = 0; !c->closing && i < c->nconns; i++)
    {
      struct nbd_conn *conn = c->conns[i];

      if (conn == NULL || conn == from)
        continue;
      __atomic_store_n (&conn->check_now, true, __ATOMIC_RELEASE);
      nbd_conn_wake (conn);
    }
  pthread_mutex_unlock (&c->loss_lock);
}

/* Fail every queued request with EIO (lock held). */
static void
fail_queue (struct nbd_conn *conn, const char *why)
{
  while (conn->queue)
    nbd_req_complete (conn, conn->queue, EIO, why);
}

/* Wake every caller whose request waits for the connection (lock held). */
static void
wake_queue (struct nbd_conn *conn)
{
  struct nbd_req *req;

  for (req = conn->queue; req; req = req->next)
    pthread_cond_signal (&req->cond);
}

/* Try to reconnect once; on failure wait the back-off or give up. */
static void
reconnect (struct nbd_conn *conn, double *backoff)
{
  struct nbd_client *c = conn->client;
  struct timespec until;
  int r = nbd_conn_connect (conn, c->timeout);

  pthread_mutex_lock (&conn->lock);
  if (conn->state == CONN_CLOSING)
    ;
  else if (r == 0)
    {
      conn->state = CONN_UP;
      *backoff = 0.05;
      atomic_fetch_add (&c->reconnects, 1);
      wake_queue (conn);
    }
  else
    {
      char why[512];
      struct timespec limit = conn->down_since;

      snprintf (why, sizeof why, "%s", nbd_get_error ());
      limit.tv_sec += (time_t) c->retry_time;
      if (conn->state == CONN_FAILED || nbd_deadline_passed (&limit))
        {
          conn->state = CONN_FAILED;
          fail_queue (conn, why);
        }
      else
        {
          nbd_deadline_after (&until, *backoff);
          pthread_cond_timedwait (&conn->reader_cond, &conn->lock, &until);
          *backoff = *backoff * 2 > 2.0 ? 2.0 : *backoff * 2;
        }
    }
  pthread_mutex_unlock (&conn->lock);
}

/* While the connection is up, wait until the server closes its side
 * of the socket (or something wakes us).  A closed socket with nobody
 * reading it is a lost connection: take the reader role, so no caller
 * starts reading, and say so; with requests in flight their reader sees
 * the end of the stream itself.  Called and returns with lock held. */
static void
watch (struct nbd_conn *conn)
{
  struct pollfd p[2] = { { .fd = conn->fd, .events = POLLRDHUP },
                         { .fd = conn->wake_fd, .events = POLLIN } };
  uint64_t gen = conn->gen, submitted = conn->submitted, count;
  struct timespec until;
  bool check_now, hangup;
  int r;

  pthread_mutex_unlock (&conn->lock);
  do
    r = poll (p, 2, NBD_IDLE_PROBE_SECONDS * 1000);
  while (r < 0 && errno == EINTR);
  if (p[1].revents & POLLIN)
    while (read (conn->wake_fd, &count, sizeof count) > 0)
      ;
  pthread_mutex_lock (&conn->lock);
  check_now = __atomic_exchange_n (&conn->check_now, false, __ATOMIC_ACQ_REL);
  if (conn->state != CONN_UP || conn->gen != gen)
    return;
  hangup = r > 0 && (p[0].revents & (POLLRDHUP | POLLHUP | POLLERR));
  if (r == 0 || (check_now && !hangup))
    {
      /* Idle for a while, or another connection heard the server is
       * shutting down: make sure the server still serves.  A reply
       * of NBD_ESHUTDOWN or no reply drops the connection (the reader
       * of the probe does that), and the loop below reconnects.  A
       * connection with requests in flight hears it in their replies. */
      if ((check_now || conn->submitted == submitted)
          && conn->in_flight == 0 && !conn->reading)
        {
          pthread_mutex_unlock (&conn->lock);
          nbd_run_probe (conn);
          pthread_mutex_lock (&conn->lock);
        }
      else if (check_now)
        {
          /* Busy when told: its replies may all be good ones (requests
           * the server took before it began to stop), and then it would
           * sit idle, holding the server, until its own probe.  Keep the
           * check pending (and the next poll awake) and look again
           * shortly. */
          __atomic_store_n (&conn->check_now, true, __ATOMIC_RELEASE);
          nbd_conn_wake (conn);
          nbd_deadline_after (&until, 0.05);
          pthread_cond_timedwait (&conn->reader_cond, &conn->lock, &until);
        }
      return;
    }
  if (r < 0 || !hangup)
    return;
  if (conn->reading || conn->in_flight > 0)
    {
      /* Their reader will meet the end of the stream; look again soon
       * rather than spin on a socket that stays closed. */
      nbd_deadline_after (&until, 0.1);
      pthread_cond_timedwait (&conn->reader_cond, &conn->lock, &until);
      return;
    }
  conn->reading = true;
  pthread_mutex_unlock (&conn->lock);
  nbd_conn_lost (conn, false, "the server closed the connection");
  pthread_mutex_lock (&conn->lock);
  conn->reading = false;
}

/* The connection's thread: watch the socket while the connection is up
 * (callers read the replies themselves), reconnect after a loss. */
void *
nbd_reader_thread (void *arg)
{
  struct nbd_conn *conn = arg;
  double backoff = 0.05;

  for (;;)
    {
      pthread_mutex_lock (&conn->lock);
      if (conn->state == CONN_UP)
        {
          watch (conn);
          pthread_mutex_unlock (&conn->lock);
          continue;
        }
      while (conn->state == CONN_FAILED && conn->queue == NULL)
        pthread_cond_wait (&conn->reader_cond, &conn->lock);
      if (conn->state == CONN_CLOSING)
        {
          pthread_mutex_unlock (&conn->lock);
          break;
        }
      pthread_mutex_unlock (&conn->lock);
      reconnect (conn, &backoff);
    }
  return NULL;
}
