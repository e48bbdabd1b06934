/* diskshelf: the overlay's store — the sparse file holding written
 * blocks, the map of which blocks it owns, and for a persistent overlay
 * the header that ties the file to its base and the durable map.
 *
 * Header (OVERLAY_HEADER_SIZE bytes, little-endian):
 *
 *   0    magic "DSOVRLY1"
 *   8    u32 version (1)
 *   12   u32 block size
 *   16   u64 image size
 *   24   u64 map offset
 *   32   u64 map bytes
 *   40   u64 data offset
 *   48   char[64] sha256 of the base's identity, hex
 *   112  char[384] readable description of the base, NUL-terminated
 *   496  u64 FNV-1a of bytes 0..495
 *
 * The header is written once, into a temporary file that is synced and
 * renamed into place, so a crash while creating leaves either no file
 * or a whole one. */
#include "overlay-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <limits.h>
#include <stdio.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the overlay map is written straight from memory: little-endian only"
#endif

static const char overlay_magic[8] = { 'D', 'S', 'O', 'V', 'R', 'L', 'Y', '1' };

#define HDR_VERSION 1
#define HDR_HASH 48
#define HDR_DESC 112
#define HDR_DESC_LEN 384
#define HDR_CHECK 496
#define DATA_ALIGN (1024 * 1024)

/* Store a little-endian u32 / u64 (the machine is little-endian). */
static void
put_u32 (unsigned char *p, uint32_t v)
{
  memcpy (p, &v, sizeof v);
}

static void
put_u64 (unsigned char *p, uint64_t v)
{
  memcpy (p, &v, sizeof v);
}

static uint32_t
get_u32 (const unsigned char *p)
{
  uint32_t v;
  memcpy (&v, p, sizeof v);
  return v;
}

static uint64_t
get_u64 (const unsigned char *p)
{
  uint64_t v;
  memcpy (&v, p, sizeof v);
  return v;
}

/* FNV-1a over the header, to tell a header from random bytes. */
static uint64_t
header_check (const unsigned char *p)
{
  uint64_t h = 0xcbf29ce484222325ULL;

  for (size_t i = 0; i < HDR_CHECK; i++)
    h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

/* The hex sha256 of the base's identity text. */
static int
identity_hash (const char *identity, char hex[65])
{
  unsigned char digest[32];

  if (gnutls_hash_fast (GNUTLS_DIG_SHA256, identity, strlen (identity),
                        digest) < 0)
    return error_set (EIO, "overlay: cannot hash the base's identity");
  for (int i = 0; i < 32; i++)
    snprintf (hex + 2 * i, 3, "%02x", digest[i]);
  return 0;
}

/* Sizes of the map and where the data starts, for an image size. */
static void
layout (struct overlay_store *s, uint64_t size)
{
  s->size = size;
  s->nblocks = (size + OVERLAY_BLOCK - 1) / OVERLAY_BLOCK;
  s->map_words = (size_t) ((s->nblocks + 63) / 64);
  if (s->map_words == 0)
    s->map_words = 1;
  s->map_bytes = ((uint64_t) s->map_words * 8 + OVERLAY_MAP_PAGE - 1)
                 / OVERLAY_MAP_PAGE * OVERLAY_MAP_PAGE;
  s->map_pages = (size_t) (s->map_bytes / OVERLAY_MAP_PAGE);
}

/* Allocate the in-memory map (whole pages, so they can be written out
 * straight from it). */
static int
alloc_map (struct overlay_store *s)
{
  s->map = calloc (1, s->map_bytes);
  s->dirty = calloc (s->map_pages ? s->map_pages : 1, 1);
  if (s->map == NULL || s->dirty == NULL)
    {
      free (s->map);
      free (s->dirty);
      s->map = NULL;
      s->dirty = NULL;
      return error_set (ENOMEM, "overlay: out of memory for the map of"
                        " %llu blocks", (unsigned long long) s->nblocks);
    }
  pthread_mutex_init (&s->flush_lock, NULL);
  return 0;
}

/* Read exactly count bytes at offset (short file: EIO). */
static int
read_full (int fd, void *buf, size_t count, uint64_t offset,
           const char *path)
{
  char *p = buf;

  while (count > 0)
    {
      ssize_t n = pread (fd, p, count, (off_t) offset);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return error_set (errno, "overlay: %s: read: %s", path,
                          strerror (errno));
      if (n == 0)
        return error_set (EIO, "overlay: %s: file is truncated; fix:"
                          " delete it to start a new overlay", path);
      p += n;
      count -= (size_t) n;
      offset += (uint64_t) n;
    }
  return 0;
}

/* Write exactly count bytes at offset. */
static int
write_full (int fd, const void *buf, size_t count, uint64_t offset,
            const char *path)
{
  int r = fd_pwrite_all (fd, buf, count, offset);

  return r < 0 ? error_prefix (-r, "overlay: %s", path) : 0;
}

/* Sync the directory holding path, so a rename in it is durable. */
static void
sync_parent (const char *path)
{
  char dir[PATH_MAX];
  char *slash;
  int fd;

  snprintf (dir, sizeof dir, "%s", path);
  slash = strrchr (dir, '/');
  if (slash == NULL)
    return;
  slash[slash == dir ? 1 : 0] = '\0';
  fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0)
    {
      fsync (fd);
      close (fd);
    }
}

