/* diskshelf: the copy-on-write overlay layer (`overlay = discard|PATH`).
 *
 * Writes, zeroes and discards land in a store (store.c); reads take each
 * block from the store where it was written and from the layer below
 * elsewhere.  The layer below is only ever read: a golden image can be
 * booted many times without being touched.
 *
 * discard: the store is an unnamed sparse file made at the first write
 * and dropped when the last file handle on the entry is released (like
 * qemu's snapshot=on).  PATH: the store is that file; fsync makes the
 * writes durable, and the file survives unmounts and restarts.
 *
 * Thread model: see overlay-internal.h. */
#include "overlay-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "entry.h"
#include "error.h"
#include "fileio.h"
#include "options.h"
#include "stack.h"
#include "text.h"

struct overlay_layer
{
  struct layer layer;
  char *entry_name;                 /* for messages */
  struct overlay_store store;
  pthread_rwlock_t store_lock;      /* see overlay-internal.h */
  pthread_mutex_t stripes[OVERLAY_STRIPES];
  unsigned handles;                 /* open file handles; atomic */
  _Atomic uint64_t drops;           /* discard stores dropped */
};

/* Read count bytes of the store at image offset off. */
static int
store_read (struct overlay_layer *o, void *buf, size_t count, uint64_t off)
{
  char *p = buf;

  while (count > 0)
    {
      ssize_t n = pread (o->store.fd, p, count,
                         (off_t) (o->store.data_offset + off));
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return error_set (errno, "overlay: %s: read of the store at %llu:"
                          " %s", o->entry_name, (unsigned long long) off,
                          strerror (errno));
      if (n == 0)
        {
          /* Past the store's end: only possible if someone shrank the
           * file; those bytes were never written. */
          memset (p, 0, count);
          return 0;
        }
      p += n;
      count -= (size_t) n;
      off += (uint64_t) n;
    }
  return 0;
}

/* Write count bytes into the store at image offset off. */
static int
store_write (struct overlay_layer *o, const void *buf, size_t count,
             uint64_t off)
{
  int r = fd_pwrite_all (o->store.fd, buf, count,
                         o->store.data_offset + off);

  return r < 0 ? error_prefix (-r, "overlay: %s: the store (fix: free space "
                               "where the overlay lives)", o->entry_name)
               : 0;
}

/* Make [off, off+len) of the store read as zeroes. */
static int
store_punch (struct overlay_layer *o, uint64_t off, uint64_t len)
{
  int r = fd_zero_range (o->store.fd, o->store.data_offset + off, len, 0);

  return r < 0 ? error_prefix (-r, "overlay: %s: the store", o->entry_name)
               : 0;
}

/* Reads: each run of blocks from where it lives. */
static int
overlay_pread (struct layer *l, void *buf, size_t count, uint64_t offset)
{
  struct overlay_layer *o = (struct overlay_layer *) l;
  char *p = buf;
  int r = 0;

  pthread_rwlock_rdlock (&o->store_lock);
  while (count > 0 && r == 0)
    {
      uint64_t b = offset / OVERLAY_BLOCK;
      uint64_t last = (offset + count - 1) / OVERLAY_BLOCK;
      bool owned = o->store.fd >= 0 && overlay_store_owns (&o->store, b);
      uint64_t run_end = o->store.fd >= 0
        ? overlay_store_run_end (&o->store, b, last + 1) : last + 1;
      uint64_t end = run_end * OVERLAY_BLOCK;
      size_t n = end - offset < count ? (size_t) (end - offset) : count;

      if (owned)
        r = store_read (o, p, n, offset);
      else
        r = layer_pread (l->lower, p, n, offset);
      p += n;
      offset += n;
      count -= n;
    }
  pthread_rwlock_unlock (&o->store_lock);
  return r;
}

/* Claim block b for a write of [from, to) inside it: a partial write
 * reads the rest of the block from below first.  Caller holds the
 * block's stripe lock and store_lock for reading. */
