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
 * read fails with EIO, and for a second after that the kernel's retries
 * of it fail at once instead of waiting the timeout again (the engine's
 * fail_hold); closing aborts every wait at once.
 *
 * Seeding: the session's piece store is the engine object itself
 * (remote_holds / remote_peek: the disk cache and the chunks in
 * memory), so the daemon serves to other peers every verified piece it
 * has, also those a restarted daemon finds in --cache-dir; it listens
 * where --torrent-listen says (each torrent on the first free port from
 * PORT up), announces that port, and unchokes a few peers at a time
 * (bt/seeding.c) within the entry's `upload-rate`.  `seed = no` or
 * --torrent-listen=off: no listening, nothing served.
 *
 * `download = full`: a filler thread walks the whole torrent with the
 * engine's prefetch, a window at a time (bounded like read-ahead), and
 * waits until the object holds each window before the next; closing the
 * entry stops it within a poll interval.  `peers = host:port,...` are
 * tried besides the trackers' peers.
 *
 * Magnet links: the info dictionary comes from the disk cache when a
 * copy there passes the SHA-1 check, else from the swarm (bt/magnet.c),
 * and is then kept in the disk cache (a blob keyed by the info-hash).
 *
 * Web seeds (BEP 19 `url-list`, torrent_webseed.c): when the torrent
 * has any, each of the engine's fetching threads holds a curl handle and
 * asks them first for the unit's pieces (SHA-1 checked), then the swarm;
 * pieces from a web seed are offered to peers like the swarm's.
 *
 * Warm reads: the file of a single-file torrent whose every piece is in
 * the disk cache is that cache file at the same offsets, so it is lent
 * (lend_file) and the kernel reads it through FUSE passthrough.
 *
 * Thread model: pread from any number of threads; the metainfo is
 * immutable, the session and the engine lock themselves; the store
 * callbacks run on the session's threads and only read the engine.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bt/bt.h"
#include "diskcache.h"
#include "entry.h"
#include "error.h"
#include "options.h"
#include "remote/remote.h"
#include "stack.h"
#include "thread.h"
#include "torrent_webseed.h"

#define DEFAULT_TIMEOUT 60.0
/* Fetching threads of the engine: each waits for the pieces of one unit
 * while the swarm fetches read-ahead pieces in parallel behind them. */
#define TORRENT_CONNECTIONS 8
/* Seconds a piece whose read failed (no peer delivered it within the
 * timeout) answers at once with EIO: the kernel's immediate retries of
 * the failed read would each wait the whole timeout again. */
#define TORRENT_FAIL_HOLD 1.0
/* download = full: bytes prefetched and waited for at a time. */
#define FILL_WINDOW (16u << 20)
#define FILL_POLL_MS 100

/* What the engine object fetches with; owned by the object. */
struct torrent_source
{
  char *src;                            /* the .torrent path, for messages */
  struct bt_metainfo *mi;
  struct bt_session *session;
  /* The engine object this source fetches for: the session's store.
   * NULL until remote_open made it (the store then holds nothing). */
  _Atomic (struct remote_object *) obj;
  char **peers;                         /* `peers =`, NULL-ended */
  struct torrent_webseeds *ws;          /* BEP 19, or NULL */
};

/* download = full: the background walk over the torrent. */
struct torrent_filler
{
  pthread_t thread;
  struct remote_reader *rd;             /* the layer's; borrowed */
  uint64_t size;
  double timeout;                       /* per window before retrying */
  char *label;
  atomic_bool stop;
};

struct torrent_layer
{
  struct layer l;
  struct torrent_source *ts;            /* the object's; borrowed */
  struct remote_reader *rd;             /* owned */
  uint64_t base;                        /* the file's offset in the torrent */
  struct torrent_filler *filler;        /* download = full, else NULL */
};

