/* diskshelf: the torrent transport (`source = /path/x.torrent`, and
 * `entry = path/in/torrent` for a multi-file torrent).
 *
 * The layer shows one file of the torrent.  The whole torrent is one
 * object of the remote-bytes engine (backends/remote/), keyed by its
 * info-hash, so two entries over one torrent (two of its files, or the
 * same info-hash in two .torrent files) share every piece.  The engine's
 * unit is the piece when the piece length is a power of two dividing
 * 1 MiB or a multiple of it (else 1 MiB chunks made of the pieces they
 * touch); its fetcher here asks the bt/ session for verified pieces, so
 * reads get the engine's single flight, read-ahead (handed to the swarm
 * as "wanted soon", fetched there in parallel), memory bound and disk
 * cache: pieces land in --cache-dir (validated by the info-hash) and a
 * restarted daemon reads them with no peer traffic.  With no peer able
 * to deliver a piece within the entry's `timeout` (default 60 s), the
 * read fails with EIO; closing aborts every wait at once.
 *
 * Not yet: seeding from the daemon (`seed =`), `download = full`,
 * `peers =`, web seeds (BEP 19).
 *
 * Thread model: pread from any number of threads; the metainfo is
 * immutable, the session and the engine lock themselves.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bt/bt.h"
#include "entry.h"
#include "error.h"
#include "options.h"
#include "remote/remote.h"
#include "stack.h"

#define DEFAULT_TIMEOUT 60.0
/* Fetching threads of the engine: each waits for the pieces of one unit
 * while the swarm fetches read-ahead pieces in parallel behind them. */
#define TORRENT_CONNECTIONS 8

/* What the engine object fetches with; owned by the object. */
struct torrent_source
{
  char *src;                            /* the .torrent path, for messages */
  struct bt_metainfo *mi;
  struct bt_session *session;
};

struct torrent_layer
{
  struct layer l;
  struct torrent_source *ts;            /* the object's; borrowed */
  struct remote_reader *rd;             /* owned */
  uint64_t base;                        /* the file's offset in the torrent */
};

/* Free a source: the session first (it borrows the metainfo). */
static void
source_free (struct torrent_source *ts)
{
  if (ts == NULL)
    return;
  bt_session_close (ts->session);
  bt_metainfo_free (ts->mi);
  free (ts->src);
  free (ts);
}

/* The fetcher: fill buf with [offset, offset+len) of the torrent from
 * verified pieces, asking the swarm for all of them at once. */
static int
fetcher_fetch (void *source, void *ctx, void *buf, uint64_t offset,
               size_t len)
{
  struct torrent_source *ts = source;
  uint32_t plen = ts->mi->piece_length;
  uint32_t first = offset / plen, last = (offset + len - 1) / plen;
  uint8_t *tmp = NULL;
  int r = 0;

  for (uint32_t p = first + 1; p <= last; p++)
    bt_prefetch_piece (ts->session, p);
  for (uint32_t p = first; p <= last && r == 0; p++)
    {
      uint64_t ps = (uint64_t) p * plen;
      uint32_t size = bt_metainfo_piece_size (ts->mi, p);
      uint64_t s = ps > offset ? ps : offset;
      uint64_t e = ps + size < offset + len ? ps + size : offset + len;

      if (s == ps && e == ps + size)
        r = bt_read_piece (ts->session, p, (uint8_t *) buf + (ps - offset));
      else
        {
          if (tmp == NULL && (tmp = malloc (plen)) == NULL)
            r = error_set (ENOMEM, "torrent: %s: out of memory", ts->src);
          if (r == 0 && (r = bt_read_piece (ts->session, p, tmp)) == 0)
            memcpy ((uint8_t *) buf + (s - offset), tmp + (s - ps),
                    (size_t) (e - s));
        }
    }
  free (tmp);
  if (r < 0)
    return error_prefix (-r, "torrent");
  return 0;
}

/* Read-ahead was queued: let the swarm fetch those pieces now. */
static void
fetcher_hint (void *source, uint64_t offset, size_t len)
{
  struct torrent_source *ts = source;
  uint32_t plen = ts->mi->piece_length;

  for (uint64_t p = offset / plen; p <= (offset + len - 1) / plen; p++)
    bt_prefetch_piece (ts->session, (uint32_t) p);
}

/* Closing: no reader may keep waiting for the swarm. */
static void
fetcher_stop (void *source)
{
  bt_session_abort_reads (((struct torrent_source *) source)->session);
}

static void
fetcher_free (void *source)
{
  source_free (source);
}

static const struct remote_fetcher_ops torrent_fetcher = {
  .name = "torrent",
  .fetch = fetcher_fetch,
  .hint = fetcher_hint,
  .stop = fetcher_stop,
  .free = fetcher_free,
};

/* Read the file's bytes: its range of the torrent object. */
static int
torrent_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  struct torrent_layer *t = (struct torrent_layer *) l;

  return remote_pread (t->rd, buf, count, t->base + offset);
}

/* Queue fetches of a range a caller will read soon. */
static int
torrent_prefetch (struct layer *l, uint64_t offset, uint64_t length)
{
  struct torrent_layer *t = (struct torrent_layer *) l;

  return remote_prefetch (t->rd, t->base + offset, length);
}

