/* diskshelf: small files remembered in the disk cache beside its
 * objects (see diskcache.h): entry facts and blobs.
 *
 * Entry facts, text: "diskshelf-entry 1\nsize N\nwritable 0|1\n"
 * "stack TEXT\n", then optionally "keep-open 1\n".  Anything else is
 * treated as absent.
 *
 * Blobs: "diskshelf-blob 1\nKIND\nKEY\nLENGTH\n" then LENGTH bytes; a
 * file whose kind, key or length differ is treated as absent. */
#include "diskcache-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "text.h"

#define ENTRY_MAGIC "diskshelf-entry 1\n"
#define BLOB_MAGIC "diskshelf-blob 1\n"

/* CACHE_DIR/<32 hex digits of SHA-256(kind NUL key)>.EXT, malloc'd. */
static char *
small_path (struct disk_cache *cache, const char *kind, const char *key,
            const char *ext)
{
  gnutls_hash_hd_t h;
  unsigned char digest[32];
  char hex[33], *path;

  if (gnutls_hash_init (&h, GNUTLS_DIG_SHA256) < 0)
    return NULL;
  gnutls_hash (h, kind, strlen (kind) + 1);
  gnutls_hash (h, key, strlen (key));
  gnutls_hash_deinit (h, digest);
  for (int i = 0; i < 16; i++)
    snprintf (hex + 2 * i, 3, "%02x", digest[i]);
  if (asprintf (&path, "%s/%s.%s", cache->dir, hex, ext) < 0)
    return NULL;
  return path;
}

/* CACHE_DIR/<32 hex digits of SHA-256("entry" NUL key)>.dse, malloc'd. */
static char *
entry_path (struct disk_cache *cache, const char *key)
{
  return small_path (cache, "entry", key, "dse");
}

/* Write head then data to a fresh temporary file and rename it to path
 * (so a reader sees the old file or the whole new one).  Errors are
 * ignored: what is written here is a hint or a copy. */
static void
write_whole (struct disk_cache *cache, const char *path, const char *head,
             size_t head_len, const void *data, size_t len)
{
  char *tmp = NULL;
  int fd;

  if (asprintf (&tmp, "%s.tmp%ld", path, (long) getpid ()) < 0)
    return;
  unlink (tmp);
  fd = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
             0600);
  if (fd >= 0)
    {
      bool ok = fd_pwrite_all (fd, head, head_len, 0) == 0
                && (len == 0 || fd_pwrite_all (fd, data, len, head_len) == 0);
      if (close (fd) < 0 || !ok || rename (tmp, path) < 0)
        unlink (tmp);
      else
        dc_note_small_file (cache, path, head_len + len);
    }
  free (tmp);
}

/* Write the facts to a fresh temporary file and rename it into place. */
void
disk_cache_remember_entry (struct disk_cache *cache, const char *key,
                           const struct disk_cache_entry_facts *f)
{
  struct disk_cache_entry_facts old;
  char *path, *text = NULL;
  int len;

  if (cache == NULL || cache->disabled || key == NULL)
    return;
  if (disk_cache_recall_entry (cache, key, &old) == 0
      && old.size == f->size && old.writable == f->writable
      && strcmp (old.stack, f->stack) == 0 && old.keep_open == f->keep_open)
    return;                       /* nothing new: no write */
  path = entry_path (cache, key);
  if (path == NULL)
    return;
  len = asprintf (&text, ENTRY_MAGIC "size %" PRIu64 "\nwritable %d\n"
                  "stack %.*s\n%s", f->size, f->writable ? 1 : 0,
                  (int) strcspn (f->stack, "\n"), f->stack,
                  f->keep_open ? "keep-open 1\n" : "");
  if (len >= 0)
    write_whole (cache, path, text, (size_t) len, NULL, 0);
  free (text);
  free (path);
}

/* Read the facts back; any surprise means "not known". */
int
disk_cache_recall_entry (struct disk_cache *cache, const char *key,
                         struct disk_cache_entry_facts *out)
{
  char buf[512], *path, *p, *end;
  ssize_t n;
  int fd, writable;
  uint64_t size;

