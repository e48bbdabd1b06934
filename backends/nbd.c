/* diskshelf: the NBD transport (`source = nbd://...`, nbds://,
 * nbd+unix://, nbds+unix://, nbd+vsock://) over the nbd/ client library.
 *
 * Thread model: any number of threads; the library multiplexes their
 * requests over its connections.  Writable when the server allows it and
 * the entry does not say `readonly = yes`; SEEK_DATA/SEEK_HOLE come from
 * base:allocation block status. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "error.h"
#include "nbd.h"
#include "nbd_layer.h"
#include "options.h"
#include "stack.h"
#include "text.h"

struct nbd_layer
{
  struct layer layer;
  struct nbd_client *client;   /* owned */
  char *source;                /* for messages */
  void (*on_close) (void *);   /* called after the client is closed */
  void *on_close_arg;
};

/* Hand the library's message to the daemon's error convention. */
static int
nbd_fail (int r)
{
  return error_set (-r, "nbd: %s", nbd_get_error ());
}

/* Read through the client. */
static int
nbd_layer_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  struct nbd_layer *n = (struct nbd_layer *) l;
  int r = nbd_pread (n->client, buf, count, offset);

  return r < 0 ? nbd_fail (r) : 0;
}

/* Write through the client. */
static int
nbd_layer_pwrite (struct layer *l, const void *buf, size_t count,
                  uint64_t offset)
{
  struct nbd_layer *n = (struct nbd_layer *) l;
  int r = nbd_pwrite (n->client, buf, count, offset);

  return r < 0 ? nbd_fail (r) : 0;
}

/* fsync -> NBD_CMD_FLUSH. */
static int
nbd_layer_flush (struct layer *l)
{
  struct nbd_layer *n = (struct nbd_layer *) l;
  int r = nbd_flush (n->client);

  return r < 0 ? nbd_fail (r) : 0;
}

/* Punch hole -> NBD_CMD_TRIM. */
static int
nbd_layer_trim (struct layer *l, uint64_t offset, uint64_t length)
{
  struct nbd_layer *n = (struct nbd_layer *) l;
  int r = nbd_trim (n->client, offset, length);

  return r < 0 ? nbd_fail (r) : 0;
}

/* Zero range -> NBD_CMD_WRITE_ZEROES, or zero buffers when the server
 * cannot. */
static int
nbd_layer_zero (struct layer *l, uint64_t offset, uint64_t length)
{
  struct nbd_layer *n = (struct nbd_layer *) l;
  static const size_t step = 1024 * 1024;
  char *zeroes;
  int r = 0;

  if (nbd_can_zero (n->client))
    {
      r = nbd_zero (n->client, offset, length);
      return r < 0 ? nbd_fail (r) : 0;
    }
  zeroes = calloc (1, step);
  if (zeroes == NULL)
    return error_set (ENOMEM, "nbd: %s: out of memory", n->source);
  while (length > 0 && r == 0)
    {
      size_t k = length < step ? length : step;
      r = nbd_pwrite (n->client, zeroes, k, offset);
      offset += k;
      length -= k;
    }
  free (zeroes);
  return r < 0 ? nbd_fail (r) : 0;
}

/* The allocation run at offset, from block status. */
static int
nbd_layer_extent (struct layer *l, uint64_t offset, struct layer_extent *out)
{
  struct nbd_layer *n = (struct nbd_layer *) l;
  struct nbd_extent e;
  int r = nbd_block_status (n->client, offset, &e);

  if (r < 0)
    return nbd_fail (r);
  out->length = e.length;
  out->hole = (e.flags & 1) != 0;
  out->zero = (e.flags & 2) != 0;
  return 0;
}

/* Read-ahead hint -> NBD_CMD_CACHE. */
static int
nbd_layer_prefetch (struct layer *l, uint64_t offset, uint64_t length)
{
  struct nbd_layer *n = (struct nbd_layer *) l;
  int r = nbd_cache (n->client, offset, length);

  return r < 0 ? nbd_fail (r) : 0;
}