/* Make a new overlay file at path: header + empty map, synced, then
 * renamed into place unless a file appeared there meanwhile (another
 * entry naming the same path), which is then left alone. */
static int
create_file (struct overlay_store *s, const char *path, const char *hash,
             const char *desc)
{
  unsigned char header[OVERLAY_HEADER_SIZE];
  char tmp[PATH_MAX];
  int fd, r;

  if (snprintf (tmp, sizeof tmp, "%s.XXXXXX", path) >= (int) sizeof tmp)
    return error_set (ENAMETOOLONG, "overlay: %s: path too long", path);
  memset (header, 0, sizeof header);
  memcpy (header, overlay_magic, sizeof overlay_magic);
  put_u32 (header + 8, HDR_VERSION);
  put_u32 (header + 12, OVERLAY_BLOCK);
  put_u64 (header + 16, s->size);
  put_u64 (header + 24, s->map_offset);
  put_u64 (header + 32, s->map_bytes);
  put_u64 (header + 40, s->data_offset);
  memcpy (header + HDR_HASH, hash, 64);
  snprintf ((char *) header + HDR_DESC, HDR_DESC_LEN, "%s", desc);
  put_u64 (header + HDR_CHECK, header_check (header));

  fd = mkostemp (tmp, O_CLOEXEC);
  if (fd < 0)
    return error_set (errno, "overlay: cannot create a file beside %s: %s",
                      path, strerror (errno));
  r = write_full (fd, header, sizeof header, 0, tmp);
  if (r == 0 && ftruncate (fd, (off_t) (s->data_offset + s->size)) < 0)
    r = error_set (errno, "overlay: %s: cannot size the file: %s", tmp,
                   strerror (errno));
  if (r == 0 && fsync (fd) < 0)
    r = error_set (errno, "overlay: %s: sync: %s", tmp, strerror (errno));
  close (fd);
  if (r == 0 && renameat2 (AT_FDCWD, tmp, AT_FDCWD, path,
                           RENAME_NOREPLACE) < 0)
    {
      struct stat st;
      if (errno == EEXIST && stat (path, &st) == 0 && st.st_size > 0)
        {
          unlink (tmp);
          return 0;       /* someone else's; opened and checked next */
        }
      /* An empty file made by touch, or no RENAME_NOREPLACE here. */
      if (rename (tmp, path) < 0)
        r = error_set (errno, "overlay: cannot rename %s to %s: %s", tmp,
                       path, strerror (errno));
    }
  if (r < 0)
    {
      unlink (tmp);
      return r;
    }
  sync_parent (path);
  log_info ("overlay: created %s", path);
  return 0;
}

/* Check an existing file's header against this base; load its map. */
static int
load_file (struct overlay_store *s, const char *path, const char *hash,
           const char *desc)
{
  unsigned char header[OVERLAY_HEADER_SIZE];
  char old_desc[HDR_DESC_LEN];
  struct stat st;

  memset (header, 0, sizeof header);
  if (pread (s->fd, header, sizeof header, 0) < 0)
    return error_set (errno, "overlay: %s: read: %s", path, strerror (errno));
  if (memcmp (header, overlay_magic, sizeof overlay_magic) != 0
      || get_u64 (header + HDR_CHECK) != header_check (header))
    return error_set (EINVAL, "overlay: %s is not a diskshelf overlay file"
                      " (or its header is damaged); fix: point `overlay ="
                      " at another path, or delete the file", path);
  if (get_u32 (header + 8) != HDR_VERSION
      || get_u32 (header + 12) != OVERLAY_BLOCK)
    return error_set (EINVAL, "overlay: %s: overlay format version %u"
                      " (block %u) is not supported by this diskshelf",
                      path, get_u32 (header + 8), get_u32 (header + 12));
  memcpy (old_desc, header + HDR_DESC, sizeof old_desc);
  old_desc[sizeof old_desc - 1] = '\0';
  if (get_u64 (header + 16) != s->size
      || memcmp (header + HDR_HASH, hash, 64) != 0)
    return error_set (EINVAL, "overlay: %s was made over another base"
                      " (%s; %llu bytes) than this entry now has (%s;"
                      " %llu bytes); refusing to mix two bases; fix: put"
                      " the original source back, or delete the overlay"
                      " file to start afresh", path, old_desc,
                      (unsigned long long) get_u64 (header + 16), desc,
                      (unsigned long long) s->size);
  if (get_u64 (header + 24) != s->map_offset
      || get_u64 (header + 32) != s->map_bytes
      || get_u64 (header + 40) != s->data_offset)
    return error_set (EINVAL, "overlay: %s: header layout is damaged; fix:"
                      " delete the file to start afresh", path);
  if (fstat (s->fd, &st) == 0
      && (uint64_t) st.st_size < s->data_offset + s->size
      && ftruncate (s->fd, (off_t) (s->data_offset + s->size)) < 0)
    return error_set (errno, "overlay: %s: cannot size the file: %s", path,
                      strerror (errno));
  return read_full (s->fd, s->map, s->map_bytes, s->map_offset, path);
}