/* Status lines: the torrent's shape, the swarm, then the engine's. */
static void
torrent_status (struct layer *l, FILE *out)
{
  struct torrent_layer *t = (struct torrent_layer *) l;
  struct torrent_source *ts = t->ts;
  struct bt_stats st;
  char hex[41];
  bt_session_stats (ts->session, &st);
  bt_info_hash_hex (ts->mi, hex);
  fprintf (out, "torrent-info-hash: %s\n", hex);
  fprintf (out, "torrent-pieces: %u x %u bytes\n", ts->mi->piece_count,
           ts->mi->piece_length);
  fprintf (out, "torrent-peers: %u known, %u connected, %u banned\n",
           st.peers_known, st.peers_connected, st.peers_banned);
  fprintf (out, "torrent-fetched: %" PRIu64 " pieces, %" PRIu64 " bytes, %"
           PRIu64 " hash failures\n", st.pieces_fetched, st.bytes_down,
           st.hash_failures);
  fprintf (out, "torrent-announces: %" PRIu64 " ok, %" PRIu64 " failed\n",
           st.announces_ok, st.announces_failed);
  remote_status (t->rd, out);
}

/* The info-hash: what tells this torrent from another. */
static void
torrent_identity (struct layer *l, FILE *out)
{
  struct torrent_layer *t = (struct torrent_layer *) l;
  char hex[41];

  bt_info_hash_hex (t->ts->mi, hex);
  fprintf (out, "info-hash: %s\n", hex);
  fprintf (out, "file-offset: %" PRIu64 "\n", t->base);
}

/* Drop this entry's reader (the last one stops the session). */
static void
torrent_close (struct layer *l)
{
  struct torrent_layer *t = (struct torrent_layer *) l;
  remote_close (t->rd);
  free (t);
}

static const struct layer_ops torrent_ops = {
  .name = "torrent",
  .pread = torrent_pread,
  .prefetch = torrent_prefetch,
  .status = torrent_status,
  .identity = torrent_identity,
  .close = torrent_close,
};

/* Choose the file the entry shows: `entry =`, or the only one. */
static int
pick_file (struct torrent_layer *t, const struct torrent_source *ts,
           const char *member)
{
  const struct bt_metainfo *mi = ts->mi;
  int index;
  if (member != NULL)
    {
      index = bt_metainfo_find_file (mi, member);
      if (index < 0)
        return error_prefix (-index, "torrent: %s: entry = %s", ts->src,
                             member);
    }
  else if (!mi->multi_file)
    index = 0;
  else
    {
      char first[256] = "";
      for (size_t i = 0; i < mi->file_count; i++)
        if (!mi->files[i].pad)
          {
            snprintf (first, sizeof first, "%s", mi->files[i].path);
            break;
          }
      return error_set (EINVAL, "torrent: %s: holds %zu files; fix: add "
                        "'entry = %s' (or another of its files) to choose "
                        "one", ts->src, mi->file_count, first);
    }
  t->base = mi->files[index].offset;
  t->l.size = mi->files[index].length;
  return 0;
}

/* The engine's unit for this piece length: the piece when the engine
 * and the disk cache can keep it as such, else 0 (1 MiB chunks). */
static size_t
unit_for (uint32_t piece_length)
{
  bool pow2 = (piece_length & (piece_length - 1)) == 0;

  if (piece_length >= 16384 && pow2)
    return piece_length;
  if (piece_length > REMOTE_CHUNK && piece_length % REMOTE_CHUNK == 0)
    return piece_length;
  return 0;
}

/* Open the torrent layer for a .torrent file. */
int
layer_torrent_open (const struct stack_context *ctx, const char *path,
                    struct layer **out)
{
  struct torrent_layer *t = calloc (1, sizeof *t);
  struct torrent_source *ts = calloc (1, sizeof *ts);
  char hex[41], label[512];
  int r;

  if (t == NULL || ts == NULL || (ts->src = strdup (path)) == NULL)
    {
      free (t);
      free (ts);
      return error_set (ENOMEM, "torrent: out of memory");
    }
  t->l.ops = &torrent_ops;
  t->l.immutable = true;
  r = bt_metainfo_load (path, &ts->mi);
  if (r < 0)
    {
      r = error_prefix (-r, "torrent");
      goto err;
    }
  r = pick_file (t, ts, ctx->entry->member);
  if (r < 0)
    goto err;
  bt_info_hash_hex (ts->mi, hex);
  struct bt_settings set = {
    .name = ts->src,
    .timeout = ctx->entry->timeout > 0 ? ctx->entry->timeout
                                       : DEFAULT_TIMEOUT,
    .ca_file = ctx->entry->ca_file,
  };
  struct remote_identity id = {
    .kind = "torrent", .key = hex, .size = ts->mi->total_length };
  struct remote_settings rs = {
    .label = label, .display = ts->src, .connections = TORRENT_CONNECTIONS,
    .unit = unit_for (ts->mi->piece_length),
    .disk_cache = ctx->services ? ctx->services->disk_cache : NULL };
  snprintf (label, sizeof label, "torrent: %s", ts->src);
  if (ctx->options && ctx->options->memory_cache_size > 0)
    remote_memory_budget (ctx->options->memory_cache_size
                          / REMOTE_MEMORY_SHARE);
  /* The source is whole before the engine can share it; when an open
   * object has this info-hash already, this session is closed again. */
  r = bt_session_open (ts->mi, &set, NULL, NULL, &ts->session);
  if (r < 0)
    goto err;
  r = remote_open (&id, &rs, &torrent_fetcher, ts, &t->rd);
  if (r < 0)
    goto err;
  if (r == 1)
    {
      source_free (ts);
      ts = remote_source (t->rd);
    }
  t->ts = ts;
  log_info ("torrent: %s: info-hash %s, %u pieces of %u KiB, %zu tier%s of "
            "trackers, showing %s (%" PRIu64 " bytes)", path, hex,
            ts->mi->piece_count, ts->mi->piece_length >> 10,
            ts->mi->tier_count, ts->mi->tier_count == 1 ? "" : "s",
            ts->mi->multi_file ? ctx->entry->member : ts->mi->name,
            t->l.size);
  *out = &t->l;
  return 0;

 err:
  source_free (ts);
  free (t);
  return r;
}
