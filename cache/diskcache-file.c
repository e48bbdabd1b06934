/* diskshelf: the disk cache's object file format (see
 * diskcache-internal.h for the layout and the crash-safety rules). */
#include "diskcache-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DC_MAGIC "DSHLFDC1"
#define DC_FIXED_LEN 48     /* magic, version, header_len, 4 x u64 */
#define DC_MAX_HEADER (1024 * 1024)
#define DC_ALIGN 4096

/* Store v little-endian in n bytes at p. */
static void
put_le (uint8_t *p, uint64_t v, int n)
{
  for (int i = 0; i < n; i++)
    p[i] = (uint8_t) (v >> (8 * i));
}

/* Load an n-byte little-endian number from p. */
static uint64_t
get_le (const uint8_t *p, int n)
{
  uint64_t v = 0;

  for (int i = 0; i < n; i++)
    v |= (uint64_t) p[i] << (8 * i);
  return v;
}

/* FNV-1a over a byte range: enough to notice a torn header. */
static uint64_t
fnv1a (const uint8_t *p, size_t n)
{
  uint64_t h = 0xcbf29ce484222325ull;

  for (size_t i = 0; i < n; i++)
    {
      h ^= p[i];
      h *= 0x100000001b3ull;
    }
  return h;
}

/* Round v up to a multiple of DC_ALIGN. */
static uint64_t
align_up (uint64_t v)
{
  return (v + DC_ALIGN - 1) / DC_ALIGN * DC_ALIGN;
}

/* Where the bitmap starts and the metadata file ends for an object of
 * this size. */
void
dc_geometry (uint64_t size, size_t header_len, uint64_t *bitmap_off,
             uint64_t *meta_len)
{
  uint64_t nchunks = (size + DISK_CACHE_CHUNK - 1) / DISK_CACHE_CHUNK;

  *bitmap_off = align_up (header_len);
  *meta_len = *bitmap_off + align_up ((nchunks + 7) / 8);
}

/* The data file's path for the metadata file at path (NAME.dsc ->
 * NAME.dsd), malloc'd; NULL when out of memory. */
char *
dc_data_path (const char *path)
{
  size_t n = strlen (path);
  char *d = strdup (path);

  if (d != NULL && n > 0)
    d[n - 1] = 'd';
  return d;
}

/* Remove a cache file; for an object's metadata (.dsc) its data file
 * too, the metadata first, so that a crash in between leaves an orphan
 * data file (removed by the next scan), never set bits over missing
 * data.  Other files (.dse, .dsb) are alone. */
void
dc_file_unlink (const char *path)
{
  size_t n = strlen (path);
  char *data;

  unlink (path);
  if (n < 4 || strcmp (path + n - 4, ".dsc") != 0)
    return;
  data = dc_data_path (path);
  if (data != NULL)
    unlink (data);
  free (data);
}

/* Create (or empty) the data file of the object at path, size bytes of
 * hole, durably.  0 or a negative errno. */
static int
create_data_file (const char *path, uint64_t size)
{
  char *data = dc_data_path (path);
  int fd, r = 0;

  if (data == NULL)
    return -ENOMEM;
  /* O_TRUNC first: stale chunks must not survive under a new bitmap. */
  fd = open (data, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
             0600);
  if (fd < 0)
    r = -errno;
  else
    {
      if (ftruncate (fd, (off_t) size) < 0 || fsync (fd) < 0)
        r = -errno;
      close (fd);
    }
  free (data);
  return r;
}

/* Length of chunk index of an object of this size. */
uint64_t
dc_chunk_len (uint64_t size, uint64_t index)
{
  uint64_t start = index * DISK_CACHE_CHUNK;

  return size - start < DISK_CACHE_CHUNK ? size - start : DISK_CACHE_CHUNK;
}

/* Length of an optional string as stored (NULL is stored empty). */
static size_t
slen (const char *s)
{
  return s ? strlen (s) : 0;
}

/* Write the whole buffer at offset, retrying short writes. */
static int
pwrite_all (int fd, const void *buf, size_t n, off_t off)
{
  const char *p = buf;

  while (n > 0)
    {
      ssize_t r = pwrite (fd, p, n, off);
      if (r < 0)
        {
          if (errno == EINTR)
            continue;
          return -errno;
        }
      p += r;
      n -= (size_t) r;
      off += r;
    }
  return 0;
}

/* Read the whole buffer at offset; a short file is -EINVAL. */
static int
pread_all (int fd, void *buf, size_t n, off_t off)
{
  char *p = buf;

  while (n > 0)
    {
      ssize_t r = pread (fd, p, n, off);
      if (r < 0)
        {
          if (errno == EINTR)
            continue;
          return -errno;
        }
      if (r == 0)
        return -EINVAL;
      p += r;
      n -= (size_t) r;
      off += r;
    }
  return 0;
}