static int
claim_block (struct overlay_layer *o, uint64_t b, const char *data,
             uint64_t from, uint64_t to)
{
  uint64_t start = b * OVERLAY_BLOCK;
  uint64_t end = start + OVERLAY_BLOCK;
  char block[OVERLAY_BLOCK];
  int r;

  if (end > o->layer.size)
    end = o->layer.size;
  if (from == start && to == end)
    r = store_write (o, data, (size_t) (to - from), from);
  else
    {
      r = layer_pread (o->layer.lower, block, (size_t) (end - start), start);
      if (r < 0)
        return error_prefix (r, "overlay: %s: reading the rest of block"
                             " %llu from below", o->entry_name,
                             (unsigned long long) b);
      memcpy (block + (from - start), data, (size_t) (to - from));
      r = store_write (o, block, (size_t) (end - start), start);
    }
  if (r == 0)
    overlay_store_claim (&o->store, b);
  return r;
}

/* Writes: straight into the store for owned blocks, claiming new ones. */
static int
write_locked (struct overlay_layer *o, const char *buf, size_t count,
              uint64_t offset)
{
  int r = 0;

  while (count > 0 && r == 0)
    {
      uint64_t b = offset / OVERLAY_BLOCK;
      uint64_t last = (offset + count - 1) / OVERLAY_BLOCK;
      uint64_t run_end = overlay_store_run_end (&o->store, b, last + 1);
      uint64_t end = run_end * OVERLAY_BLOCK;
      size_t n = end - offset < count ? (size_t) (end - offset) : count;

      if (overlay_store_owns (&o->store, b))
        r = store_write (o, buf, n, offset);
      else
        {
          /* New blocks one at a time, each under its stripe lock. */
          uint64_t block_end = (b + 1) * OVERLAY_BLOCK;
          pthread_mutex_t *m = &o->stripes[b % OVERLAY_STRIPES];

          n = block_end - offset < count ? (size_t) (block_end - offset)
                                         : count;
          pthread_mutex_lock (m);
          if (overlay_store_owns (&o->store, b))
            r = store_write (o, buf, n, offset);
          else
            r = claim_block (o, b, buf, offset, offset + n);
          pthread_mutex_unlock (m);
        }
      buf += n;
      offset += n;
      count -= n;
    }
  return r;
}

/* Take store_lock for a write, making a discard store's file first. */
static int
lock_for_write (struct overlay_layer *o)
{
  int r = 0;

  pthread_rwlock_rdlock (&o->store_lock);
  if (o->store.fd >= 0)
    return 0;
  pthread_rwlock_unlock (&o->store_lock);
  pthread_rwlock_wrlock (&o->store_lock);
  r = overlay_store_materialise (&o->store);
  pthread_rwlock_unlock (&o->store_lock);
  if (r < 0)
    return error_prefix (r, "%s", o->entry_name);
  pthread_rwlock_rdlock (&o->store_lock);
  if (o->store.fd >= 0)
    return 0;
  /* Dropped again in between: only when no handle is open, which a
   * writer has; say so rather than loop. */
  pthread_rwlock_unlock (&o->store_lock);
  return error_set (EIO, "overlay: %s: the store went away during a write",
                    o->entry_name);
}

/* Layer callback: write into the overlay. */
static int
overlay_pwrite (struct layer *l, const void *buf, size_t count,
                uint64_t offset)
{
  struct overlay_layer *o = (struct overlay_layer *) l;
  int r = lock_for_write (o);

  if (r < 0)
    return r;
  r = write_locked (o, buf, count, offset);
  pthread_rwlock_unlock (&o->store_lock);
  return r;
}

/* Layer callback: make a range read as zeroes (zero and trim alike):
 * whole blocks become holes in the store, partial ones are written. */
