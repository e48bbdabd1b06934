/* diskshelf: entry facts remembered in the disk cache (see diskcache.h).
 *
 * File format, text: "diskshelf-entry 1\nsize N\nwritable 0|1\n"
 * "stack TEXT\n", then optionally "keep-open 1\n".  Anything else is
 * treated as absent. */
#include "diskcache-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "text.h"

#define ENTRY_MAGIC "diskshelf-entry 1\n"

/* CACHE_DIR/<32 hex digits of SHA-256("entry" NUL key)>.dse, malloc'd. */
static char *
entry_path (struct disk_cache *cache, const char *key)
{
  gnutls_hash_hd_t h;
  unsigned char digest[32];
  char hex[33], *path;

  if (gnutls_hash_init (&h, GNUTLS_DIG_SHA256) < 0)
    return NULL;
  gnutls_hash (h, "entry", 6);
  gnutls_hash (h, key, strlen (key));
  gnutls_hash_deinit (h, digest);
  for (int i = 0; i < 16; i++)
    snprintf (hex + 2 * i, 3, "%02x", digest[i]);
  if (asprintf (&path, "%s/%s.dse", cache->dir, hex) < 0)
    return NULL;
  return path;
}

/* Write the facts to a fresh temporary file and rename it into place. */
void
disk_cache_remember_entry (struct disk_cache *cache, const char *key,
                           const struct disk_cache_entry_facts *f)
{
  struct disk_cache_entry_facts old;
  char *path, *tmp = NULL, *text = NULL;
  int fd, len;

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
  if (len < 0 || asprintf (&tmp, "%s.tmp%ld", path, (long) getpid ()) < 0)
    goto out;
  unlink (tmp);
  fd = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
             0600);
  if (fd < 0)
    goto out;
  if (write (fd, text, (size_t) len) != len || close (fd) < 0
      || rename (tmp, path) < 0)
    unlink (tmp);
 out:
  free (text);
  free (tmp);
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