/* Create the object file at path for v with an empty bitmap, through a
 * temporary file renamed into place once durable; fills h's geometry. */
int
dc_file_create (const char *path, const struct disk_cache_validators *v,
                struct dc_header *h)
{
  const char *strs[4] = { v->kind, v->key, v->etag, v->last_modified };
  size_t header_len = DC_FIXED_LEN + 8;
  uint8_t *buf, *p;
  char *tmp;
  int fd, r;

  for (int i = 0; i < 4; i++)
    header_len += 4 + slen (strs[i]);
  if (header_len > DC_MAX_HEADER)
    return -ENAMETOOLONG;
  memset (h, 0, sizeof *h);
  h->size = v->size;
  dc_geometry (v->size, header_len, &h->bitmap_off, &h->meta_len);
  r = create_data_file (path, v->size);
  if (r < 0)
    return r;

  /* Only the header is written: the bitmap is left a hole (zeros) that
   * takes no disk until bits are set in it. */
  buf = calloc (1, header_len);
  if (buf == NULL)
    return -ENOMEM;
  memcpy (buf, DC_MAGIC, 8);
  put_le (buf + 8, DC_FORMAT_VERSION, 4);
  put_le (buf + 12, header_len, 4);
  put_le (buf + 16, v->size, 8);
  put_le (buf + 24, DISK_CACHE_CHUNK, 8);
  put_le (buf + 32, h->bitmap_off, 8);
  put_le (buf + 40, h->meta_len, 8);
  p = buf + DC_FIXED_LEN;
  for (int i = 0; i < 4; i++)
    {
      size_t n = slen (strs[i]);
      put_le (p, n, 4);
      if (n)
        memcpy (p + 4, strs[i], n);
      p += 4 + n;
    }
  put_le (p, fnv1a (buf, header_len - 8), 8);

  if (asprintf (&tmp, "%s.tmp%ld", path, (long) getpid ()) < 0)
    {
      free (buf);
      return -ENOMEM;
    }
  /* A fresh file of our own: never follow or reuse whatever sits at the
   * temporary name (a leftover, or a planted symlink), remove it once. */
  fd = open (tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST && unlink (tmp) == 0)
    fd = open (tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
               0600);
  if (fd < 0)
    {
      r = -errno;
      goto out;
    }
  r = pwrite_all (fd, buf, header_len, 0);
  if (r == 0 && ftruncate (fd, (off_t) h->meta_len) < 0)
    r = -errno;
  if (r == 0 && fsync (fd) < 0)
    r = -errno;
  close (fd);
  if (r == 0 && rename (tmp, path) < 0)
    r = -errno;
  if (r < 0)
    unlink (tmp);
 out:
  free (tmp);
  free (buf);
  return r;
}

/* Bytes an object file takes besides its chunks, as charged against the
 * bound: the header and one page of bitmap (the rest of the bitmap stays
 * a hole until bits are set there; at most one 4 KiB block per stored
 * chunk, which is not charged). */
uint64_t
dc_overhead (uint64_t bitmap_off, uint64_t meta_len)
{
  return meta_len - bitmap_off > DC_ALIGN ? bitmap_off + DC_ALIGN : meta_len;
}

/* Collect the indexes of the set bits of the bitmap, reading only the
 * parts of it that hold data (a fresh bitmap is a hole).  More than
 * max_present bytes of chunks, or a bit past the last chunk, is a
 * tampered file: -EINVAL. */
static int
load_bits (int fd, const struct dc_header *h, uint64_t max_present,
           uint64_t **out, size_t *nout)
{
  const size_t step = 64 * 1024;
  uint64_t nchunks = (h->size + DISK_CACHE_CHUNK - 1) / DISK_CACHE_CHUNK;
  uint64_t len = (nchunks + 7) / 8, pos = 0, bytes = 0;
  uint64_t *list = NULL;
  size_t n = 0, cap = 0;
  uint8_t *buf = malloc (step);
  int r = 0;

  if (buf == NULL)
    return -ENOMEM;
  while (pos < len && r == 0)
    {
      off_t d = lseek (fd, (off_t) (h->bitmap_off + pos), SEEK_DATA);
      size_t want;

      if (d < 0 && errno == ENXIO)
        break;                          /* only holes from here on */
      if (d >= 0)
        {
          if ((uint64_t) d >= h->bitmap_off + len)
            break;
          if ((uint64_t) d > h->bitmap_off + pos)
            pos = (uint64_t) d - h->bitmap_off;
        }
      want = len - pos < step ? (size_t) (len - pos) : step;
      r = pread_all (fd, buf, want, (off_t) (h->bitmap_off + pos));
      for (size_t j = 0; j < want && r == 0; j++)
        for (unsigned bit = 0; buf[j] && bit < 8; bit++)
          {
            uint64_t index = (pos + j) * 8 + bit;
            if (!(buf[j] & (1u << bit)))
              continue;
            if (index >= nchunks)
              {
                r = -EINVAL;
                break;
              }
            bytes += dc_chunk_len (h->size, index);
            if (bytes > max_present)
              {
                r = -EINVAL;
                break;
              }
            if (n == cap)
              {
                size_t ncap = cap ? cap * 2 : 64;
                uint64_t *grown = realloc (list, ncap * sizeof *grown);
                if (grown == NULL)
                  {
                    r = -ENOMEM;
                    break;
                  }
                list = grown;
                cap = ncap;
              }
            list[n++] = index;
          }
      pos += want;
    }
  free (buf);
  if (r < 0)
    {
      free (list);
      return r;
    }
  *out = list;
  *nout = n;
  return 0;
}

