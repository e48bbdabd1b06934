/* diskshelf: the persistent disk cache: the directory, objects, and the
 * lock-free read path.  Eviction and the flusher live in
 * diskcache-evict.c, the file format in diskcache-file.c. */
#include "diskcache-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "text.h"

/* Milliseconds of wall-clock time, cheap enough for every read. */
int64_t
dc_now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME_COARSE, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Add one closed object's file to the dormant list (lock held). */
static int
add_dormant (struct disk_cache *cache, char *path, uint64_t bytes,
             int64_t last_used_ms)
{
  if (cache->ndormant == cache->dormant_cap)
    {
      size_t cap = cache->dormant_cap ? cache->dormant_cap * 2 : 16;
      struct dc_dormant *d = realloc (cache->dormant, cap * sizeof *d);
      if (d == NULL)
        return -ENOMEM;
      cache->dormant = d;
      cache->dormant_cap = cap;
    }
  cache->dormant[cache->ndormant++] = (struct dc_dormant) {
    .path = path, .bytes = bytes, .last_used_ms = last_used_ms };
  return 0;
}

/* Count the bytes of the listed chunks of an object of this size. */
static uint64_t
listed_bytes (const uint64_t *index, size_t n, uint64_t size)
{
  uint64_t total = 0;

  for (size_t i = 0; i < n; i++)
    total += dc_chunk_len (size, index[i]);
  return total;
}

/* The page of records for chunk index, allocated when missing.  NULL
 * when out of memory. */
struct dc_page *
dc_page_make (struct disk_cache_object *obj, uint64_t index)
{
  struct dc_page *pg = dc_page_of (obj, index), *expected = NULL;

  if (pg)
    return pg;
  pg = calloc (1, sizeof *pg);
  if (pg == NULL)
    return NULL;
  if (atomic_compare_exchange_strong (&obj->pages[index / DC_PAGE_CHUNKS],
                                      &expected, pg))
    return pg;
  free (pg);                  /* another thread made it first */
  return expected;
}

/* True when the data file of the object at path exists with size bytes
 * (one that does not cannot back the bits of its metadata). */
static bool
data_file_fits (const char *path, uint64_t size)
{
  char *data = dc_data_path (path);
  struct stat st;
  bool fits;

  fits = data != NULL && lstat (data, &st) == 0 && S_ISREG (st.st_mode)
    && (uint64_t) st.st_size == size;
  free (data);
  return fits;
}

/* Look at every file of the cache dir: keep valid objects as dormant,
 * delete torn ones and leftover temporary files. */
static void
scan_dir (struct disk_cache *cache)
{
  DIR *d = opendir (cache->dir);
  struct dirent *de;

  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    {
      size_t n = strlen (de->d_name);
      struct dc_header h;
      struct stat st;
      uint64_t *present;
      size_t npresent;
      char *path;
      int fd, r;

      if (de->d_name[0] == '.' || strcmp (de->d_name, "lock") == 0)
        continue;
      if (asprintf (&path, "%s/%s", cache->dir, de->d_name) < 0)
        break;
      if (strstr (de->d_name, ".dsc.tmp") || strstr (de->d_name, ".dse.tmp")
          || strstr (de->d_name, ".dsb.tmp"))
        {
          /* A write cut short (the lock says no other daemon uses the
           * dir, so nobody is writing it now). */
          unlink (path);
          free (path);
          continue;
        }
      if (n > 4 && (strcmp (de->d_name + n - 4, ".dse") == 0
                    || strcmp (de->d_name + n - 4, ".dsb") == 0))
        {
          /* Entry facts and blobs count against the bound, and are
           * evicted like any dormant file. */
          if (lstat (path, &st) == 0 && S_ISREG (st.st_mode)
              && add_dormant (cache, path, (uint64_t) st.st_size,
                              (int64_t) st.st_mtim.tv_sec * 1000
                              + st.st_mtim.tv_nsec / 1000000) == 0)
            atomic_fetch_add (&cache->used, (uint64_t) st.st_size);
          else
            free (path);
          continue;
        }
      if (n >= 4 && strcmp (de->d_name + n - 4, ".dsd") == 0)
        {
          /* A data file whose metadata is gone: a crash while dropping. */
          path[strlen (path) - 1] = 'c';
          if (access (path, F_OK) < 0 && errno == ENOENT)
            {
              path[strlen (path) - 1] = 'd';
              unlink (path);
            }
          free (path);
          continue;
        }
      if (n < 4 || strcmp (de->d_name + n - 4, ".dsc") != 0)
        {
          free (path);
          continue;
        }
      fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0 || fstat (fd, &st) < 0)
        {
          if (fd >= 0)
            close (fd);
          free (path);
          continue;
        }
      r = dc_file_load (fd, &h, cache->max_bytes, &present, &npresent);
      if (r == 0 && !data_file_fits (path, h.size))
        {
          free (present);
          dc_header_free (&h);
          r = -EINVAL;
        }
      if (r < 0)
        {
          if (r == -EPROTO)
            log_info ("cache: %s: an older cache format, dropped", path);
          else
            log_warning ("cache: %s: invalid cache file (torn or foreign), "
                         "dropped", path);
          dc_file_unlink (path);
          close (fd);
          free (path);
          continue;
        }
      close (fd);
      {
        uint64_t bytes = dc_overhead (h.bitmap_off, h.meta_len)
          + listed_bytes (present, npresent, h.size);
        int64_t ms = (int64_t) st.st_mtim.tv_sec * 1000
          + st.st_mtim.tv_nsec / 1000000;
        if (add_dormant (cache, path, bytes, ms) == 0)
          atomic_fetch_add (&cache->used, bytes);
        else
          free (path);
      }
      free (present);
      dc_header_free (&h);
    }
  closedir (d);
}