/* Free a source: the session first (it borrows the metainfo). */
static void
source_free (struct torrent_source *ts)
{
  if (ts == NULL)
    return;
  bt_session_close (ts->session);
  webseeds_free (ts->ws);
  bt_metainfo_free (ts->mi);
  for (char **p = ts->peers; p && *p; p++)
    free (*p);
  free (ts->peers);
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

  if (ts->ws != NULL && ctx != NULL)
    {
      uint64_t start = (uint64_t) first * plen;
      size_t span = (size_t) ((uint64_t) last * plen
                              + bt_metainfo_piece_size (ts->mi, last) - start);
      uint8_t *all = malloc (span);
      if (all != NULL && webseeds_fetch (ts->ws, ctx, all, first, last) == 0)
        {
          memcpy (buf, all + (offset - start), len);
          free (all);
          for (uint32_t p = first; p <= last; p++)
            bt_session_store_added (ts->session, p);
          return 0;
        }
      free (all);
    }
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

/* Closing: no reader may keep waiting for the swarm or a web seed. */
static void
fetcher_stop (void *source)
{
  struct torrent_source *ts = source;

  if (ts->ws)
    webseeds_stop (ts->ws);
  bt_session_abort_reads (ts->session);
}

/* A fetching thread's web seed connection. */
static void *
fetcher_context_new (void *source)
{
  return webseeds_context_new (((struct torrent_source *) source)->ws);
}

static void
fetcher_context_free (void *source, void *ctx)
{
  (void) source;
  webseeds_context_free (ctx);
}

static void
fetcher_free (void *source)
{
  source_free (source);
}

/* The session's store: what the engine object holds. */
static bool
store_has_piece (void *ctx, uint32_t index)
{
  struct torrent_source *ts = ctx;
  struct remote_object *o = atomic_load (&ts->obj);
  uint32_t size = bt_metainfo_piece_size (ts->mi, index);

  return o != NULL && size > 0
         && remote_holds (o, (uint64_t) index * ts->mi->piece_length, size);
}

static int
store_read_piece (void *ctx, uint32_t index, uint8_t *buf, size_t len)
{
  struct torrent_source *ts = ctx;
  struct remote_object *o = atomic_load (&ts->obj);

  if (o == NULL)
    return -ENOENT;
  return remote_peek (o, buf, len, (uint64_t) index * ts->mi->piece_length);
}

/* A verified piece from the swarm: the engine keeps it once the fetcher
 * returns it (a piece it no longer holds is refused to peers). */
static int
store_write_piece (void *ctx, uint32_t index, const uint8_t *buf,
                   size_t len)
{
  (void) ctx, (void) index, (void) buf, (void) len;
  return 0;
}

static const struct bt_store_ops engine_store = {
  .has_piece = store_has_piece,
  .read_piece = store_read_piece,
  .write_piece = store_write_piece,
};

static const struct remote_fetcher_ops torrent_fetcher = {
  .name = "torrent",
  .fail_hold = TORRENT_FAIL_HOLD,
  .fetch = fetcher_fetch,
  .hint = fetcher_hint,
  .stop = fetcher_stop,
  .free = fetcher_free,
};

/* The same with web seeds: a curl handle per fetching thread. */
static const struct remote_fetcher_ops torrent_webseed_fetcher = {
  .name = "torrent",
  .fail_hold = TORRENT_FAIL_HOLD,
  .context_new = fetcher_context_new,
  .context_free = fetcher_context_free,
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

/* A file that is the whole torrent (single-file torrents), complete in
 * the disk cache, is that cache file at the same offsets: lend it,
 * pinned whole until the borrower releases it, so the kernel reads it
 * (FUSE passthrough) and no READ reaches the daemon.  A file of a
 * multi-file torrent sits at another offset of the object: not lent. */
static int
torrent_lend_file (struct layer *l, struct layer_lend *out)
{
  struct torrent_layer *t = (struct torrent_layer *) l;

  if (t->base != 0 || l->size != t->ts->mi->total_length)
    return 0;
  return remote_lend_file (t->rd, out);
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
  fprintf (out, "torrent-pieces-have: %u\n", st.pieces_have);
  fprintf (out, "torrent-peers: %u known, %u connected, %u banned\n",
           st.peers_known, st.peers_connected, st.peers_banned);
  fprintf (out, "torrent-fetched: %" PRIu64 " pieces, %" PRIu64 " bytes, %"
           PRIu64 " hash failures, %" PRIu64 " bytes discarded\n",
           st.pieces_fetched, st.bytes_down, st.hash_failures,
           st.bytes_discarded);
  fprintf (out, "torrent-announces: %" PRIu64 " ok, %" PRIu64 " failed\n",
           st.announces_ok, st.announces_failed);
  if (bt_session_port (ts->session) != 0)
    fprintf (out, "torrent-seeding: port %u, %u peers unchoked, %" PRIu64
             " bytes up, %" PRIu64 " requests cancelled\n",
             bt_session_port (ts->session), st.peers_unchoked, st.bytes_up,
             st.requests_cancelled);
  else
    fprintf (out, "torrent-seeding: no\n");
  if (ts->ws)
    webseeds_status (ts->ws, out);
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

/* Sleep ms milliseconds unless the filler is told to stop. */
static bool
filler_nap (struct torrent_filler *f, unsigned ms)
{
  struct timespec ts = { 0, (long) ms * 1000000L };
  if (atomic_load (&f->stop))
    return false;
  nanosleep (&ts, NULL);
  return !atomic_load (&f->stop);
}

/* download = full: prefetch the torrent a window at a time and wait
 * until the object holds the window (retrying it after the timeout). */
static void *
filler_main (void *arg)
{
  struct torrent_filler *f = arg;
  struct remote_object *o = remote_object_of (f->rd);
  uint64_t pos = 0;

  while (pos < f->size && !atomic_load (&f->stop))
    {
      uint64_t len = f->size - pos < FILL_WINDOW ? f->size - pos
                                                 : FILL_WINDOW;
      double waited = 0;
      remote_prefetch (f->rd, pos, len);
      while (!remote_holds (o, pos, (size_t) len))
        {
          if (!filler_nap (f, FILL_POLL_MS))
            return NULL;
          waited += FILL_POLL_MS / 1000.0;
          if (waited >= f->timeout)
            {
              log_warning ("%s: download = full: bytes %" PRIu64 "..%"
                           PRIu64 " not in after %.0f s; asking again",
                           f->label, pos, pos + len, f->timeout);
              remote_prefetch (f->rd, pos, len);
              waited = 0;
            }
        }
      pos += len;
    }
  if (pos >= f->size)
    log_info ("%s: download = full: all %" PRIu64 " bytes are local",
              f->label, f->size);
  return NULL;
}

/* Stop and free a filler. */
static void
filler_stop (struct torrent_filler *f)
{
  if (f == NULL)
    return;
  atomic_store (&f->stop, true);
  pthread_join (f->thread, NULL);
  free (f->label);
  free (f);
}

/* Start the download = full walk over the layer's reader (prefetch
 * only: it does not disturb the reader's sequential detector). */
static int
filler_start (struct torrent_layer *t, const char *label, double timeout)
{
  struct torrent_filler *f = calloc (1, sizeof *f);
  int r;

  if (f == NULL || (f->label = strdup (label)) == NULL)
    {
      free (f);
      return error_set (ENOMEM, "torrent: out of memory");
    }
  f->rd = t->rd;
  f->size = t->ts->mi->total_length;
  f->timeout = timeout;
  r = thread_create ("ds-bt-filler", &f->thread, NULL, filler_main, f);
  if (r != 0)
    {
      free (f->label);
      free (f);
      return error_set (r, "torrent: cannot start the download thread: %s",
                        strerror (r));
    }
  t->filler = f;
  return 0;
}

/* Drop this entry's reader (the last one stops the session). */
static void
torrent_close (struct layer *l)
{
  struct torrent_layer *t = (struct torrent_layer *) l;
  filler_stop (t->filler);
  remote_close (t->rd);
  free (t);
}

static const struct layer_ops torrent_ops = {
  .name = "torrent",
  .pread = torrent_pread,
  .prefetch = torrent_prefetch,
  .lend_file = torrent_lend_file,
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

/* `peers = a:1,b:2` into the source's NULL-ended list. */
static int
split_peers (struct torrent_source *ts, const char *text)
{
  size_t n = 1;

  if (text == NULL)
    return 0;
  for (const char *q = text; *q; q++)
    n += *q == ',';
  ts->peers = calloc (n + 1, sizeof *ts->peers);
  if (ts->peers == NULL)
    return error_set (ENOMEM, "torrent: out of memory");
  n = 0;
  for (const char *q = text; *q;)
    {
      size_t len = strcspn (q, ",");
      if (len > 0 && (ts->peers[n++] = strndup (q, len)) == NULL)
        return error_set (ENOMEM, "torrent: out of memory");
      q += len + (q[len] == ',');
    }
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

/* The disk cache's kind for a magnet's info dictionary (keyed by the
 * hex info-hash). */
#define MAGNET_INFO_KIND "torrent-info"

/* A magnet link's torrent: its info dictionary from the disk cache when
 * a verified copy is there (a restart needs no peer to open it), else
 * fetched from its swarm within timeout and kept in the disk cache.
 * Either way bt_magnet_metainfo checks its SHA-1 against the info-hash. */
static int
load_magnet (struct torrent_source *ts, const char *uri,
             const struct stack_context *ctx, double timeout)
{
  struct disk_cache *dc = ctx->services ? ctx->services->disk_cache : NULL;
  struct bt_magnet *m;
  uint8_t *info;
  size_t len;
  int r = bt_magnet_parse (uri, &m);
  if (r < 0)
    return r;
  struct bt_settings set = {
    .name = "magnet", .timeout = timeout, .ca_file = ctx->entry->ca_file,
    .extra_peers = (const char *const *) ts->peers,
  };
  char hex[41];
  for (int i = 0; i < 20; i++)
    snprintf (hex + 2 * i, 3, "%02x", m->info_hash[i]);
  if (disk_cache_recall_blob (dc, MAGNET_INFO_KIND, hex, BT_MAX_METADATA,
                              &info, &len) == 0)
    {
      r = bt_magnet_metainfo (m, info, len, &ts->mi);
      free (info);
      if (r == 0)
        {
          log_info ("torrent: magnet %s: metadata from the disk cache "
                    "(%zu bytes, SHA-1 checked)", hex, len);
          bt_magnet_free (m);
          return 0;
        }
      log_warning ("torrent: magnet %s: the disk cache's metadata is "
                   "refused (%s); fetching it from peers", hex,
                   error_message ());
    }
  log_info ("torrent: magnet %s: fetching the metadata from peers (%zu "
            "tracker%s)", hex, m->tracker_count,
            m->tracker_count == 1 ? "" : "s");
  r = bt_magnet_fetch_info (m, &set, &info, &len);
  if (r == 0)
    {
      r = bt_magnet_metainfo (m, info, len, &ts->mi);
      if (r == 0)
        disk_cache_remember_blob (dc, MAGNET_INFO_KIND, hex, info, len);
      else
        r = error_prefix (-r, "magnet");
      free (info);
    }
  bt_magnet_free (m);
  return r;
}

/* Open the torrent layer for a .torrent file or a magnet link. */
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
  r = split_peers (ts, ctx->entry->peers);
  if (r < 0)
    goto err;
  double timeout = ctx->entry->timeout > 0 ? ctx->entry->timeout
                                           : DEFAULT_TIMEOUT;
  if (strncasecmp (path, "magnet:", 7) == 0)
    r = load_magnet (ts, path, ctx, timeout);
  else
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
  const struct daemon_options *opt = ctx->options;
  bool seed = ctx->entry->seed != FLAG_NO
              && !(opt && opt->torrent_listen_off);
  struct bt_settings set = {
    .name = ts->src,
    .timeout = timeout,
    .ca_file = ctx->entry->ca_file,
    .listen = seed,
    .listen_address = opt ? opt->torrent_listen_address : NULL,
    .listen_port = opt ? opt->torrent_listen_port : 0,
    .upload_rate = ctx->entry->upload_rate,
    .extra_peers = (const char *const *) ts->peers,
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
   * object has this info-hash already, this session is closed again.
   * Its store holds nothing until the object exists (obj NULL). */
  r = webseeds_new (ts->mi, label, ctx->entry->ca_file, timeout, &ts->ws);
  if (r < 0)
    goto err;
  r = bt_session_open (ts->mi, &set, &engine_store, ts, &ts->session);
  if (r < 0)
    goto err;
  r = remote_open (&id, &rs, ts->ws ? &torrent_webseed_fetcher
                   : &torrent_fetcher, ts, &t->rd);
  if (r < 0)
    goto err;
  if (r == 1)
    {
      source_free (ts);
      ts = remote_source (t->rd);
    }
  else
    {
      /* The store is the object now: offer what the disk cache has. */
      atomic_store (&ts->obj, remote_object_of (t->rd));
      bt_session_store_changed (ts->session);
    }
  t->ts = ts;
  /* Seeding and a full download work with no reader: the daemon keeps
   * this entry open from the mount on, not only while a file is open. */
  t->l.keep_open = seed || (ctx->entry->download
                            && strcmp (ctx->entry->download, "full") == 0);
  log_info ("torrent: %s: info-hash %s, %u pieces of %u KiB, %zu tier%s of "
            "trackers, showing %s (%" PRIu64 " bytes)%s", path, hex,
            ts->mi->piece_count, ts->mi->piece_length >> 10,
            ts->mi->tier_count, ts->mi->tier_count == 1 ? "" : "s",
            ts->mi->multi_file ? ctx->entry->member : ts->mi->name,
            t->l.size, seed ? "" : ", not seeding");
  if (r == 0 && seed)
    log_info ("torrent: %s: seeding on port %u", path,
              bt_session_port (ts->session));
  if (ctx->entry->download && strcmp (ctx->entry->download, "full") == 0)
    {
      if (rs.disk_cache == NULL)
        log_warning ("torrent: %s: download = full without a disk cache "
                     "(--cache-dir=none): only memory holds the pieces",
                     path);
      r = filler_start (t, label, timeout * 2);
      if (r < 0)
        {
          remote_close (t->rd);
          free (t);
          return r;
        }
    }
  *out = &t->l;
  return 0;

 err:
  source_free (ts);
  free (t);
  return r;
}
