/* diskshelf nbd: the life of a request: registered in the cookie table
 * before its first byte is sent, queued while the connection is down,
 * sent again after a reconnect, failed with EIO on timeout or when the
 * server stays unreachable for the retry time. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Set once by nbd_abort_waits: every wait gives up. */
static bool aborting;       /* atomic */

/* Make every wait for a reply give up (see nbd.h). */
void
nbd_abort_waits (void)
{
  __atomic_store_n (&aborting, true, __ATOMIC_RELEASE);
}

/* True once nbd_abort_waits ran. */
bool
nbd_waits_aborted (void)
{
  return __atomic_load_n (&aborting, __ATOMIC_ACQUIRE);
}

/* Absolute CLOCK_MONOTONIC time seconds from now. */
void
nbd_deadline_after (struct timespec *ts, double seconds)
{
  clock_gettime (CLOCK_MONOTONIC, ts);
  ts->tv_sec += (time_t) seconds;
  ts->tv_nsec += (long) ((seconds - (double) (time_t) seconds) * 1e9);
  if (ts->tv_nsec >= 1000000000L)
    {
      ts->tv_sec++;
      ts->tv_nsec -= 1000000000L;
    }
}

/* True once the monotonic clock has reached ts. */
bool
nbd_deadline_passed (const struct timespec *ts)
{
  struct timespec now;

  clock_gettime (CLOCK_MONOTONIC, &now);
  return now.tv_sec > ts->tv_sec
         || (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

/* A deadline no later than a second from now, so that waits notice
 * nbd_abort_waits. */
static struct timespec
next_step (const struct timespec *deadline)
{
  struct timespec step;

  nbd_deadline_after (&step, 1);
  if (deadline->tv_sec < step.tv_sec
      || (deadline->tv_sec == step.tv_sec && deadline->tv_nsec < step.tv_nsec))
    step = *deadline;
  return step;
}

/* Add req to the cookie table (lock held). */
void
nbd_table_insert (struct nbd_conn *conn, struct nbd_req *req)
{
  struct nbd_req **slot = &conn->table[req->cookie % NBD_TABLE_SIZE];

  req->next = *slot;
  *slot = req;
  conn->in_flight++;
  if (req->type == NBD_CMD_READ && req->count >= NBD_READ_BUFFER / 2)
    conn->big_reads++;
}

/* Find the request with this cookie (lock held), or NULL. */
struct nbd_req *
nbd_table_find (struct nbd_conn *conn, uint64_t cookie)
{
  struct nbd_req *req = conn->table[cookie % NBD_TABLE_SIZE];

  while (req && req->cookie != cookie)
    req = req->next;
  return req;
}

/* Unlink the request with this cookie (lock held); NULL if absent. */
struct nbd_req *
nbd_table_remove (struct nbd_conn *conn, uint64_t cookie)
{
  struct nbd_req **p = &conn->table[cookie % NBD_TABLE_SIZE];

  while (*p && (*p)->cookie != cookie)
    p = &(*p)->next;
  if (*p == NULL)
    return NULL;
  {
    struct nbd_req *req = *p;
    *p = req->next;
    req->next = NULL;
    conn->in_flight--;
    if (req->type == NBD_CMD_READ && req->count >= NBD_READ_BUFFER / 2)
      conn->big_reads--;
    return req;
  }
}

/* Unlink req from the queue of requests waiting for a connection (lock
 * held). */
static void
queue_remove (struct nbd_conn *conn, struct nbd_req *req)
{
  struct nbd_req **p = &conn->queue;

  while (*p && *p != req)
    p = &(*p)->next;
  if (*p)
    *p = req->next;
  req->next = NULL;
}

/* Mark req done with err (0 = success) and wake its caller (lock held). */
void
nbd_req_complete (struct nbd_conn *conn, struct nbd_req *req, int err,
                  const char *why)
{
  if (req->state == REQ_SENT)
    nbd_table_remove (conn, req->cookie);
  else if (req->state == REQ_QUEUED)
    queue_remove (conn, req);
  if (why && why != req->message)
    snprintf (req->message, sizeof req->message, "%s", why);
  else if (why == NULL)
    req->message[0] = '\0';
  req->error = err;
  req->state = REQ_DONE;
  pthread_cond_signal (&req->cond);
}

/* Put req on the connection's queue until it is up again (lock held). */
static void
enqueue (struct nbd_conn *conn, struct nbd_req *req)
{
  struct nbd_client *c = conn->client;

  req->state = REQ_QUEUED;
  req->next = conn->queue;
  conn->queue = req;
  if (conn->state == CONN_FAILED)
    {
      /* Given up before: one more attempt, bounded by the timeout. */
      nbd_deadline_after (&req->deadline, c->timeout);
      pthread_cond_signal (&conn->reader_cond);
    }
  else
    {
      req->deadline = conn->down_since;
      req->deadline.tv_sec += (time_t) c->retry_time;
      if (nbd_deadline_passed (&req->deadline))
        nbd_deadline_after (&req->deadline, 1);
    }
}

/* Send req now if the connection is up, else queue it (lock held; the
 * lock is dropped while sending). */
static void
submit (struct nbd_conn *conn, struct nbd_req *req)
{
  struct nbd_client *c = conn->client;
  int r;

  if (conn->state == CONN_CLOSING)
    {
      nbd_req_complete (conn, req, ESHUTDOWN, "the client is closing");
      return;
    }
  if (conn->state != CONN_UP && req->probe)
    {
      nbd_req_complete (conn, req, ENOTCONN, "the connection is down");
      return;
    }
  if (conn->state != CONN_UP)
    {
      enqueue (conn, req);
      return;
    }
  req->cookie = conn->next_cookie++;
  req->gen = conn->gen;
  req->state = REQ_SENT;
  req->timed_out = false;
  req->got_error_chunk = false;
  req->got_extent = false;
  req->ncover = 0;
  req->covered = 0;
  req->cover_unsorted = false;
  req->nchunks = 0;
  nbd_table_insert (conn, req);
  nbd_deadline_after (&req->deadline, c->timeout);
  conn->submitted++;
  if (!req->probe)
    atomic_fetch_add (&c->requests, 1);
  pthread_mutex_unlock (&conn->lock);
  r = nbd_send_request (conn, req);
  pthread_mutex_lock (&conn->lock);
  if (r < 0 && conn->gen == req->gen && conn->fd >= 0)
    /* The reader notices, and replays or fails what was in flight. */
    shutdown (conn->fd, SHUT_RDWR);
}

/* Hand the reader role to a caller asleep on one of this connection's
 * requests (lock held).  Only a sleeping owner can take it: a caller
 * busy leading another connection will look again when it comes back. */
static void
hand_off (struct nbd_conn *conn)
{
  size_t i;
  struct nbd_req *req;

  for (i = 0; i < NBD_TABLE_SIZE; i++)
    for (req = conn->table[i]; req; req = req->next)
      if (req->waiting)
        {
          pthread_cond_signal (&req->cond);
          return;
        }
}

/* Take the reader role and read replies (dispatching them to whoever
 * they belong to) until req's own reply is in, its deadline passes or
 * the connection fails (lock held on entry and exit). */
static void
lead (struct nbd_conn *conn, struct nbd_req *req)
{
  bool fatal = false;
  int r = 0;

  conn->reading = true;
  pthread_mutex_unlock (&conn->lock);
  for (;;)
    {
      pthread_mutex_lock (&conn->lock);
      if (req->state != REQ_SENT)
        {
          pthread_mutex_unlock (&conn->lock);
          break;
        }
      pthread_mutex_unlock (&conn->lock);
      {
        struct timespec step = next_step (&req->deadline);
        r = nbd_conn_wait_readable (conn, &step);
      }
      if (r == -ETIMEDOUT && !nbd_deadline_passed (&req->deadline)
          && !__atomic_load_n (&aborting, __ATOMIC_ACQUIRE))
        r = -EAGAIN;   /* only a step of the wait */
      if (r == -EAGAIN)
        continue;
      if (r == -ETIMEDOUT)
        {
          pthread_mutex_lock (&conn->lock);
          req->timed_out = true;
          pthread_mutex_unlock (&conn->lock);
          atomic_fetch_add (&conn->client->timeouts, 1);
          break;
        }
      if (r < 0)
        break;
      r = nbd_read_one (conn, &fatal);
      if (r < 0)
        break;
    }
  if (r < 0)
    {
      char why[512];

      if (fatal || r == -ESHUTDOWN)
        snprintf (why, sizeof why, "%s", nbd_get_error ());
      else
        snprintf (why, sizeof why, "connection lost: %s", strerror (-r));
      nbd_conn_lost (conn, fatal, why);
      if (r == -ESHUTDOWN)
        nbd_client_server_stopping (conn->client, conn);
    }
  pthread_mutex_lock (&conn->lock);
  conn->reading = false;
  hand_off (conn);
}

/* Wait until req is done, resending it after reconnects and enforcing
 * its deadline (lock held). */
static void
wait_done (struct nbd_conn *conn, struct nbd_req *req)
{
  while (req->state != REQ_DONE)
    {
      if (req->state == REQ_QUEUED
          && __atomic_load_n (&aborting, __ATOMIC_ACQUIRE))
        {
          nbd_req_complete (conn, req, EIO, "given up: the program is "
                            "shutting down");
          continue;
        }
      if (req->state == REQ_QUEUED && conn->state == CONN_UP)
        {
          queue_remove (conn, req);
          submit (conn, req);
          continue;
        }
      if (req->state == REQ_SENT && conn->state == CONN_UP
          && !conn->reading && req->gen == conn->gen)
        {
          lead (conn, req);
          continue;
        }
      req->waiting = true;
      {
        /* Wake at least every second to notice nbd_abort_waits. */
        struct timespec step = next_step (&req->deadline);
        pthread_cond_timedwait (&req->cond, &conn->lock, &step);
      }
      req->waiting = false;
      if (req->state == REQ_SENT && !req->timed_out
          && __atomic_load_n (&aborting, __ATOMIC_ACQUIRE))
        clock_gettime (CLOCK_MONOTONIC, &req->deadline);   /* give up now */
      if (req->state == REQ_DONE || !nbd_deadline_passed (&req->deadline))
        continue;
      if (req->state == REQ_SENT && !req->timed_out)
        {
          /* No way to cancel one NBD request: drop the connection; the
           * reader fails this request and replays the others. */
          req->timed_out = true;
          atomic_fetch_add (&conn->client->timeouts, 1);
          if (conn->gen == req->gen && conn->fd >= 0)
            shutdown (conn->fd, SHUT_RDWR);
          nbd_deadline_after (&req->deadline, 5);
        }
      else if (req->state == REQ_SENT)
        nbd_deadline_after (&req->deadline, 1);
      else if (req->state == REQ_QUEUED)
        nbd_req_complete (conn, req, EIO, "the server could not be reached "
                          "again within the retry time");
    }
}

/* The connection with the fewest requests in flight, the lowest index
 * on ties: a lone reader keeps to one warm connection, parallel readers
 * spread out.  The counts are read without the locks: a hint only. */
static struct nbd_conn *
pick_conn (struct nbd_client *c)
{
  struct nbd_conn *best = c->conns[0];
  size_t best_load = __atomic_load_n (&best->in_flight, __ATOMIC_RELAXED);
  unsigned i;

  for (i = 1; i < c->nconns && best_load > 0; i++)
    {
      size_t load = __atomic_load_n (&c->conns[i]->in_flight,
                                     __ATOMIC_RELAXED);
      if (load < best_load)
        {
          best = c->conns[i];
          best_load = load;
        }
    }
  return best;
}

/* Ask the server for one block over conn, to learn whether it still
 * serves: 0, or a negative errno (the connection is then being dropped
 * or already down).  Only the connection's own thread calls it. */
int
nbd_run_probe (struct nbd_conn *conn)
{
  struct nbd_client *c = conn->client;
  struct nbd_req req = { .type = NBD_CMD_READ, .probe = true,
                         .conn = conn };
  pthread_condattr_t attr;
  char *buf;

  req.count = conn->info.min_block;
  if (c->info.size < req.count)
    return 0;
  buf = malloc (req.count);
  if (buf == NULL)
    return -ENOMEM;
  req.rbuf = buf;
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&req.cond, &attr);
  pthread_condattr_destroy (&attr);
  pthread_mutex_lock (&conn->lock);
  submit (conn, &req);
  wait_done (conn, &req);
  pthread_mutex_unlock (&conn->lock);
  free (req.cover);
  pthread_cond_destroy (&req.cond);
  free (buf);
  return -req.error;
}

/* Run n requests at once (spread over the connections) and wait for all;
 * returns 0 or the first failure as a negative errno with a message. */
int
nbd_run (struct nbd_client *c, struct nbd_req *reqs, size_t n)
{
  pthread_condattr_t attr;
  size_t i;
  int ret = 0;

  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  for (i = 0; i < n; i++)
    {
      struct nbd_req *req = &reqs[i];
      req->conn = pick_conn (c);
      pthread_cond_init (&req->cond, &attr);
      req->state = REQ_NEW;
      req->waiting = false;
      req->cover = NULL;
      req->ncover = req->cover_cap = 0;
      req->message[0] = '\0';
      pthread_mutex_lock (&req->conn->lock);
      submit (req->conn, req);
      pthread_mutex_unlock (&req->conn->lock);
    }
  pthread_condattr_destroy (&attr);
  for (i = 0; i < n; i++)
    {
      struct nbd_req *req = &reqs[i];

      pthread_mutex_lock (&req->conn->lock);
      wait_done (req->conn, req);
      pthread_mutex_unlock (&req->conn->lock);
      if (req->error && ret == 0)
        {
          int err = req->error == EPROTO || req->error == ETIMEDOUT
                    ? EIO : req->error;
          ret = nbd_set_error (err, "%s: %s at %llu+%u: %s%s%s", c->name,
                               req->type == NBD_CMD_READ ? "read"
                               : req->type == NBD_CMD_WRITE ? "write"
                               : req->type == NBD_CMD_FLUSH ? "flush"
                               : req->type == NBD_CMD_TRIM ? "trim"
                               : req->type == NBD_CMD_WRITE_ZEROES ? "zero"
                               : req->type == NBD_CMD_CACHE ? "cache"
                               : "block status",
                               (unsigned long long) req->offset, req->count,
                               strerror (req->error),
                               req->message[0] ? ": " : "", req->message);
        }
      free (req->cover);
      pthread_cond_destroy (&req->cond);
    }
  return ret;
}