/* Create dir and its parents with mode 0700. */
static int
mkdir_p (const char *dir)
{
  char *copy = strdup (dir);
  int r = 0;

  if (copy == NULL)
    return -ENOMEM;
  for (char *p = copy + 1; ; p++)
    {
      if (*p == '/' || *p == '\0')
        {
          char c = *p;
          *p = '\0';
          if (mkdir (copy, 0700) < 0 && errno != EEXIST)
            {
              r = -errno;
              break;
            }
          *p = c;
          if (c == '\0')
            break;
        }
    }
  free (copy);
  return r;
}

/* Refuse a cache dir that others could tamper with: owned by another
 * user, or writable by group or others (they could plant files and
 * symlinks, or read what is cached).  Returns 0, -EPERM with a message,
 * or another negative errno. */
static int
check_private (const char *dir)
{
  struct stat st;

  if (stat (dir, &st) < 0)
    return -errno;
  if (!S_ISDIR (st.st_mode))
    return -ENOTDIR;
  if (st.st_uid != geteuid ())
    return error_set (EPERM, "%s: owned by uid %u, not by this user "
                      "(uid %u)", dir, (unsigned) st.st_uid,
                      (unsigned) geteuid ());
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return error_set (EPERM, "%s: writable by %s (mode %04o)", dir,
                      st.st_mode & S_IWOTH ? "everyone" : "its group",
                      (unsigned) (st.st_mode & 07777));
  return 0;
}

/* Open the cache in dir.  An unusable dir gives a working cache that
 * stores nothing, with a warning: the cache never stops the daemon. */
int
disk_cache_new (const char *dir, uint64_t max_bytes, struct disk_cache **out)
{
  struct disk_cache *cache = calloc (1, sizeof *cache);
  char *lock_path = NULL;
  int r;

  if (cache == NULL || (cache->dir = strdup (dir)) == NULL)
    {
      free (cache);
      return error_set (ENOMEM, "cache: %s: out of memory", dir);
    }
  cache->max_bytes = max_bytes;
  cache->lock_fd = -1;
  pthread_mutex_init (&cache->lock, NULL);
  pthread_mutex_init (&cache->evict_lock, NULL);
  pthread_mutex_init (&cache->flush_lock, NULL);
  pthread_cond_init (&cache->flush_cond, NULL);
  pthread_cond_init (&cache->ready_cond, NULL);

  r = mkdir_p (dir);
  if (r == 0)
    r = check_private (dir);
  if (r == 0 && asprintf (&lock_path, "%s/lock", dir) < 0)
    r = -ENOMEM;
  if (r == 0)
    {
      cache->lock_fd = open (lock_path, O_RDWR | O_CREAT | O_NOFOLLOW
                             | O_CLOEXEC, 0600);
      if (cache->lock_fd < 0)
        r = -errno;
    }
  if (r == 0 && flock (cache->lock_fd, LOCK_EX | LOCK_NB) < 0)
    r = errno == EWOULDBLOCK ? -EBUSY : -errno;
  free (lock_path);
  if (r < 0)
    {
      if (r == -EPERM)
        log_warning ("cache: %s; remote data will not be cached (give "
                     "--cache-dir a directory of your own, mode 0700)",
                     error_message ());
      else
        log_warning ("cache: %s: %s; remote data will not be cached%s", dir,
                     r == -EBUSY ? "in use by another diskshelf"
                     : strerror (-r),
                     r == -EBUSY ? " (give each daemon its own --cache-dir)"
                     : " (check --cache-dir)");
      cache->disabled = true;
    }
  else
    {
      scan_dir (cache);
      if (atomic_load (&cache->used) > max_bytes)
        dc_evict_to (cache, DC_LOW_WATER (max_bytes));
    }
  *out = cache;
  return 0;
}

