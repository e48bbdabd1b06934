/* diskshelf: the torrent transport (`source = /path/x.torrent`, and
 * `entry = path/in/torrent` for a multi-file torrent).
 *
 * The layer shows one file of the torrent.  Reads go through the shared
 * decoded-block cache with one block per piece: a miss asks the bt/
 * session for the piece, which fetches it from the swarm on demand and
 * verifies its SHA-1 before the cache makes it readable; concurrent
 * readers of one piece share one fetch; a sequential reader gets the next
 * pieces fetched ahead.  With no peer able to deliver a piece within the
 * entry's `timeout` (default 60 s), the read fails with EIO.
 *
 * Not yet: seeding (`seed =`), `download = full`, `peers =`, the disk
 * cache as the piece store, web seeds (BEP 19).
 *
 * Thread model: pread from any number of threads; the metainfo is
 * immutable, the session and the block cache lock themselves, and the
 * read-ahead hint is an atomic.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockcache.h"
#include "bt/bt.h"
#include "entry.h"
#include "error.h"
#include "stack.h"

#define DEFAULT_TIMEOUT 60.0
#define SEQUENTIAL_SLACK (4ull * 1024 * 1024)

struct torrent_layer
{
  struct layer l;
  char *src;
  struct bt_metainfo *mi;
  struct bt_session *session;
  struct block_cache *cache;            /* borrowed */
  struct block_cache_client *client;
  uint64_t base;                        /* the file's offset in the torrent */
  unsigned ahead;                       /* pieces the cache reads ahead */
  unsigned swarm_ahead;                 /* pieces the swarm fetches ahead */
  _Atomic uint64_t next_offset;         /* where a sequential read goes next */
};

/* The block cache calls this on a worker: fetch and verify one piece. */
static int
torrent_fetch_piece (void *opaque, uint64_t index, void *buf, size_t size)
{
  struct torrent_layer *t = opaque;
  if (size != bt_metainfo_piece_size (t->mi, (uint32_t) index))
    return error_set (EINVAL, "torrent: %s: piece %" PRIu64 " asked with "
                      "size %zu", t->src, index, size);
  int r = bt_read_piece (t->session, (uint32_t) index, buf);
  if (r < 0)
    return error_prefix (-r, "torrent");
  return 0;
}

/* Read through the block cache, piece by piece. */
static int
torrent_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  struct torrent_layer *t = (struct torrent_layer *) l;
  uint8_t *p = buf;
  uint32_t plen = t->mi->piece_length;
  uint64_t prev = atomic_exchange (&t->next_offset, offset + count);
  bool sequential = offset + SEQUENTIAL_SLACK >= prev
    && offset <= prev + SEQUENTIAL_SLACK && offset > 0;
  uint64_t abs = t->base + offset;
  if (sequential && count > 0)
    {
      /* The cache's workers (few) wait for the next pieces; the swarm
       * fetches more in parallel behind them, so those waits are short. */
      uint64_t last = (abs + count - 1) / plen;
      for (unsigned k = 1; k <= t->ahead && last + k < t->mi->piece_count;
           k++)
        if (!block_cache_prefetch (t->client, last + k,
                                   bt_metainfo_piece_size (t->mi,
                                                           last + k)))
          break;
      for (uint64_t k = 1; k <= t->swarm_ahead
                           && last + k < t->mi->piece_count; k++)
        if (!block_cache_has (t->client, last + k))
          bt_prefetch_piece (t->session, last + k);
    }
  while (count > 0)
    {
      uint32_t piece = abs / plen;
      uint32_t in_piece = abs % plen;
      uint32_t size = bt_metainfo_piece_size (t->mi, piece);
      size_t n = size - in_piece < count ? size - in_piece : count;
      int r = block_cache_read (t->client, piece, size, in_piece, p, n);
      if (r < 0)
        return r;
      p += n;
      abs += n;
      count -= n;
    }
  return 0;
}

