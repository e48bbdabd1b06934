/* diskshelf nbd: opening and closing a client (its connections and
 * reader threads) and what the server told us. */
#include "internal.h"
#include "thread.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Copy the URI (so the caller may free theirs). */
static struct nbd_uri *
uri_dup (const struct nbd_uri *u)
{
  struct nbd_uri *d = calloc (1, sizeof *d);

  if (d == NULL)
    return NULL;
  *d = *u;
#define DUP(f) d->f = u->f ? strdup (u->f) : NULL
  DUP (user); DUP (host); DUP (export_name); DUP (socket);
  DUP (tls_certificates); DUP (tls_psk_file); DUP (tls_hostname);
#undef DUP
  if (d->export_name == NULL)
    d->export_name = strdup ("");
  return d;
}

/* Start the reader thread of conn (state must be set).  It blocks the
 * asynchronous signals (thread_create): a signal sent to the application
 * must reach the application's own threads, never a library thread. */
static int
start_reader (struct nbd_conn *conn)
{
  int r = thread_create ("ds-nbd-reader", &conn->reader, NULL,
                         nbd_reader_thread, conn);

  if (r != 0)
    return nbd_set_error (r, "%s: cannot start reader thread",
                          conn->client->name);
  conn->reader_started = true;
  return 0;
}

/* Stop conn's reader thread and free conn. */
static void
stop_conn (struct nbd_conn *conn)
{
  struct timespec until;

  if (conn == NULL)
    return;
  if (conn->reader_started)
    {
      pthread_mutex_lock (&conn->lock);
      conn->state = CONN_CLOSING;
      pthread_cond_signal (&conn->reader_cond);
      pthread_mutex_unlock (&conn->lock);
      nbd_conn_wake (conn);
      nbd_send_disconnect (conn);
      clock_gettime (CLOCK_REALTIME, &until);
      until.tv_sec += 2;
      if (pthread_timedjoin_np (conn->reader, NULL, &until) != 0)
        {
          /* The server does not close: stop waiting for it. */
          pthread_mutex_lock (&conn->lock);
          if (conn->fd >= 0)
            shutdown (conn->fd, SHUT_RDWR);
          pthread_mutex_unlock (&conn->lock);
          pthread_join (conn->reader, NULL);
        }
    }
  nbd_conn_free (conn);
}

/* Connect the first connection, then up to the wanted number when the
 * server allows multi-conn. */
int
nbd_open (const struct nbd_uri *uri, const struct nbd_settings *s,
          struct nbd_client **out)
{
  struct nbd_client *c = calloc (1, sizeof *c);
  unsigned i, want;
  int r;

  *out = NULL;
  if (c == NULL)
    return nbd_set_error (ENOMEM, "nbd: out of memory");
  c->uri = uri_dup (uri);
  c->name = strdup (s && s->name ? s->name : "nbd");
  c->ca_file = s && s->ca_file ? strdup (s->ca_file) : NULL;
  c->timeout = s && s->timeout > 0 ? s->timeout : 30;
  c->retry_time = s && s->retry_time > 0 ? s->retry_time : 30;
  c->want_connections = s && s->connections ? s->connections : 4;
  if (c->want_connections > NBD_MAX_CONNECTIONS)
    c->want_connections = NBD_MAX_CONNECTIONS;
  c->verify_peer = true;
  if (uri->tls_verify_peer == 0)
    c->verify_peer = false;
  if (s && s->verify_peer >= 0)
    c->verify_peer = s->verify_peer != 0;
  pthread_rwlock_init (&c->rmw_lock, NULL);
  pthread_mutex_init (&c->loss_lock, NULL);
  if (c->uri == NULL || c->name == NULL)
    {
      r = nbd_set_error (ENOMEM, "nbd: out of memory");
      goto fail;
    }
  r = nbd_tls_load_credentials (c);
  if (r < 0)
    goto fail;

  r = nbd_conn_new (c, 0, &c->conns[0]);
  if (r < 0)
    goto fail;
  r = nbd_conn_connect (c->conns[0], c->timeout);
  if (r < 0)
    goto fail;
  c->info = c->conns[0]->info;
  c->nconns = 1;
  c->conns[0]->state = CONN_UP;
  r = start_reader (c->conns[0]);
  if (r < 0)
    goto fail;