/* Free the cache; every object must be closed already. */
void
disk_cache_free (struct disk_cache *cache)
{
  if (cache == NULL)
    return;
  dc_flusher_stop (cache);
  for (size_t i = 0; i < cache->ndormant; i++)
    free (cache->dormant[i].path);
  free (cache->dormant);
  if (cache->lock_fd >= 0)
    close (cache->lock_fd);
  pthread_mutex_destroy (&cache->lock);
  pthread_mutex_destroy (&cache->evict_lock);
  pthread_mutex_destroy (&cache->flush_lock);
  pthread_cond_destroy (&cache->flush_cond);
  pthread_cond_destroy (&cache->ready_cond);
  free (cache->dir);
  free (cache);
}

/* The file name of an object: 32 hex digits of SHA-256(kind NUL key). */
static char *
object_path (struct disk_cache *cache, const struct disk_cache_validators *v)
{
  size_t kl = strlen (v->kind), nl = strlen (v->key);
  unsigned char digest[32];
  char hex[33], *buf, *path;

  buf = malloc (kl + 1 + nl);
  if (buf == NULL)
    return NULL;
  memcpy (buf, v->kind, kl + 1);
  memcpy (buf + kl + 1, v->key, nl);
  if (gnutls_hash_fast (GNUTLS_DIG_SHA256, buf, kl + 1 + nl, digest) < 0)
    {
      free (buf);
      return NULL;
    }
  free (buf);
  for (int i = 0; i < 16; i++)
    snprintf (hex + 2 * i, 3, "%02x", digest[i]);
  if (asprintf (&path, "%s/%s.dsc", cache->dir, hex) < 0)
    return NULL;
  return path;
}

/* Allocate the in-memory object with every chunk absent. */
static struct disk_cache_object *
object_alloc (struct disk_cache *cache, uint64_t size)
{
  struct disk_cache_object *obj = calloc (1, sizeof *obj);
  uint64_t n = (size + DISK_CACHE_CHUNK - 1) / DISK_CACHE_CHUNK;

  if (obj == NULL)
    return NULL;
  obj->cache = cache;
  obj->fd = -1;
  obj->meta_fd = -1;
  obj->refs = 1;
  obj->size = size;
  obj->nchunks = n;
  obj->npages = (n + DC_PAGE_CHUNKS - 1) / DC_PAGE_CHUNKS;
  obj->pages = calloc (obj->npages ? obj->npages : 1, sizeof *obj->pages);
  if (obj->pages == NULL)
    {
      free (obj);
      return NULL;
    }
  pthread_mutex_init (&obj->sync_lock, NULL);
  pthread_mutex_init (&obj->pin_lock, NULL);
  return obj;
}

/* The validators other than the key, as one comparable string. */
static char *
version_of (const struct disk_cache_validators *v)
{
  char *s;

  if (asprintf (&s, "%s\n%s", v->etag ? v->etag : "",
                v->last_modified ? v->last_modified : "") < 0)
    return NULL;
  return s;
}

/* Free the in-memory object (its file is already closed). */
static void
object_free (struct disk_cache_object *obj)
{
  pthread_mutex_destroy (&obj->sync_lock);
  pthread_mutex_destroy (&obj->pin_lock);
  free (obj->version);
  for (uint64_t k = 0; k < obj->npages; k++)
    free (atomic_load (&obj->pages[k]));
  free (obj->pages);
  free (obj->pending);
  free (obj->path);
  free (obj);
}

/* Warn once that the cache cannot store, naming the cause. */
static void
warn_unstored (struct disk_cache *cache, const char *what, int err)
{
  bool expected = false;

  if (atomic_compare_exchange_strong (&cache->warned, &expected, true))
    log_warning ("cache: %s: %s: %s; reading uncached", cache->dir, what,
                 strerror (err));
}

/* Take the dormant record for path if there is one (lock held); returns
 * its byte charge, or 0. */