static int
overlay_zero (struct layer *l, uint64_t offset, uint64_t length)
{
  struct overlay_layer *o = (struct overlay_layer *) l;
  static const char zeroes[OVERLAY_BLOCK];
  uint64_t end = offset + length;
  uint64_t first_full = (offset + OVERLAY_BLOCK - 1) / OVERLAY_BLOCK;
  uint64_t end_full = end / OVERLAY_BLOCK;
  int r = lock_for_write (o);

  if (r < 0)
    return r;
  if (end == l->size)
    end_full = o->store.nblocks;   /* the short last block counts whole */
  if (first_full >= end_full)
    {
      /* Inside one or two blocks: plain zero writes. */
      while (offset < end && r == 0)
        {
          uint64_t n = end - offset < OVERLAY_BLOCK ? end - offset
                                                    : OVERLAY_BLOCK;
          r = write_locked (o, zeroes, (size_t) n, offset);
          offset += n;
        }
      goto out;
    }
  if (offset < first_full * OVERLAY_BLOCK)
    r = write_locked (o, zeroes,
                      (size_t) (first_full * OVERLAY_BLOCK - offset), offset);
  if (r == 0)
    {
      uint64_t from = first_full * OVERLAY_BLOCK;
      uint64_t to = end_full * OVERLAY_BLOCK;
      if (to > l->size)
        to = l->size;
      r = store_punch (o, from, to - from);
      for (uint64_t b = first_full; b < end_full && r == 0; b++)
        if (!overlay_store_owns (&o->store, b))
          {
            pthread_mutex_t *m = &o->stripes[b % OVERLAY_STRIPES];
            pthread_mutex_lock (m);
            overlay_store_claim (&o->store, b);
            pthread_mutex_unlock (m);
          }
    }
  if (r == 0 && end > end_full * OVERLAY_BLOCK)
    r = write_locked (o, zeroes, (size_t) (end - end_full * OVERLAY_BLOCK),
                      end_full * OVERLAY_BLOCK);
 out:
  pthread_rwlock_unlock (&o->store_lock);
  return r;
}

/* Layer callback: fsync — durable for a persistent overlay. */
static int
overlay_flush (struct layer *l)
{
  struct overlay_layer *o = (struct overlay_layer *) l;
  int r;

  pthread_rwlock_rdlock (&o->store_lock);
  r = overlay_store_sync (&o->store);
  pthread_rwlock_unlock (&o->store_lock);
  return r;
}

/* The run at offset inside owned blocks: the store's data or holes. */
static int
owned_extent (struct overlay_layer *o, uint64_t offset, uint64_t run_end,
              struct layer_extent *out)
{
  off_t base = (off_t) o->store.data_offset;
  off_t data = lseek (o->store.fd, base + (off_t) offset, SEEK_DATA);
  uint64_t limit = run_end - offset;

  if (data < 0 && errno != ENXIO)
    goto data;
  if (data < 0 || (uint64_t) (data - base) > offset)
    {
      uint64_t hole_len = data < 0 ? limit : (uint64_t) (data - base) - offset;
      out->length = hole_len < limit ? hole_len : limit;
      out->hole = out->zero = true;
      return 0;
    }
  off_t hole = lseek (o->store.fd, base + (off_t) offset, SEEK_HOLE);
  if (hole > base + (off_t) offset)
    {
      uint64_t len = (uint64_t) (hole - base) - offset;
      out->length = len < limit ? len : limit;
      out->hole = out->zero = false;
      return 0;
    }
 data:
  out->length = limit;
  out->hole = out->zero = false;
  return 0;
}

/* Layer callback: merge the store's map with the extents from below. */
static int
overlay_extent (struct layer *l, uint64_t offset, struct layer_extent *out)
{
  struct overlay_layer *o = (struct overlay_layer *) l;
  uint64_t b = offset / OVERLAY_BLOCK;
  uint64_t run_end;
  int r;

  pthread_rwlock_rdlock (&o->store_lock);
  if (o->store.fd < 0)
    {
      pthread_rwlock_unlock (&o->store_lock);
      return layer_extent (l->lower, offset, out);
    }
  run_end = overlay_store_run_end (&o->store, b, o->store.nblocks)
            * OVERLAY_BLOCK;
  if (run_end > l->size)
    run_end = l->size;
  if (overlay_store_owns (&o->store, b))
    r = owned_extent (o, offset, run_end, out);
  else
    {
      r = layer_extent (l->lower, offset, out);
      if (r == 0 && out->length > run_end - offset)
        out->length = run_end - offset;
    }
  pthread_rwlock_unlock (&o->store_lock);
  return r;
}

/* Layer callback: pass read-ahead hints to the layer below. */
static int
overlay_prefetch (struct layer *l, uint64_t offset, uint64_t length)
{
  layer_prefetch (l->lower, offset, length);
  return 0;
}