/* Read and check the header and bitmap of an object file.  Returns 0
 * with h filled and *present a malloc'd list of the *npresent chunks
 * whose bits are set (at most max_present bytes of them), or -EINVAL
 * for a torn, foreign or tampered file (the caller drops it), or
 * another negative errno. */
int
dc_file_load (int fd, struct dc_header *h, uint64_t max_present,
              uint64_t **present, size_t *npresent)
{
  uint8_t fixed[DC_FIXED_LEN], *buf = NULL, *p, *end;
  char **strs[4] = { &h->kind, &h->key, &h->etag, &h->last_modified };
  uint64_t header_len, bmo, dao;
  struct stat st;
  int r;

  memset (h, 0, sizeof *h);
  *present = NULL;
  *npresent = 0;
  r = pread_all (fd, fixed, sizeof fixed, 0);
  if (r < 0)
    return r;
  if (memcmp (fixed, DC_MAGIC, 8) != 0)
    return -EINVAL;
  if (get_le (fixed + 8, 4) != DC_FORMAT_VERSION)
    return -EPROTO;
  header_len = get_le (fixed + 12, 4);
  if (header_len < DC_FIXED_LEN + 8 + 16 || header_len > DC_MAX_HEADER
      || get_le (fixed + 24, 8) != DISK_CACHE_CHUNK)
    return -EINVAL;
  h->size = get_le (fixed + 16, 8);
  if (h->size > DISK_CACHE_MAX_SIZE)
    return -EINVAL;
  dc_geometry (h->size, header_len, &bmo, &dao);
  h->bitmap_off = get_le (fixed + 32, 8);
  h->meta_len = get_le (fixed + 40, 8);
  if (h->bitmap_off != bmo || h->meta_len != dao)
    return -EINVAL;
  if (fstat (fd, &st) < 0)
    return -errno;
  if ((uint64_t) st.st_size != h->meta_len)
    return -EINVAL;

  buf = malloc (header_len);
  if (buf == NULL)
    return -ENOMEM;
  r = pread_all (fd, buf, header_len, 0);
  if (r < 0)
    goto fail;
  r = -EINVAL;
  if (fnv1a (buf, header_len - 8) != get_le (buf + header_len - 8, 8))
    goto fail;
  p = buf + DC_FIXED_LEN;
  end = buf + header_len - 8;
  for (int i = 0; i < 4; i++)
    {
      uint64_t n;
      if (end - p < 4)
        goto fail;
      n = get_le (p, 4);
      p += 4;
      if ((uint64_t) (end - p) < n || memchr (p, 0, n) != NULL)
        goto fail;
      *strs[i] = strndup ((const char *) p, n);
      if (*strs[i] == NULL)
        {
          r = -ENOMEM;
          goto fail;
        }
      p += n;
    }
  if (p != end)
    goto fail;

  r = load_bits (fd, h, max_present, present, npresent);
  if (r < 0)
    goto fail;
  free (buf);
  return 0;

 fail:
  free (buf);
  dc_header_free (h);
  return r;
}

/* Free the strings of a header. */
void
dc_header_free (struct dc_header *h)
{
  free (h->kind);
  free (h->key);
  free (h->etag);
  free (h->last_modified);
  h->kind = h->key = h->etag = h->last_modified = NULL;
}

/* Compare two optional strings, NULL being the same as "". */
static bool
same (const char *a, const char *b)
{
  return strcmp (a ? a : "", b ? b : "") == 0;
}

/* True when the stored header describes the same object version as v. */
bool
dc_header_matches (const struct dc_header *h,
                   const struct disk_cache_validators *v)
{
  return h->size == v->size && same (h->kind, v->kind)
    && same (h->key, v->key) && same (h->etag, v->etag)
    && same (h->last_modified, v->last_modified);
}