/* Open or create a persistent overlay file. */
int
overlay_store_open_file (struct overlay_store *s, const char *path,
                         uint64_t size, const char *identity,
                         const char *desc)
{
  char hash[65];
  struct stat st;
  int r;

  memset (s, 0, sizeof *s);
  s->fd = -1;
  s->persistent = true;
  layout (s, size);
  s->map_offset = OVERLAY_HEADER_SIZE;
  s->data_offset = (OVERLAY_HEADER_SIZE + s->map_bytes + DATA_ALIGN - 1)
                   / DATA_ALIGN * DATA_ALIGN;
  r = identity_hash (identity, hash);
  if (r < 0)
    return r;
  s->path = strdup (path);
  if (s->path == NULL)
    return error_set (ENOMEM, "overlay: out of memory");
  r = alloc_map (s);
  if (r < 0)
    goto fail;
  /* An empty file (made by touch) is as good as none. */
  if (stat (path, &st) < 0 || st.st_size == 0)
    {
      r = create_file (s, path, hash, desc);
      if (r < 0)
        goto fail;
    }
  s->fd = open (path, O_RDWR | O_CLOEXEC);
  if (s->fd < 0)
    {
      r = error_set (errno, "overlay: cannot open %s: %s", path,
                     strerror (errno));
      goto fail;
    }
  if (flock (s->fd, LOCK_EX | LOCK_NB) < 0)
    {
      r = error_set (EBUSY, "overlay: %s is in use by another entry or"
                     " daemon; fix: give each entry its own overlay file",
                     path);
      goto fail;
    }
  r = load_file (s, path, hash, desc);
  if (r < 0)
    goto fail;
  return 0;

 fail:
  overlay_store_close (s);
  return r;
}

/* A discard store: nothing on disk until the first write. */
int
overlay_store_init_discard (struct overlay_store *s, const char *tmp_dir,
                            uint64_t size)
{
  memset (s, 0, sizeof *s);
  s->fd = -1;
  layout (s, size);
  s->tmp_dir = strdup (tmp_dir);
  if (s->tmp_dir == NULL)
    return error_set (ENOMEM, "overlay: out of memory");
  return alloc_map (s);
}

/* An unnamed file in dir: O_TMPFILE, or a named one unlinked at once. */
static int
open_unnamed (const char *dir)
{
  char name[PATH_MAX];
  int fd = open (dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL))
    {
      snprintf (name, sizeof name, "%s/diskshelf-overlay-XXXXXX", dir);
      fd = mkostemp (name, O_CLOEXEC);
      if (fd >= 0)
        unlink (name);
    }
  return fd;
}

/* Create the discard store's unnamed file: in the cache directory, else
 * in /var/tmp (where big temporary files belong). */
int
overlay_store_materialise (struct overlay_store *s)
{
  int fd;

  if (s->fd >= 0)
    return 0;
  fd = open_unnamed (s->tmp_dir);
  if (fd < 0 && strcmp (s->tmp_dir, "/var/tmp") != 0)
    {
      int saved = errno;
      fd = open_unnamed ("/var/tmp");
      if (fd < 0)
        errno = saved;
    }
  if (fd < 0)
    return error_set (errno, "overlay: cannot make a store in %s: %s; fix:"
                      " give --cache-dir a writable directory",
                      s->tmp_dir, strerror (errno));
  if (ftruncate (fd, (off_t) s->size) < 0)
    {
      int saved = errno;
      close (fd);
      return error_set (saved, "overlay: cannot size a store in %s: %s",
                        s->tmp_dir, strerror (saved));
    }
  s->fd = fd;
  return 0;
}

/* Forget a discard store's blocks and its file. */
void
overlay_store_drop (struct overlay_store *s)
{
  if (s->fd >= 0)
    close (s->fd);
  s->fd = -1;
  memset (s->map, 0, s->map_bytes);
}