/* Status lines: the torrent's shape and the swarm. */
static void
torrent_status (struct layer *l, FILE *out)
{
  struct torrent_layer *t = (struct torrent_layer *) l;
  struct bt_stats st;
  char hex[41];
  bt_session_stats (t->session, &st);
  bt_info_hash_hex (t->mi, hex);
  fprintf (out, "torrent-info-hash: %s\n", hex);
  fprintf (out, "torrent-pieces: %u x %u bytes\n", t->mi->piece_count,
           t->mi->piece_length);
  fprintf (out, "torrent-peers: %u known, %u connected, %u banned\n",
           st.peers_known, st.peers_connected, st.peers_banned);
  fprintf (out, "torrent-fetched: %" PRIu64 " pieces, %" PRIu64 " bytes, %"
           PRIu64 " hash failures\n", st.pieces_fetched, st.bytes_down,
           st.hash_failures);
  fprintf (out, "torrent-announces: %" PRIu64 " ok, %" PRIu64 " failed\n",
           st.announces_ok, st.announces_failed);
}

/* Stop the fetches, the session and free everything. */
static void
torrent_close (struct layer *l)
{
  struct torrent_layer *t = (struct torrent_layer *) l;
  block_cache_client_free (t->client);
  bt_session_close (t->session);
  bt_metainfo_free (t->mi);
  free (t->src);
  free (t);
}

static const struct layer_ops torrent_ops = {
  .name = "torrent",
  .pread = torrent_pread,
  .status = torrent_status,
  .close = torrent_close,
};

/* Choose the file the entry shows: `entry =`, or the only one. */
static int
pick_file (struct torrent_layer *t, const char *member)
{
  const struct bt_metainfo *mi = t->mi;
  int index;
  if (member != NULL)
    {
      index = bt_metainfo_find_file (mi, member);
      if (index < 0)
        return error_prefix (-index, "torrent: %s: entry = %s", t->src,
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
                        "one", t->src, mi->file_count, first);
    }
  t->base = mi->files[index].offset;
  t->l.size = mi->files[index].length;
  return 0;
}

/* Open the torrent layer for a .torrent file. */
int
layer_torrent_open (const struct stack_context *ctx, const char *path,
                    struct layer **out)
{
  struct torrent_layer *t = calloc (1, sizeof *t);
  if (t == NULL || (t->src = strdup (path)) == NULL)
    {
      free (t);
      return error_set (ENOMEM, "torrent: out of memory");
    }
  t->l.ops = &torrent_ops;
  t->l.immutable = true;
  int r = bt_metainfo_load (path, &t->mi);
  if (r < 0)
    {
      r = error_prefix (-r, "torrent");
      goto err;
    }
  r = pick_file (t, ctx->entry->member);
  if (r < 0)
    goto err;
  if (ctx->services == NULL || ctx->services->block_cache == NULL)
    {
      r = error_set (EINVAL, "torrent: %s: no decoded-block cache", t->src);
      goto err;
    }
  t->cache = ctx->services->block_cache;
  struct bt_settings set = {
    .name = t->src,
    .timeout = ctx->entry->timeout > 0 ? ctx->entry->timeout
                                       : DEFAULT_TIMEOUT,
    .ca_file = ctx->entry->ca_file,
  };
  r = bt_session_open (t->mi, &set, NULL, NULL, &t->session);
  if (r < 0)
    goto err;
  r = block_cache_client_new (t->cache, t->src, NULL, torrent_fetch_piece, t,
                              &t->client);
  if (r < 0)
    goto err;
  t->ahead = block_cache_workers (t->cache);
  /* 16 MiB of pieces in flight from the swarm, 4 pieces at least. */
  t->swarm_ahead = (16u << 20) / t->mi->piece_length;
  if (t->swarm_ahead < 4)
    t->swarm_ahead = 4;
  char hex[41];
  bt_info_hash_hex (t->mi, hex);
  log_info ("torrent: %s: info-hash %s, %u pieces of %u KiB, %zu tier%s of "
            "trackers, showing %s (%" PRIu64 " bytes)", t->src, hex,
            t->mi->piece_count, t->mi->piece_length >> 10,
            t->mi->tier_count, t->mi->tier_count == 1 ? "" : "s",
            t->mi->multi_file ? ctx->entry->member : t->mi->name,
            t->l.size);
  *out = &t->l;
  return 0;

 err:
  bt_session_close (t->session);
  bt_metainfo_free (t->mi);
  free (t->src);
  free (t);
  return r;
}