/* Layer callback: "overlay-..." lines for `diskshelf status`. */
static void
overlay_status (struct layer *l, FILE *out)
{
  struct overlay_layer *o = (struct overlay_layer *) l;
  struct stat st;
  uint64_t allocated = 0;

  pthread_rwlock_rdlock (&o->store_lock);
  if (o->store.persistent)
    fprintf (out, "overlay: %s\n", o->store.path);
  else
    fprintf (out, "overlay: discard (store in %s, dropped at the last"
             " close)\n", o->store.tmp_dir);
  if (o->store.fd >= 0 && fstat (o->store.fd, &st) == 0)
    allocated = (uint64_t) st.st_blocks * 512;
  fprintf (out, "overlay-written: %llu bytes\n",
           (unsigned long long) (overlay_store_owned (&o->store)
                                 * OVERLAY_BLOCK));
  fprintf (out, "overlay-allocated: %llu bytes\n",
           (unsigned long long) allocated);
  fprintf (out, "overlay-handles: %u\n",
           __atomic_load_n (&o->handles, __ATOMIC_ACQUIRE));
  if (!o->store.persistent)
    fprintf (out, "overlay-drops: %llu\n",
             (unsigned long long) o->drops);
  pthread_rwlock_unlock (&o->store_lock);
}

/* Layer callback: one more open file handle. */
static void
overlay_handle_opened (struct layer *l)
{
  struct overlay_layer *o = (struct overlay_layer *) l;

  __atomic_add_fetch (&o->handles, 1, __ATOMIC_ACQ_REL);
}

/* Layer callback: a handle went; the last one drops a discard store and
 * saves a persistent one's map. */