/* Is block b the store's? */
bool
overlay_store_owns (const struct overlay_store *s, uint64_t b)
{
  uint64_t w = __atomic_load_n (&s->map[b / 64], __ATOMIC_ACQUIRE);

  return (w >> (b % 64)) & 1;
}

/* The end of the run of blocks owned like b, word by word. */
uint64_t
overlay_store_run_end (const struct overlay_store *s, uint64_t b,
                       uint64_t end)
{
  bool owned = overlay_store_owns (s, b);

  b++;
  while (b < end)
    {
      uint64_t w = __atomic_load_n (&s->map[b / 64], __ATOMIC_ACQUIRE);
      if (owned)
        w = ~w;
      w >>= b % 64;
      if (w != 0)
        {
          b += (uint64_t) __builtin_ctzll (w);
          return b < end ? b : end;
        }
      b = (b / 64 + 1) * 64;
    }
  return end;
}

/* Mark block b as the store's. */
void
overlay_store_claim (struct overlay_store *s, uint64_t b)
{
  __atomic_fetch_or (&s->map[b / 64], 1ULL << (b % 64), __ATOMIC_RELEASE);
  if (s->persistent)
    __atomic_store_n (&s->dirty[b / 8 / OVERLAY_MAP_PAGE], 1,
                      __ATOMIC_RELEASE);
}

/* Count the owned blocks. */
uint64_t
overlay_store_owned (const struct overlay_store *s)
{
  uint64_t n = 0;

  for (size_t i = 0; i < s->map_words; i++)
    n += (uint64_t) __builtin_popcountll (__atomic_load_n (&s->map[i],
                                                           __ATOMIC_ACQUIRE));
  return n;
}

/* Data first, then the changed map pages: a crash between the two
 * loses the new bits, never points a bit at unsynced bytes. */
int
overlay_store_sync (struct overlay_store *s)
{
  unsigned char *pages = NULL;
  size_t *which = NULL, n = 0;
  int r = 0;

  if (!s->persistent || s->fd < 0)
    return 0;
  pthread_mutex_lock (&s->flush_lock);
  for (size_t p = 0; p < s->map_pages; p++)
    if (__atomic_load_n (&s->dirty[p], __ATOMIC_ACQUIRE))
      n++;
  if (n > 0)
    {
      pages = malloc (n * OVERLAY_MAP_PAGE);
      which = malloc (n * sizeof *which);
      if (pages == NULL || which == NULL)
        {
          r = error_set (ENOMEM, "overlay: %s: out of memory", s->path);
          goto out;
        }
      n = 0;
      /* Snapshot the pages before syncing the data: every bit in the
       * snapshot was set after its block's bytes were written. */
      for (size_t p = 0; p < s->map_pages; p++)
        if (__atomic_exchange_n (&s->dirty[p], 0, __ATOMIC_ACQ_REL))
          {
            uint64_t *dst = (uint64_t *) (pages + n * OVERLAY_MAP_PAGE);
            const uint64_t *src = s->map + p * (OVERLAY_MAP_PAGE / 8);
            for (size_t i = 0; i < OVERLAY_MAP_PAGE / 8; i++)
              dst[i] = __atomic_load_n (&src[i], __ATOMIC_ACQUIRE);
            which[n++] = p;
          }
    }
  if (fdatasync (s->fd) < 0)
    {
      r = error_set (errno, "overlay: %s: sync: %s", s->path,
                     strerror (errno));
      goto redirty;
    }
  if (n == 0)
    goto out;
  for (size_t i = 0; i < n && r == 0; i++)
    r = write_full (s->fd, pages + i * OVERLAY_MAP_PAGE, OVERLAY_MAP_PAGE,
                    s->map_offset + which[i] * OVERLAY_MAP_PAGE, s->path);
  if (r == 0 && fdatasync (s->fd) < 0)
    r = error_set (errno, "overlay: %s: sync: %s", s->path,
                   strerror (errno));
 redirty:
  if (r < 0)
    for (size_t i = 0; i < n; i++)
      __atomic_store_n (&s->dirty[which[i]], 1, __ATOMIC_RELEASE);
 out:
  pthread_mutex_unlock (&s->flush_lock);
  free (pages);
  free (which);
  return r;
}

/* Close the file and free the map. */
void
overlay_store_close (struct overlay_store *s)
{
  if (s->fd >= 0)
    close (s->fd);
  s->fd = -1;
  if (s->map)
    pthread_mutex_destroy (&s->flush_lock);
  free (s->map);
  free (s->dirty);
  free (s->path);
  free (s->tmp_dir);
  s->map = NULL;
  s->dirty = NULL;
  s->path = s->tmp_dir = NULL;
}