static uint64_t
take_dormant (struct disk_cache *cache, const char *path)
{
  for (size_t i = 0; i < cache->ndormant; i++)
    if (strcmp (cache->dormant[i].path, path) == 0)
      {
        uint64_t bytes = cache->dormant[i].bytes;
        free (cache->dormant[i].path);
        cache->dormant[i] = cache->dormant[--cache->ndormant];
        return bytes;
      }
  return 0;
}

void
dc_note_small_file (struct disk_cache *cache, const char *path,
                    uint64_t bytes)
{
  char *copy = strdup (path);
  uint64_t before;

  pthread_mutex_lock (&cache->lock);
  before = take_dormant (cache, path);
  if (copy != NULL && add_dormant (cache, copy, bytes, dc_now_ms ()) == 0)
    atomic_fetch_add (&cache->used, bytes);
  else
    free (copy);
  pthread_mutex_unlock (&cache->lock);
  atomic_fetch_sub (&cache->used, before);
}

/* Open the data file of the object at path, checking it has the
 * object's size: the fd, or -1. */
static int
open_data_file (const char *path, uint64_t size)
{
  char *data = dc_data_path (path);
  struct stat st;
  int fd;

  if (data == NULL)
    return -1;
  fd = open (data, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  free (data);
  if (fd >= 0 && (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode)
                  || (uint64_t) st.st_size != size))
    {
      close (fd);
      fd = -1;
    }
  return fd;
}

/* Open the object's files, keeping its data when the validators match,
 * otherwise starting them afresh.  Returns 0 or a negative errno; on
 * failure obj stays unstored. */