/* Status lines for `diskshelf status`. */
static void
nbd_layer_status (struct layer *l, FILE *out)
{
  struct nbd_layer *n = (struct nbd_layer *) l;
  struct nbd_stats s;

  nbd_get_stats (n->client, &s);
  fprintf (out, "nbd-connected: %s\n", s.connected ? "yes" : "no");
  fprintf (out, "nbd-connections: %u\n", nbd_get_connections (n->client));
  fprintf (out, "nbd-tls: %s\n", nbd_is_tls (n->client) ? "yes" : "no");
  fprintf (out, "nbd-requests: %llu\n", (unsigned long long) s.requests);
  fprintf (out, "nbd-reconnects: %llu\n", (unsigned long long) s.reconnects);
  fprintf (out, "nbd-timeouts: %llu\n", (unsigned long long) s.timeouts);
  fprintf (out, "nbd-protocol-errors: %llu\n",
           (unsigned long long) s.protocol_errors);
  if (s.last_loss[0])
    fprintf (out, "nbd-last-loss: %s\n", s.last_loss);
}

/* Disconnect and free. */
static void
nbd_layer_close (struct layer *l)
{
  struct nbd_layer *n = (struct nbd_layer *) l;

  nbd_close (n->client);
  if (n->on_close)
    n->on_close (n->on_close_arg);
  free (n->source);
  free (n);
}

static const struct layer_ops nbd_layer_ops = {
  .name = "nbd",
  .pread = nbd_layer_pread,
  .pwrite = nbd_layer_pwrite,
  .flush = nbd_layer_flush,
  .trim = nbd_layer_trim,
  .zero = nbd_layer_zero,
  .extent = nbd_layer_extent,
  .prefetch = nbd_layer_prefetch,
  .status = nbd_layer_status,
  .close = nbd_layer_close,
};

/* Open an NBD layer for uri; on_close (may be NULL) runs after the
 * client is closed (the captive server uses it to stop its child). */
int
nbd_layer_open_with (const struct stack_context *ctx, const char *uri,
                     const char *display, void (*on_close) (void *),
                     void *arg, struct layer **out)
{
  const struct entry_config *e = ctx->entry;
  struct nbd_settings s = { .verify_peer = -1 };
  struct nbd_uri *u;
  struct nbd_layer *n;
  int r;

  layer_on_abort (nbd_abort_waits);
  r = nbd_uri_parse (uri, &u);
  if (r < 0)
    return error_set (-r, "nbd: %s: %s", display, nbd_get_error ());
  n = calloc (1, sizeof *n);
  if (n == NULL || (n->source = strdup (display)) == NULL)
    {
      free (n);
      nbd_uri_free (u);
      return error_set (ENOMEM, "nbd: %s: out of memory", display);
    }
  s.timeout = e->timeout;
  s.retry_time = e->retry_time;
  s.connections = e->connections;
  s.ca_file = e->ca_file;
  if (e->tls_verify != FLAG_UNSET)
    s.verify_peer = e->tls_verify == FLAG_YES;
  s.name = display;
  r = nbd_open (u, &s, &n->client);
  nbd_uri_free (u);
  if (r < 0)
    {
      r = error_set (-r, "nbd: %s", nbd_get_error ());
      free (n->source);
      free (n);
      return r;
    }
  n->layer.ops = &nbd_layer_ops;
  n->layer.size = nbd_get_size (n->client);
  n->layer.writable = !nbd_is_read_only (n->client)
                      && e->readonly != FLAG_YES
                      && !(ctx->options && ctx->options->readonly);
  n->layer.immutable = false;
  n->on_close = on_close;
  n->on_close_arg = arg;
  *out = &n->layer;
  return 0;
}

/* The constructor for `source = <NBD URI>` entries.  Messages and
 * status name the URI with any "user:password@" replaced by "***@". */
int
layer_nbd_open (const struct stack_context *ctx, const char *uri,
                struct layer **out)
{
  char *display = text_redacted_copy (uri);
  int r;

  if (display == NULL)
    return error_set (ENOMEM, "nbd: out of memory");
  r = nbd_layer_open_with (ctx, uri, display, NULL, NULL, out);
  free (display);
  return r;
}