  memset (out, 0, sizeof *out);
  if (cache == NULL || cache->disabled || key == NULL
      || (path = entry_path (cache, key)) == NULL)
    return -ENOENT;
  fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  free (path);
  if (fd < 0)
    return -ENOENT;
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return -ENOENT;
  buf[n] = '\0';
  if (strncmp (buf, ENTRY_MAGIC, strlen (ENTRY_MAGIC)) != 0)
    return -ENOENT;
  p = buf + strlen (ENTRY_MAGIC);
  if (strncmp (p, "size ", 5) != 0)
    return -ENOENT;
  errno = 0;
  size = strtoull (p + 5, &end, 10);
  if (errno || end == p + 5 || *end != '\n' || size > DISK_CACHE_MAX_SIZE)
    return -ENOENT;
  p = end + 1;
  if (strncmp (p, "writable ", 9) != 0 || (p[9] != '0' && p[9] != '1')
      || p[10] != '\n')
    return -ENOENT;
  writable = p[9] == '1';
  p += 11;
  if (strncmp (p, "stack ", 6) != 0)
    return -ENOENT;
  p += 6;
  snprintf (out->stack, sizeof out->stack, "%.*s", (int) strcspn (p, "\n"),
            p);
  p += strcspn (p, "\n");
  if (*p == '\n' && strncmp (p + 1, "keep-open 1\n", 12) == 0)
    out->keep_open = true;
  out->size = size;
  out->writable = writable;
  return 0;
}

/* The header of a blob file for kind+key holding len bytes, malloc'd. */
static char *
blob_head (const char *kind, const char *key, size_t len, int *head_len)
{
  char *head;
  *head_len = asprintf (&head, BLOB_MAGIC "%s\n%s\n%zu\n", kind, key, len);
  return *head_len < 0 ? NULL : head;
}

void
disk_cache_remember_blob (struct disk_cache *cache, const char *kind,
                          const char *key, const void *data, size_t len)
{
  char *path, *head;
  int head_len;

  if (cache == NULL || cache->disabled || strchr (kind, '\n')
      || strchr (key, '\n'))
    return;
  path = small_path (cache, kind, key, "dsb");
  head = blob_head (kind, key, len, &head_len);
  if (path != NULL && head != NULL)
    write_whole (cache, path, head, (size_t) head_len, data, len);
  free (head);
  free (path);
}

int
disk_cache_recall_blob (struct disk_cache *cache, const char *kind,
                        const char *key, size_t max, uint8_t **data,
                        size_t *len)
{
  char *path, *head = NULL, *want = NULL;
  struct stat st;
  int fd, want_len, r = -ENOENT;

  *data = NULL;
  *len = 0;
  if (cache == NULL || cache->disabled
      || (path = small_path (cache, kind, key, "dsb")) == NULL)
    return -ENOENT;
  fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  free (path);
  if (fd < 0)
    return -ENOENT;
  /* The header names the length; the file must be exactly that long. */
  if (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode)
      || (uint64_t) st.st_size > (uint64_t) max + strlen (BLOB_MAGIC)
                                  + strlen (kind) + strlen (key) + 24)
    goto out;
  head = malloc ((size_t) st.st_size + 1);
  if (head == NULL
      || pread (fd, head, (size_t) st.st_size, 0) != st.st_size)
    goto out;
  head[st.st_size] = '\0';
  /* Header: magic, kind, key, then the length; strictly as written. */
  {
    char *p = head, *limit = head + st.st_size;
    for (int line = 0; line < 3 && p != NULL; line++)
      {
        char *nl = memchr (p, '\n', (size_t) (limit - p));
        p = nl ? nl + 1 : NULL;
      }
    if (p == NULL || *p < '0' || *p > '9')
      goto out;
    char *end;
    errno = 0;
    unsigned long long n = strtoull (p, &end, 10);
    if (errno || *end != '\n' || n > max)
      goto out;
    want = blob_head (kind, key, (size_t) n, &want_len);
    if (want == NULL || (off_t) want_len + (off_t) n != st.st_size
        || memcmp (head, want, (size_t) want_len) != 0)
      goto out;
    *data = malloc (n ? n : 1);
    if (*data == NULL)
      goto out;
    memcpy (*data, head + want_len, n);
    *len = n;
    r = 0;
  }
 out:
  free (want);
  free (head);
  close (fd);
  return r;
}