static int
attach_file (struct disk_cache_object *obj,
             const struct disk_cache_validators *v, uint64_t charged)
{
  struct disk_cache *cache = obj->cache;
  struct dc_header h;
  uint64_t *present_list = NULL;
  size_t npresent = 0;
  int fd, data_fd = -1, r;

  fd = open (obj->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0)
    {
      r = dc_file_load (fd, &h, cache->max_bytes, &present_list, &npresent);
      if (r == 0 && dc_header_matches (&h, v))
        {
          data_fd = open_data_file (obj->path, h.size);
          if (data_fd >= 0)
            goto loaded;
        }
      if (r == 0)
        {
          char shown[512];
          text_redact_url (v->key, shown, sizeof shown);
          if (dc_header_matches (&h, v))
            log_warning ("cache: %s: the data file is missing or damaged;"
                         " dropping its cached data", shown);
          else
            log_info ("cache: %s: the remote object changed; dropping its "
                      "cached data", shown);
          dc_header_free (&h);
        }
      free (present_list);
      present_list = NULL;
      close (fd);
    }
  atomic_fetch_sub (&cache->used, charged);
  charged = 0;
  dc_file_unlink (obj->path);
  {
    uint64_t bo, ml;
    dc_geometry (v->size, 0, &bo, &ml);
    if (!dc_reserve (cache, dc_overhead (bo, ml) + 8192))
      return -ENOSPC;
    atomic_fetch_sub (&cache->used, dc_overhead (bo, ml) + 8192);
  }
  r = dc_file_create (obj->path, v, &h);
  if (r < 0)
    {
      dc_file_unlink (obj->path);
      return r;
    }
  fd = open (obj->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  r = dc_file_load (fd, &h, cache->max_bytes, &present_list, &npresent);
  if (r == 0)
    {
      data_fd = open_data_file (obj->path, h.size);
      if (data_fd < 0)
        {
          dc_header_free (&h);
          free (present_list);
          r = -EIO;
        }
    }
  if (r < 0)
    {
      close (fd);
      dc_file_unlink (obj->path);
      return r;
    }

 loaded:
  obj->fd = data_fd;
  obj->meta_fd = fd;
  obj->bitmap_off = h.bitmap_off;
  obj->meta_len = h.meta_len;
  obj->data_off = 0;
  {
    struct stat st;
    int64_t ms = dc_now_ms ();
    uint64_t present = 0;

    if (fstat (fd, &st) == 0)
      ms = (int64_t) st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    for (size_t k = 0; k < npresent; k++)
      {
        uint64_t i = present_list[k];
        size_t slot = i % DC_PAGE_CHUNKS;
        struct dc_page *pg = dc_page_make (obj, i);

        if (pg == NULL)
          continue;     /* out of memory: the chunk counts as absent */
        atomic_store (&pg->state[slot], DC_PRESENT);
        atomic_store (&pg->stamp[slot], ms);
        pg->disk_bits[slot / 8] |= (uint8_t) (1u << (slot % 8));
        present += dc_chunk_len (obj->size, i);
      }
    atomic_store (&obj->present, present);
    /* Replace the old charge by what the file holds now. */
    atomic_fetch_add (&cache->used,
                      dc_overhead (h.bitmap_off, h.meta_len) + present);
    atomic_fetch_sub (&cache->used, charged);
  }
  free (present_list);
  dc_header_free (&h);
  return 0;
}

/* Open (sharing an already open one) the object described by v. */
int
disk_cache_open_object (struct disk_cache *cache,
                        const struct disk_cache_validators *v,
                        struct disk_cache_object **out)
{
  struct disk_cache_object *obj;
  uint64_t charged;
  char *path, *version;
  int r;

  if (v->size > DISK_CACHE_MAX_SIZE)
    return error_set (EFBIG, "cache: a %s object of %llu bytes is larger "
                      "than the %llu bytes the cache takes", v->kind,
                      (unsigned long long) v->size,
                      (unsigned long long) DISK_CACHE_MAX_SIZE);
  if (cache->disabled)
    {
      obj = object_alloc (cache, v->size);
      if (obj == NULL)
        return error_set (ENOMEM, "cache: out of memory");
      *out = obj;
      return 0;
    }
  path = object_path (cache, v);
  version = version_of (v);
  if (path == NULL || version == NULL)
    {
      free (path);
      free (version);
      return error_set (ENOMEM, "cache: out of memory");
    }

  pthread_mutex_lock (&cache->lock);
  for (obj = cache->open; obj; obj = obj->next)
    if (strcmp (obj->path, path) == 0)
      break;
  if (obj && obj->size == v->size && obj->version && version
      && strcmp (obj->version, version) == 0)
    {
      /* Another entry reads the same object: share it, once its opener
       * has attached the file. */
      obj->refs++;
      while (!obj->ready)
        pthread_cond_wait (&cache->ready_cond, &cache->lock);
      pthread_mutex_unlock (&cache->lock);
      free (path);
      free (version);
      *out = obj;
      return 0;
    }
  if (obj)
    {
      /* Same key, another version, both open (an entry reopened after
       * the object changed while the old one is still in use): the new
       * one stays uncached until the old one is closed. */
      pthread_mutex_unlock (&cache->lock);
      free (path);
      free (version);
      obj = object_alloc (cache, v->size);
      if (obj == NULL)
        return error_set (ENOMEM, "cache: out of memory");
      obj->ready = true;
      *out = obj;
      return 0;
    }
  obj = object_alloc (cache, v->size);
  if (obj == NULL)
    {
      pthread_mutex_unlock (&cache->lock);
      free (path);
      free (version);
      return error_set (ENOMEM, "cache: out of memory");
    }
  charged = take_dormant (cache, path);
  obj->path = path;
  obj->version = version;
  obj->next = cache->open;
  cache->open = obj;
  pthread_mutex_unlock (&cache->lock);

  /* Outside the lock: attaching may evict, which takes the lock. */
  r = attach_file (obj, v, charged);
  if (r < 0)
    warn_unstored (cache, "cannot create a cache file", -r);

  pthread_mutex_lock (&cache->lock);
  obj->ready = true;
  pthread_cond_broadcast (&cache->ready_cond);
  pthread_mutex_unlock (&cache->lock);
  *out = obj;
  return 0;
}

/* Drop a reference; the last one writes pending bits, stamps the file
 * and turns it into a dormant record. */
void
dc_object_unref (struct disk_cache_object *obj)
{
  struct disk_cache *cache = obj->cache;
  char *dormant_path = NULL;

  pthread_mutex_lock (&cache->lock);
  if (--obj->refs > 0)
    {
      pthread_mutex_unlock (&cache->lock);
      return;
    }
  for (struct disk_cache_object **p = &cache->open; *p; p = &(*p)->next)
    if (*p == obj)
      {
        *p = obj->next;
        break;
      }
  if (obj->fd >= 0)
    {
      uint64_t bytes = dc_overhead (obj->bitmap_off, obj->meta_len)
        + atomic_load (&obj->present);
      dormant_path = strdup (obj->path);
      if (dormant_path == NULL
          || add_dormant (cache, dormant_path, bytes, dc_now_ms ()) < 0)
        {
          /* Cannot remember it: forget the files and their charge. */
          free (dormant_path);
          dc_file_unlink (obj->path);
          atomic_fetch_sub (&cache->used, bytes);
        }
    }
  pthread_mutex_unlock (&cache->lock);

  if (obj->fd >= 0)
    {
      dc_flush_object (obj);
      futimens (obj->meta_fd, NULL);
      close (obj->meta_fd);
      close (obj->fd);
    }
  object_free (obj);
}

/* Close an object opened by disk_cache_open_object. */
void
disk_cache_close_object (struct disk_cache_object *obj)
{
  if (obj)
    dc_object_unref (obj);
}

/* Read whole from the data file; any failure counts as a miss. */
static bool
read_data (struct disk_cache_object *obj, char *buf, size_t n, uint64_t off)
{
  while (n > 0)
    {
      ssize_t r = pread (obj->fd, buf, n, (off_t) (obj->data_off + off));
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        return false;
      buf += r;
      n -= (size_t) r;
      off += (uint64_t) r;
    }
  return true;
}

/* Copy a range out of the cache when every chunk of it is present.  No
 * lock: each chunk is pinned, and its state checked before and after
 * the pread, so an eviction in between turns into a miss. */
int
disk_cache_read (struct disk_cache_object *obj, void *buf, size_t count,
                 uint64_t offset)
{
  char *p = buf;
  int64_t now;

  if (obj->fd < 0 || offset > obj->size || count > obj->size - offset)
    return -ENODATA;
  now = dc_now_ms ();
  while (count > 0)
    {
      uint64_t i = offset / DISK_CACHE_CHUNK;
      uint64_t in = offset % DISK_CACHE_CHUNK;
      size_t n = DISK_CACHE_CHUNK - in < count ? DISK_CACHE_CHUNK - in
        : count;
      struct dc_page *pg = dc_page_of (obj, i);
      size_t slot = i % DC_PAGE_CHUNKS;
      uint32_t before, after;
      bool ok;

      if (pg == NULL)
        return -ENODATA;
      atomic_fetch_add (&pg->pins[slot], 1);
      before = atomic_load (&pg->state[slot]);
      ok = (before & DC_PRESENT) && read_data (obj, p, n, offset);
      after = atomic_load (&pg->state[slot]);
      atomic_fetch_sub (&pg->pins[slot], 1);
      if (!ok || before != after)
        return -ENODATA;
      if (atomic_load_explicit (&pg->stamp[slot], memory_order_relaxed)
          != now)
        atomic_store_explicit (&pg->stamp[slot], now, memory_order_relaxed);
      p += n;
      offset += n;
      count -= n;
    }
  return 0;
}

/* Pin a complete object whole and lend its data file (see the header). */
int
disk_cache_pin_whole (struct disk_cache_object *obj, int *fd)
{
  int64_t now = dc_now_ms ();
  int r = 0;

  if (obj->fd < 0 || atomic_load (&obj->present) != obj->size)
    return -ENODATA;
  pthread_mutex_lock (&obj->pin_lock);
  /* Under pin_lock no eviction drops a chunk of this object, so what is
   * present now stays present while the pin is held. */
  for (uint64_t i = 0; i < obj->nchunks; i++)
    {
      struct dc_page *pg = dc_page_of (obj, i);
      uint32_t s = pg ? atomic_load (&pg->state[i % DC_PAGE_CHUNKS]) : 0;

      if (!(s & DC_PRESENT) || (s & DC_WRITING))
        {
          r = -ENODATA;
          break;
        }
      atomic_store_explicit (&pg->stamp[i % DC_PAGE_CHUNKS], now,
                             memory_order_relaxed);
    }
  if (r == 0)
    {
      obj->whole_pins++;
      *fd = obj->fd;
    }
  pthread_mutex_unlock (&obj->pin_lock);
  return r;
}

static void drop_every_chunk (struct disk_cache_object *obj);

/* Drop a pin taken by disk_cache_pin_whole; the last one carries out an
 * invalidation that came while the object was lent. */
void
disk_cache_unpin_whole (struct disk_cache_object *obj)
{
  pthread_mutex_lock (&obj->pin_lock);
  if (obj->whole_pins > 0)
    obj->whole_pins--;
  if (obj->whole_pins == 0 && obj->drop_at_unpin)
    {
      obj->drop_at_unpin = false;
      drop_every_chunk (obj);
    }
  pthread_mutex_unlock (&obj->pin_lock);
}

/* True when every chunk overlapping the range is present. */
bool
disk_cache_has (struct disk_cache_object *obj, uint64_t offset,
                uint64_t count)
{
  uint64_t first, last;

  if (obj->fd < 0 || offset > obj->size || count > obj->size - offset)
    return false;
  if (count == 0)
    return true;
  first = offset / DISK_CACHE_CHUNK;
  last = (offset + count - 1) / DISK_CACHE_CHUNK;
  for (uint64_t i = first; i <= last; i++)
    if (!(dc_state (obj, i) & DC_PRESENT))
      return false;
  return true;
}

/* Write all of parts[0..nparts) (len bytes in all) at off, resuming
 * after short writes; 0 or an errno (ENOSPC for a write of nothing). */
static int
pwritev_all (int fd, const struct iovec *parts, int nparts, uint64_t len,
             off_t off)
{
  struct iovec iov[DISK_CACHE_MAX_PARTS];
  int n = nparts, k = 0;
  uint64_t done = 0;

  memcpy (iov, parts, (size_t) nparts * sizeof *iov);
  while (done < len)
    {
      ssize_t r = pwritev (fd, iov + k, n - k, off + (off_t) done);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        return r < 0 ? errno : ENOSPC;
      done += (uint64_t) r;
      /* Skip what was written. */
      while (k < n && (size_t) r >= iov[k].iov_len)
        r -= (ssize_t) iov[k++].iov_len;
      if (k < n)
        {
          iov[k].iov_base = (char *) iov[k].iov_base + r;
          iov[k].iov_len -= (size_t) r;
        }
    }
  return 0;
}

/* Write one chunk's data, given in parts (len bytes in all); false on
 * failure (the chunk stays absent). */
static bool
write_chunk (struct disk_cache_object *obj, uint64_t i,
             const struct iovec *parts, int nparts, uint64_t len,
             unsigned flags)
{
  struct disk_cache *cache = obj->cache;
  struct dc_page *pg = dc_page_make (obj, i);
  size_t slot = i % DC_PAGE_CHUNKS;
  uint64_t off = i * DISK_CACHE_CHUNK;
  uint32_t s;
  int err;

  if (pg == NULL)
    return false;
  s = atomic_load (&pg->state[slot]);
  if (s & (DC_PRESENT | DC_WRITING))
    return true;
  if (!atomic_compare_exchange_strong (&pg->state[slot], &s, s | DC_WRITING))
    return true;
  if (!dc_reserve (cache, len))
    {
      atomic_store (&pg->state[slot], s);
      return false;
    }
  err = pwritev_all (obj->fd, parts, nparts, len,
                     (off_t) (obj->data_off + off));
  if (err != 0)
    {
      fallocate (obj->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 (off_t) (obj->data_off + off), (off_t) len);
      atomic_store (&pg->state[slot], s);
      atomic_fetch_sub (&cache->used, len);
      warn_unstored (cache, "cannot write", err);
      atomic_store (&cache->write_pause_until_ms, dc_now_ms () + 5000);
      return false;
    }
  atomic_store (&pg->stamp[slot], dc_now_ms ());
  atomic_fetch_add (&obj->present, len);
  pthread_mutex_lock (&obj->sync_lock);
  if (obj->npending == obj->pending_cap)
    {
      size_t cap = obj->pending_cap ? obj->pending_cap * 2 : 64;
      struct dc_pending *np = realloc (obj->pending, cap * sizeof *np);
      if (np == NULL)
        {
          /* Cannot track it for the bitmap: give the chunk up. */
          pthread_mutex_unlock (&obj->sync_lock);
          atomic_fetch_sub (&obj->present, len);
          atomic_fetch_sub (&cache->used, len);
          atomic_store (&pg->state[slot], s + DC_VERSION_STEP);
          return false;
        }
      obj->pending = np;
      obj->pending_cap = cap;
    }
  obj->pending[obj->npending++] = (struct dc_pending) {
    .index = i, .state = s | DC_PRESENT,
    .streamed = (flags & DISK_CACHE_STREAMED) != 0 };
  atomic_store (&pg->state[slot], s | DC_PRESENT);
  pthread_mutex_unlock (&obj->sync_lock);
  dc_flusher_kick (cache, len);
  return true;
}

/* Store whole chunks; failures only mean the data is not kept. */
int
disk_cache_write (struct disk_cache_object *obj, const void *buf,
                  size_t count, uint64_t offset, unsigned flags)
{
  const char *p = buf;

  if (offset % DISK_CACHE_CHUNK != 0 || offset > obj->size
      || count > obj->size - offset
      || (count % DISK_CACHE_CHUNK != 0 && offset + count != obj->size))
    return error_set (EINVAL, "cache: write of %zu bytes at %llu is not "
                      "whole chunks", count, (unsigned long long) offset);
  if (obj->fd < 0 || dc_now_ms () < atomic_load (&obj->cache->write_pause_until_ms))
    return 0;
  while (count > 0)
    {
      uint64_t i = offset / DISK_CACHE_CHUNK;
      uint64_t len = dc_chunk_len (obj->size, i);

      struct iovec part = { (void *) p, len };
      if (!write_chunk (obj, i, &part, 1, len, flags))
        break;
      p += len;
      offset += len;
      count -= len;
    }
  return 0;
}

/* Store one whole chunk given in parts (see diskcache.h). */
int
disk_cache_write_parts (struct disk_cache_object *obj,
                        const struct iovec *parts, int nparts,
                        uint64_t offset, unsigned flags)
{
  uint64_t i = offset / DISK_CACHE_CHUNK, len = 0;

  for (int k = 0; k < nparts; k++)
    len += parts[k].iov_len;
  if (offset % DISK_CACHE_CHUNK != 0 || offset >= obj->size
      || nparts < 1 || nparts > DISK_CACHE_MAX_PARTS
      || len != dc_chunk_len (obj->size, i))
    return error_set (EINVAL, "cache: write of %llu bytes in %d parts at "
                      "%llu is not one whole chunk", (unsigned long long) len,
                      nparts, (unsigned long long) offset);
  if (obj->fd < 0 || dc_now_ms () < atomic_load (&obj->cache->write_pause_until_ms))
    return 0;
  write_chunk (obj, i, parts, nparts, len, flags);
  return 0;
}

/* Drop every chunk of the object; pin_lock held. */
static void
drop_every_chunk (struct disk_cache_object *obj)
{
  uint64_t *idx;
  uint32_t *exp;
  size_t n = 0, cap = 0;

  for (uint64_t k = 0; k < obj->npages; k++)
    if (atomic_load (&obj->pages[k]))
      cap += DC_PAGE_CHUNKS;
  idx = malloc (cap * sizeof *idx + 1);
  exp = malloc (cap * sizeof *exp + 1);
  if (idx && exp)
    {
      for (uint64_t k = 0; k < obj->npages; k++)
        {
          struct dc_page *pg = atomic_load (&obj->pages[k]);
          for (size_t slot = 0; pg && slot < DC_PAGE_CHUNKS; slot++)
            {
              uint32_t s = atomic_load (&pg->state[slot]);
              if ((s & DC_PRESENT) && n < cap)
                {
                  idx[n] = k * DC_PAGE_CHUNKS + slot;
                  exp[n++] = s;
                }
            }
        }
      dc_drop_chunks (obj, idx, exp, n);
    }
  free (idx);
  free (exp);
}

/* Drop every chunk of the object (its remote copy changed).  An object
 * lent whole keeps its chunks until the last borrower is done: the
 * kernel reads that data file itself, and dropping chunks under it
 * would turn the old bytes into zeros instead of keeping them (the
 * daemon's own reads of a changed object fail; it lends it no more). */
void
disk_cache_invalidate (struct disk_cache_object *obj)
{
  if (obj->fd < 0)
    return;
  pthread_mutex_lock (&obj->pin_lock);
  if (obj->whole_pins > 0)
    obj->drop_at_unpin = true;
  else
    drop_every_chunk (obj);
  pthread_mutex_unlock (&obj->pin_lock);
}

/* Bytes of this object present in the cache. */
uint64_t
disk_cache_object_present (struct disk_cache_object *obj)
{
  return atomic_load (&obj->present);
}

/* Bytes charged against the bound for the whole cache. */
uint64_t
disk_cache_used (struct disk_cache *cache)
{
  return atomic_load (&cache->used);
}

/* "cache: ..." status lines for one object. */
void
disk_cache_object_status (struct disk_cache_object *obj, FILE *out)
{
  struct disk_cache *cache = obj->cache;

  if (obj->fd < 0)
    {
      fprintf (out, "cache: off\n");
      return;
    }
  fprintf (out, "cache: %s\n", cache->dir);
  fprintf (out, "cache-present: %llu of %llu bytes\n",
           (unsigned long long) atomic_load (&obj->present),
           (unsigned long long) obj->size);
  fprintf (out, "cache-used: %llu of %llu bytes\n",
           (unsigned long long) atomic_load (&cache->used),
           (unsigned long long) cache->max_bytes);
}