  want = (c->info.eflags & NBD_FLAG_CAN_MULTI_CONN) ? c->want_connections : 1;
  for (i = 1; i < want; i++)
    {
      struct nbd_conn *conn;

      if (nbd_conn_new (c, i, &conn) < 0)
        break;
      c->conns[i] = conn;
      /* An extra connection is only a speed-up: a server that accepts
       * it but does not greet it (qemu-nbd past its --shared limit
       * while it has not yet noticed an old client leave) costs a few
       * seconds, not the open.  Go on with the ones made so far. */
      if (nbd_conn_connect (conn, c->timeout < NBD_EXTRA_CONN_TIMEOUT
                                  ? c->timeout : NBD_EXTRA_CONN_TIMEOUT) < 0)
        {
          c->conns[i] = NULL;
          nbd_conn_free (conn);
          break;
        }
      /* Up before its thread starts: a thread that saw it down would
       * connect it a second time. */
      conn->state = CONN_UP;
      if (start_reader (conn) < 0)
        {
          c->conns[i] = NULL;
          nbd_conn_free (conn);
          break;
        }
      c->nconns++;
    }
  *out = c;
  return 0;

 fail:
  nbd_close (c);
  return r;
}

/* Disconnect every connection and free the client. */
void
nbd_close (struct nbd_client *c)
{
  unsigned i;

  if (c == NULL)
    return;
  /* From here no connection tells the others about a stopping server
   * (nbd_client_server_stopping), so they can be freed one by one. */
  pthread_mutex_lock (&c->loss_lock);
  c->closing = true;
  pthread_mutex_unlock (&c->loss_lock);
  for (i = 0; i < NBD_MAX_CONNECTIONS; i++)
    stop_conn (c->conns[i]);
  nbd_tls_free_credentials (c);
  pthread_rwlock_destroy (&c->rmw_lock);
  pthread_mutex_destroy (&c->loss_lock);
  nbd_uri_free (c->uri);
  free (c->ca_file);
  free (c->name);
  free (c);
}

uint64_t nbd_get_size (struct nbd_client *c) { return c->info.size; }

/* Transmission-flag queries. */
bool
nbd_is_read_only (struct nbd_client *c)
{
  return (c->info.eflags & NBD_FLAG_READ_ONLY) != 0;
}

bool
nbd_can_flush (struct nbd_client *c)
{
  return (c->info.eflags & NBD_FLAG_SEND_FLUSH) != 0;
}

bool
nbd_can_trim (struct nbd_client *c)
{
  return (c->info.eflags & NBD_FLAG_SEND_TRIM) != 0;
}

bool
nbd_can_zero (struct nbd_client *c)
{
  return (c->info.eflags & NBD_FLAG_SEND_WRITE_ZEROES) != 0;
}

bool
nbd_can_cache (struct nbd_client *c)
{
  return (c->info.eflags & NBD_FLAG_SEND_CACHE) != 0;
}

bool
nbd_can_multi_conn (struct nbd_client *c)
{
  return (c->info.eflags & NBD_FLAG_CAN_MULTI_CONN) != 0;
}

bool
nbd_can_block_status (struct nbd_client *c)
{
  return c->info.structured && c->info.has_allocation;
}

bool nbd_is_tls (struct nbd_client *c) { return c->info.tls; }
unsigned nbd_get_connections (struct nbd_client *c) { return c->nconns; }

/* The block-size triple: 0 minimum, 1 preferred, 2 maximum payload. */
uint32_t
nbd_get_block_size (struct nbd_client *c, int which)
{
  return which == 0 ? c->info.min_block
         : which == 1 ? c->info.pref_block : c->info.max_payload;
}

/* Counters for status output. */
void
nbd_get_stats (struct nbd_client *c, struct nbd_stats *out)
{
  unsigned i;

  out->requests = atomic_load (&c->requests);
  out->reconnects = atomic_load (&c->reconnects);
  out->timeouts = atomic_load (&c->timeouts);
  out->protocol_errors = atomic_load (&c->protocol_errors);
  pthread_mutex_lock (&c->loss_lock);
  snprintf (out->last_loss, sizeof out->last_loss, "%s", c->last_loss);
  pthread_mutex_unlock (&c->loss_lock);
  out->connected = false;
  for (i = 0; i < c->nconns; i++)
    {
      pthread_mutex_lock (&c->conns[i]->lock);
      if (c->conns[i]->state == CONN_UP)
        out->connected = true;
      pthread_mutex_unlock (&c->conns[i]->lock);
    }
}