static void
overlay_handle_released (struct layer *l)
{
  struct overlay_layer *o = (struct overlay_layer *) l;

  if (__atomic_sub_fetch (&o->handles, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  if (o->store.persistent)
    {
      if (overlay_flush (l) < 0)
        {
          log_error ("%s", error_message ());
          error_clear ();
        }
      return;
    }
  pthread_rwlock_wrlock (&o->store_lock);
  /* Another open may have come in while we waited for the lock. */
  if (__atomic_load_n (&o->handles, __ATOMIC_ACQUIRE) == 0
      && o->store.fd >= 0)
    {
      overlay_store_drop (&o->store);
      o->drops++;
      log_info ("%s: overlay: last close, writes discarded", o->entry_name);
    }
  pthread_rwlock_unlock (&o->store_lock);
}

/* Layer callback: save a persistent map, close everything. */
static void
overlay_close (struct layer *l)
{
  struct overlay_layer *o = (struct overlay_layer *) l;

  if (overlay_store_sync (&o->store) < 0)
    {
      log_error ("%s", error_message ());
      error_clear ();
    }
  overlay_store_close (&o->store);
  for (int i = 0; i < OVERLAY_STRIPES; i++)
    pthread_mutex_destroy (&o->stripes[i]);
  pthread_rwlock_destroy (&o->store_lock);
  layer_close (l->lower);
  free (o->entry_name);
  free (o);
}

static const struct layer_ops overlay_ops = {
  .name = "overlay",
  .pread = overlay_pread,
  .pwrite = overlay_pwrite,
  .flush = overlay_flush,
  .trim = overlay_zero,
  .zero = overlay_zero,
  .extent = overlay_extent,
  .prefetch = overlay_prefetch,
  .status = overlay_status,
  .handle_opened = overlay_handle_opened,
  .handle_released = overlay_handle_released,
  .close = overlay_close,
};

/* What the overlay is for this entry: the key, else the daemon default;
 * *path is malloc'd for OVERLAY_FILE. */
static int
overlay_mode (const struct stack_context *ctx, char **path)
{
  const struct entry_config *e = ctx->entry;
  char *name, *q;

  *path = NULL;
  if (e->overlay == OVERLAY_FILE)
    {
      *path = strdup (e->overlay_path);
      return *path ? OVERLAY_FILE : -ENOMEM;
    }
  if (e->overlay != OVERLAY_UNSET)
    return e->overlay;
  if (ctx->options->overlay != OVERLAY_FILE)
    return ctx->options->overlay;
  /* --overlay=DIR: DIR/NAME.overlay, with the entry's slashes as %2F. */
  name = malloc (strlen (e->name) * 3 + 1);
  if (name == NULL)
    return -ENOMEM;
  q = name;
  for (const char *p = e->name; *p; p++)
    q = *p == '/' ? stpcpy (q, "%2F") : (*q = *p, q + 1);
  *q = '\0';
  if (asprintf (path, "%s/%s.overlay", ctx->options->overlay_dir, name) < 0)
    *path = NULL;
  free (name);
  return *path ? OVERLAY_FILE : -ENOMEM;
}

/* The identity text of the base below (hashed into a persistent
 * overlay's header) and a readable one-line form of it (kept there for
 * messages): source, member, then each layer's name, size and
 * validators. */
static int
describe_base (const struct stack_context *ctx, struct layer *lower,
               char **identity, char **desc)
{
  const struct entry_config *e = ctx->entry;
  char source[1024];
  char *layers = NULL;
  size_t len = 0, layers_len = 0;
  FILE *mem = open_memstream (identity, &len);
  FILE *lmem = open_memstream (&layers, &layers_len);

  if (mem == NULL || lmem == NULL)
    {
      if (mem)
        fclose (mem);
      if (lmem)
        fclose (lmem);
      free (*identity);
      free (layers);
      return error_set (ENOMEM, "overlay: out of memory");
    }
  if (e->source)
    fprintf (mem, "source: %s\n", e->source);
  else
    for (char **w = e->command; *w; w++)
      fprintf (mem, "command: %s\n", *w);
  if (e->member)
    fprintf (mem, "entry: %s\n", e->member);
  layer_identity (lower, mem);
  layer_identity (lower, lmem);
  fclose (mem);
  fclose (lmem);
  /* One line: "a\nb\n" -> "a; b" (a line ends with a space, which
   * is replaced in place: no growth). */
  for (char *p = layers; *p; p++)
    if (*p == '\n')
      *p = p[1] ? ';' : '\0';
  text_redact_url (e->source ? e->source : e->command[0], source,
                   sizeof source);
  if (asprintf (desc, "%s%s%s: %s", source, e->member ? " member " : "",
                e->member ? e->member : "", layers) < 0)
    *desc = NULL;
  free (layers);
  if (*desc == NULL)
    {
      free (*identity);
      return error_set (ENOMEM, "overlay: out of memory");
    }
  return 0;
}

/* Put an overlay on top of lower when the entry (or the daemon's
 * default) asks for one; *out is lower itself when not. */
int
layer_overlay_open (const struct stack_context *ctx, struct layer *lower,
                    struct layer **out)
{
  const struct daemon_options *opt = ctx->options;
  struct overlay_layer *o;
  char *path = NULL, *identity = NULL, *desc = NULL;
  int mode, r;

  *out = lower;
  if (ctx->entry->readonly == FLAG_YES || opt->readonly)
    return 0;
  mode = overlay_mode (ctx, &path);
  if (mode < 0)
    return error_set (ENOMEM, "overlay: out of memory");
  if (mode == OVERLAY_NONE)
    return 0;
  o = calloc (1, sizeof *o);
  if (o == NULL || (o->entry_name = strdup (ctx->entry->name)) == NULL)
    {
      free (o);
      free (path);
      return error_set (ENOMEM, "overlay: out of memory");
    }
  if (mode == OVERLAY_FILE)
    {
      r = describe_base (ctx, lower, &identity, &desc);
      if (r == 0)
        r = overlay_store_open_file (&o->store, path, lower->size, identity,
                                     desc);
      free (identity);
      free (desc);
    }
  else
    r = overlay_store_init_discard (&o->store, opt->cache_dir
                                    ? opt->cache_dir : "/var/tmp",
                                    lower->size);
  free (path);
  if (r < 0)
    {
      free (o->entry_name);
      free (o);
      return r;
    }
  pthread_rwlock_init (&o->store_lock, NULL);
  for (int i = 0; i < OVERLAY_STRIPES; i++)
    pthread_mutex_init (&o->stripes[i], NULL);
  o->layer.ops = &overlay_ops;
  o->layer.lower = lower;
  o->layer.size = lower->size;
  o->layer.writable = true;
  o->layer.immutable = false;
  *out = &o->layer;
  return 0;
}
