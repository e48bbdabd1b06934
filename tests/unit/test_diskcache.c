/* Unit test of the disk cache (cache/diskcache.h): store and read back,
 * persistence across a reopen, validator changes, the size bound, torn
 * files, concurrent readers racing eviction, an unusable dir, and the
 * data file lent whole (layout, pin against eviction, orphans). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <gnutls/crypto.h>

#include "diskcache.h"

#define CHUNK DISK_CACHE_CHUNK

#include "check.h"

/* The test pattern: a byte that depends on the offset and a seed. */
static void
fill (char *buf, size_t n, uint64_t off, unsigned seed)
{
  for (size_t i = 0; i < n; i++)
    buf[i] = (char) ((off + i) * 2654435761u >> 13) ^ (char) seed;
}

/* Remove every file of dir and dir itself. */
static void
rm_rf (const char *dir)
{
  char cmd[4200];

  snprintf (cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system (cmd) != 0)
    fprintf (stderr, "cleanup of %s failed\n", dir);
}

/* Count the files of dir (hidden ones too) whose name matches the
 * grep regex pattern. */
static int
count_matching (const char *dir, const char *pattern)
{
  char cmd[4200];
  FILE *f;
  int n = -1;

  snprintf (cmd, sizeof cmd, "ls -a '%s' | grep -c -e '%s'", dir, pattern);
  f = popen (cmd, "r");
  if (f)
    {
      if (fscanf (f, "%d", &n) != 1)
        n = -1;
      pclose (f);
    }
  return n;
}

/* Count the files ending in .dsc in dir. */
static int
count_objects (const char *dir)
{
  return count_matching (dir, "\\.dsc$");
}

/* Write chunks [first, last) of an object with the pattern. */
static void
store (struct disk_cache_object *obj, uint64_t size, uint64_t first,
       uint64_t last, unsigned seed)
{
  char *buf = malloc (CHUNK);

  for (uint64_t i = first; i < last; i++)
    {
      uint64_t off = i * CHUNK;
      size_t n = size - off < CHUNK ? size - off : CHUNK;
      fill (buf, n, off, seed);
      CHECK (disk_cache_write (obj, buf, n, off, 0) == 0);
    }
  free (buf);
}

/* Read [off, off+n) and compare it with the pattern. */
static int
read_check (struct disk_cache_object *obj, uint64_t off, size_t n,
            unsigned seed)
{
  char *got = malloc (n), *want = malloc (n);
  int r = disk_cache_read (obj, got, n, off);

  fill (want, n, off, seed);
  if (r == 0 && memcmp (got, want, n) != 0)
    r = -EBADMSG;
  free (got);
  free (want);
  return r;
}

static void
test_basic_and_reopen (const char *dir)
{
  uint64_t size = 5 * CHUNK + 1234;
  struct disk_cache_validators v = { "http", "http://x/a.img", size,
                                     "\"e1\"", "Mon" };
  struct disk_cache *c;
  struct disk_cache_object *o;

  CHECK (disk_cache_new (dir, 64 * CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  CHECK (disk_cache_read (o, (char[16]) {0}, 16, 0) == -ENODATA);
  store (o, size, 0, 2, 1);
  store (o, size, 5, 6, 1);      /* the short last chunk */
  CHECK (disk_cache_has (o, 0, 2 * CHUNK));
  CHECK (!disk_cache_has (o, 0, 2 * CHUNK + 1));
  CHECK (read_check (o, 100, CHUNK + 500, 1) == 0);
  CHECK (read_check (o, 5 * CHUNK, 1234, 1) == 0);
  CHECK (read_check (o, 2 * CHUNK - 10, 20, 1) == -ENODATA);
  CHECK (disk_cache_object_present (o) == 2 * CHUNK + 1234);
  /* The same key in another version, opened while this one is open,
   * never sees this version's data. */
  {
    struct disk_cache_validators v2 = v;
    struct disk_cache_object *o2;
    v2.etag = "\"other\"";
    CHECK (disk_cache_open_object (c, &v2, &o2) == 0);
    CHECK (disk_cache_read (o2, (char[16]) {0}, 16, 0) == -ENODATA);
    store (o2, size, 2, 3, 9);
    CHECK (read_check (o, 2 * CHUNK, 16, 1) == -ENODATA);
    disk_cache_close_object (o2);
  }
  /* Not whole chunks: refused. */
  CHECK (disk_cache_write (o, "x", 1, 0, 0) == -EINVAL);
  disk_cache_close_object (o);
  disk_cache_free (c);

  /* Same validators after a restart: data still there. */
  CHECK (disk_cache_new (dir, 64 * CHUNK, &c) == 0);
  CHECK (disk_cache_used (c) >= 2 * CHUNK + 1234);
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  CHECK (read_check (o, 0, 2 * CHUNK, 1) == 0);
  CHECK (read_check (o, 5 * CHUNK, 1234, 1) == 0);
  disk_cache_close_object (o);

  /* Changed ETag: old data dropped. */
  v.etag = "\"e2\"";
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  CHECK (disk_cache_read (o, (char[16]) {0}, 16, 0) == -ENODATA);
  CHECK (disk_cache_object_present (o) == 0);
  store (o, size, 0, 1, 2);
  CHECK (read_check (o, 0, CHUNK, 2) == 0);
  disk_cache_invalidate (o);
  CHECK (disk_cache_read (o, (char[16]) {0}, 16, 0) == -ENODATA);
  disk_cache_close_object (o);
  disk_cache_free (c);
}

static void
test_bound (const char *dir)
{
  uint64_t size = 40 * CHUNK;
  struct disk_cache_validators a = { "http", "http://x/big1", size, NULL,
                                     NULL };
  struct disk_cache_validators b = { "http", "http://x/big2", size, NULL,
                                     NULL };
  struct disk_cache *c;
  struct disk_cache_object *oa, *ob;

  CHECK (disk_cache_new (dir, 16 * CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &a, &oa) == 0);
  store (oa, size, 0, 40, 3);
  CHECK (disk_cache_used (c) <= 16 * CHUNK);
  /* The most recent chunks survive. */
  CHECK (read_check (oa, 39 * CHUNK, CHUNK, 3) == 0);
  CHECK (read_check (oa, 0, CHUNK, 3) == -ENODATA);
  disk_cache_close_object (oa);
  CHECK (disk_cache_open_object (c, &b, &ob) == 0);
  store (ob, size, 0, 14, 4);
  CHECK (disk_cache_used (c) <= 16 * CHUNK);
  CHECK (read_check (ob, 13 * CHUNK, CHUNK, 4) == 0);
  disk_cache_close_object (ob);
  disk_cache_free (c);
  {
    char cmd[4200];
    FILE *f;
    unsigned long long kb = 0;
    snprintf (cmd, sizeof cmd, "du -sk '%s'", dir);
    f = popen (cmd, "r");
    if (f)
      {
        if (fscanf (f, "%llu", &kb) != 1)
          kb = 0;
        pclose (f);
      }
    CHECK (kb > 0 && kb * 1024 <= 16ull * CHUNK + 64 * 1024);
  }
}

static void
test_torn (const char *dir)
{
  struct disk_cache_validators v = { "http", "http://x/torn", 3 * CHUNK,
                                     "\"t\"", NULL };
  struct disk_cache *c;
  struct disk_cache_object *o;
  char path[4200];
  int fd;

  rm_rf (dir);
  CHECK (disk_cache_new (dir, 64 * CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  store (o, 3 * CHUNK, 0, 3, 5);
  disk_cache_close_object (o);
  disk_cache_free (c);
  CHECK (count_objects (dir) == 1);
  /* Corrupt one header byte of every object file. */
  snprintf (path, sizeof path, "for f in '%s'/*.dsc; do printf 'Z' | "
            "dd of=\"$f\" bs=1 seek=60 conv=notrunc status=none; done", dir);
  CHECK (system (path) == 0);
  CHECK (disk_cache_new (dir, 64 * CHUNK, &c) == 0);
  CHECK (count_objects (dir) == 0);
  CHECK (disk_cache_used (c) == 0);
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  CHECK (disk_cache_read (o, (char[16]) {0}, 16, 0) == -ENODATA);
  disk_cache_close_object (o);
  disk_cache_free (c);
  /* A stray temporary file is removed too. */
  snprintf (path, sizeof path, "%s/abc.dsc.tmp1", dir);
  fd = open (path, O_CREAT | O_WRONLY, 0600);
  CHECK (fd >= 0);
  if (fd >= 0)
    close (fd);
  CHECK (disk_cache_new (dir, 64 * CHUNK, &c) == 0);
  CHECK (access (path, F_OK) < 0);
  disk_cache_free (c);
}

struct race
{
  struct disk_cache_object *o;
  int stop;
  int bad;
  int hits;
};

static void *
reader (void *arg)
{
  struct race *r = arg;
  unsigned seed = 12345;

  while (!__atomic_load_n (&r->stop, __ATOMIC_RELAXED))
    {
      uint64_t i = rand_r (&seed) % 32;
      int x = read_check (r->o, i * CHUNK + 4096, 8192, 6);
      if (x == -EBADMSG)
        __atomic_add_fetch (&r->bad, 1, __ATOMIC_RELAXED);
      else if (x == 0)
        __atomic_add_fetch (&r->hits, 1, __ATOMIC_RELAXED);
    }
  return NULL;
}

static void
test_race (const char *dir)
{
  struct disk_cache_validators v = { "http", "http://x/race", 32 * CHUNK,
                                     NULL, NULL };
  struct disk_cache *c;
  struct race r = { 0 };
  pthread_t t[4];

  rm_rf (dir);
  CHECK (disk_cache_new (dir, 12 * CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &v, &r.o) == 0);
  for (int i = 0; i < 4; i++)
    pthread_create (&t[i], NULL, reader, &r);
  for (int round = 0; round < 20; round++)
    store (r.o, 32 * CHUNK, 0, 32, 6);
  __atomic_store_n (&r.stop, 1, __ATOMIC_RELAXED);
  for (int i = 0; i < 4; i++)
    pthread_join (t[i], NULL);
  CHECK (r.bad == 0);
  CHECK (r.hits > 0);
  CHECK (disk_cache_used (c) <= 12 * CHUNK);
  disk_cache_close_object (r.o);
  disk_cache_free (c);
}

/* Bytes the files of dir occupy on disk (du), or 0. */
static unsigned long long
disk_usage (const char *dir)
{
  char cmd[4200];
  unsigned long long kb = 0;
  FILE *f;

  snprintf (cmd, sizeof cmd, "du -sk '%s'", dir);
  f = popen (cmd, "r");
  if (f)
    {
      if (fscanf (f, "%llu", &kb) != 1)
        kb = 0;
      pclose (f);
    }
  return kb * 1024;
}

/* Objects claiming huge sizes cost neither memory nor disk for their
 * bitmaps, evict nothing to make room for them, and their far chunks
 * are stored, survive a restart and read back.  15 TiB (a 1.9 MiB
 * bitmap, 240 MiB of per-chunk records if allocated whole) fits the
 * 16 TiB file limit of ext4; DISK_CACHE_MAX_SIZE (1 PiB) opens without
 * harm even where the file system refuses such a file; larger objects
 * are refused. */
static void
test_huge (const char *dir)
{
  uint64_t huge = UINT64_C (15) << 40;
  struct disk_cache_validators small = { "http", "http://x/small", 4 * CHUNK,
                                         NULL, NULL };
  struct disk_cache_validators big = { "http", "http://x/huge", huge,
                                       "\"h\"", NULL };
  struct disk_cache_validators max = { "http", "http://x/max",
                                       DISK_CACHE_MAX_SIZE, NULL, NULL };
  struct disk_cache_validators bigger = { "http", "http://x/huger",
                                          DISK_CACHE_MAX_SIZE + 1, NULL,
                                          NULL };
  struct disk_cache *c;
  struct disk_cache_object *os, *ob, *o3;
  uint64_t last = huge / CHUNK - 1;

  rm_rf (dir);
  CHECK (disk_cache_new (dir, 8 * CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &small, &os) == 0);
  store (os, 4 * CHUNK, 0, 4, 7);
  CHECK (disk_cache_open_object (c, &big, &ob) == 0);
  store (ob, huge, 0, 1, 8);
  store (ob, huge, last, last + 1, 8);
  store (ob, huge, last / 2, last / 2 + 1, 8);
  /* 4 + 3 chunks fit the bound of 8: nothing was evicted for a bitmap. */
  CHECK (read_check (os, 0, 4 * CHUNK, 7) == 0);
  CHECK (read_check (ob, last * CHUNK, CHUNK, 8) == 0);
  CHECK (read_check (ob, (last / 2) * CHUNK + 5, 100, 8) == 0);
  CHECK (read_check (ob, CHUNK, 100, 8) == -ENODATA);
  CHECK (disk_cache_used (c) <= 8 * CHUNK);
  disk_cache_close_object (ob);
  disk_cache_close_object (os);
  disk_cache_free (c);
  /* Data, headers and touched bitmap pages only. */
  CHECK (disk_usage (dir) < 7ull * CHUNK + 256 * 1024);

  CHECK (disk_cache_new (dir, 8 * CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &big, &ob) == 0);
  CHECK (read_check (ob, last * CHUNK, CHUNK, 8) == 0);
  CHECK (read_check (ob, 0, CHUNK, 8) == 0);
  CHECK (disk_cache_object_present (ob) == 3 * CHUNK);
  disk_cache_invalidate (ob);
  CHECK (read_check (ob, last * CHUNK, 16, 8) == -ENODATA);
  disk_cache_close_object (ob);
  CHECK (disk_cache_open_object (c, &max, &o3) == 0);
  CHECK (read_check (o3, DISK_CACHE_MAX_SIZE - CHUNK, 16, 8) == -ENODATA);
  disk_cache_close_object (o3);
  CHECK (disk_cache_open_object (c, &bigger, &o3) < 0);
  disk_cache_free (c);
}

/* The object file path the cache uses for an "http" key. */
static void
object_file (const char *dir, const char *key, const char *suffix, char *out,
             size_t size)
{
  char buf[512];
  unsigned char digest[32];
  char hex[33];
  size_t n = strlen (key);

  memcpy (buf, "http", 5);
  memcpy (buf + 5, key, n);
  gnutls_hash_fast (GNUTLS_DIG_SHA256, buf, 5 + n, digest);
  for (int i = 0; i < 16; i++)
    snprintf (hex + 2 * i, 3, "%02x", digest[i]);
  snprintf (out, size, "%s/%s.dsc%s", dir, hex, suffix);
}

/* True when path holds exactly text. */
static bool
file_is (const char *path, const char *text)
{
  char buf[256] = "";
  FILE *f = fopen (path, "r");
  size_t n;

  if (f == NULL)
    return false;
  n = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[n] = '\0';
  return strcmp (buf, text) == 0;
}

/* Symlinks planted at an object's temporary or final name are never
 * followed: the file they point to is left alone. */
static void
test_planted_symlinks (const char *dir)
{
  struct disk_cache_validators v = { "http", "http://x/planted", 2 * CHUNK,
                                     NULL, NULL };
  char victim[4200], victim2[4200], tmp[4200], final[4200], suffix[64];
  struct disk_cache *c;
  struct disk_cache_object *o;
  struct stat st;
  FILE *f;

  rm_rf (dir);
  snprintf (victim, sizeof victim, "%s.victim", dir);
  snprintf (victim2, sizeof victim2, "%s.victim2", dir);
  for (int i = 0; i < 2; i++)
    {
      f = fopen (i ? victim2 : victim, "w");
      CHECK (f != NULL);
      if (f)
        {
          fputs ("precious", f);
          fclose (f);
        }
    }
  CHECK (disk_cache_new (dir, 64 * CHUNK, &c) == 0);
  snprintf (suffix, sizeof suffix, ".tmp%ld", (long) getpid ());
  object_file (dir, v.key, suffix, tmp, sizeof tmp);
  object_file (dir, v.key, "", final, sizeof final);
  CHECK (symlink (victim, tmp) == 0);
  CHECK (symlink (victim2, final) == 0);
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  store (o, 2 * CHUNK, 0, 2, 11);
  CHECK (read_check (o, 0, 2 * CHUNK, 11) == 0);
  disk_cache_close_object (o);
  disk_cache_free (c);
  CHECK (file_is (victim, "precious"));
  CHECK (file_is (victim2, "precious"));
  CHECK (lstat (final, &st) == 0 && S_ISREG (st.st_mode));
  CHECK (lstat (tmp, &st) < 0);
  /* And the object is a good one. */
  CHECK (disk_cache_new (dir, 64 * CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  CHECK (read_check (o, 0, 2 * CHUNK, 11) == 0);
  disk_cache_close_object (o);
  disk_cache_free (c);
  unlink (victim);
  unlink (victim2);
}

/* Store one chunk in a new cache in dir; true when it was kept. */
static bool
cache_keeps (const char *dir)
{
  struct disk_cache_validators v = { "http", "http://x/keeps", CHUNK, NULL,
                                     NULL };
  struct disk_cache *c;
  struct disk_cache_object *o;
  bool kept;

  CHECK (disk_cache_new (dir, 64 * CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  store (o, CHUNK, 0, 1, 12);
  kept = read_check (o, 0, CHUNK, 12) == 0;
  disk_cache_close_object (o);
  disk_cache_free (c);
  return kept;
}

/* A cache dir that others could write to, or owned by another user, is
 * not used (reads go uncached); a private one is. */
static void
test_private_dir (const char *dir)
{
  rm_rf (dir);
  CHECK (mkdir (dir, 0700) == 0);
  CHECK (chmod (dir, 0777) == 0);
  CHECK (!cache_keeps (dir));
  CHECK (count_objects (dir) == 0);
  CHECK (chmod (dir, 0770) == 0);
  CHECK (!cache_keeps (dir));
  CHECK (count_objects (dir) == 0);
  CHECK (chmod (dir, 0755) == 0);
  CHECK (cache_keeps (dir));
  CHECK (count_objects (dir) == 1);
  if (geteuid () == 0)
    {
      /* Only root can give the dir away; as another user the check
       * above is what runs. */
      rm_rf (dir);
      CHECK (mkdir (dir, 0700) == 0);
      CHECK (chown (dir, 65534, 65534) == 0);
      CHECK (!cache_keeps (dir));
      CHECK (count_objects (dir) == 0);
    }
}

static void
test_unusable (void)
{
  struct disk_cache_validators v = { "http", "http://x/u", CHUNK, NULL,
                                     NULL };
  struct disk_cache *c;
  struct disk_cache_object *o;
  char buf[CHUNK / 4];

  CHECK (disk_cache_new ("/proc/diskshelf-cannot-exist", CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  memset (buf, 1, sizeof buf);
  CHECK (disk_cache_read (o, buf, 10, 0) == -ENODATA);
  disk_cache_close_object (o);
  disk_cache_free (c);
}

/* Blobs and entry facts count against the bound and are evicted least
 * recently used first, like chunks; temporary files a crash left behind
 * are removed when the cache opens. */
static void
test_blobs_bounded (const char *dir)
{
  uint64_t size = 12 * CHUNK;
  struct disk_cache_validators v = { "http", "http://x/after-blob", size,
                                     NULL, NULL };
  struct disk_cache_entry_facts facts = { .size = 1, .stack = "file", .writable = false };
  struct disk_cache *c;
  struct disk_cache_object *o;
  char *blob = malloc (2 * CHUNK), path[4300];
  uint8_t *back;
  size_t len;
  int fd;

  CHECK (blob != NULL);
  fill (blob, 2 * CHUNK, 0, 9);
  CHECK (disk_cache_new (dir, 8 * CHUNK, &c) == 0);
  disk_cache_remember_blob (c, "torrent-info", "abc", blob, 2 * CHUNK);
  disk_cache_remember_entry (c, "entry-key", &facts);
  CHECK (disk_cache_used (c) >= 2 * CHUNK);
  CHECK (disk_cache_recall_blob (c, "torrent-info", "abc", 4 * CHUNK, &back,
                                 &len) == 0 && len == 2 * CHUNK
         && memcmp (back, blob, len) == 0);
  free (back);
  disk_cache_free (c);

  /* Counted again after a restart, and leftovers of cut writes go. */
  snprintf (path, sizeof path, "%s/0123.dsb.tmp4242", dir);
  fd = open (path, O_WRONLY | O_CREAT, 0600);
  CHECK (fd >= 0);
  close (fd);
  snprintf (path, sizeof path, "%s/0123.dse.tmp4242", dir);
  fd = open (path, O_WRONLY | O_CREAT, 0600);
  CHECK (fd >= 0);
  close (fd);
  CHECK (disk_cache_new (dir, 8 * CHUNK, &c) == 0);
  CHECK (count_matching (dir, "\\.tmp") == 0);
  CHECK (disk_cache_used (c) >= 2 * CHUNK);
  /* Newer chunks push the older blob and facts out. */
  sleep (1);   /* the dormant files' times are in milliseconds; be sure */
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  store (o, size, 0, 12, 5);
  CHECK (disk_cache_used (c) <= 8 * CHUNK);
  CHECK (disk_cache_recall_blob (c, "torrent-info", "abc", 4 * CHUNK, &back,
                                 &len) == -ENOENT);
  CHECK (count_matching (dir, "\\.dsb$") == 0
         && count_matching (dir, "\\.dse$") == 0);
  disk_cache_close_object (o);
  disk_cache_free (c);
  free (blob);
}

/* True when fd holds [0, size) of the pattern, with no hole. */
static bool
data_file_holds (int fd, uint64_t size, unsigned seed)
{
  char *got = malloc (CHUNK), *want = malloc (CHUNK);
  bool ok = got && want && lseek (fd, 0, SEEK_HOLE) == (off_t) size;

  for (uint64_t off = 0; ok && off < size; off += CHUNK)
    {
      size_t n = size - off < CHUNK ? size - off : CHUNK;
      fill (want, n, off, seed);
      ok = pread (fd, got, n, (off_t) off) == (ssize_t) n
        && memcmp (got, want, n) == 0;
    }
  free (got);
  free (want);
  return ok;
}

/* A complete object lends its data file: the object's bytes at their own
 * offsets and nothing after them; pinned whole, eviction leaves every
 * chunk of it; unpinned, it is evictable again. */
static void
test_pin_whole (const char *dir)
{
  uint64_t size = 3 * CHUNK + 100;
  struct disk_cache_validators a = { "http", "http://x/pin-a", size, NULL,
                                     NULL };
  struct disk_cache_validators b = { "http", "http://x/pin-b", 12 * CHUNK,
                                     NULL, NULL };
  struct disk_cache *c;
  struct disk_cache_object *oa, *ob;
  struct stat st;
  int fd = -1;

  rm_rf (dir);
  CHECK (disk_cache_new (dir, 8 * CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &a, &oa) == 0);
  store (oa, size, 0, 3, 7);
  CHECK (disk_cache_pin_whole (oa, &fd) == -ENODATA);
  store (oa, size, 3, 4, 7);
  CHECK (disk_cache_pin_whole (oa, &fd) == 0);
  CHECK (fd >= 0 && fstat (fd, &st) == 0 && (uint64_t) st.st_size == size);
  CHECK (data_file_holds (fd, size, 7));

  /* Another object fills the cache three times over: none of the pinned
   * object's chunks goes, although they are the oldest. */
  CHECK (disk_cache_open_object (c, &b, &ob) == 0);
  store (ob, 12 * CHUNK, 0, 12, 8);
  CHECK (disk_cache_used (c) <= 8 * CHUNK);
  CHECK (disk_cache_object_present (oa) == size);
  CHECK (read_check (oa, 0, size, 7) == 0);
  CHECK (data_file_holds (fd, size, 7));
  CHECK (read_check (ob, 11 * CHUNK, CHUNK, 8) == 0);

  /* Unpinned, the object is evictable again. */
  disk_cache_unpin_whole (oa);
  disk_cache_invalidate (ob);
  store (ob, 12 * CHUNK, 0, 8, 9);
  CHECK (disk_cache_object_present (oa) < size);
  CHECK (disk_cache_pin_whole (oa, &fd) == -ENODATA);
  disk_cache_close_object (ob);
  disk_cache_close_object (oa);
  disk_cache_free (c);

  /* A data file without its metadata (a crash while dropping) is
   * removed by the next scan; so is a version 1 object (data inside the
   * .dsc), with its metadata. */
  {
    char cmd[4200];
    snprintf (cmd, sizeof cmd, "cd '%s' && touch 0123.dsd && "
              "for f in *.dsc; do printf '\\001' | dd of=\"$f\" bs=1 "
              "seek=8 conv=notrunc status=none; done", dir);
    CHECK (system (cmd) == 0);
    CHECK (count_objects (dir) == 2);
    CHECK (disk_cache_new (dir, 8 * CHUNK, &c) == 0);
    CHECK (count_objects (dir) == 0);
    snprintf (cmd, sizeof cmd, "ls '%s' | grep -q '\\.dsd$'", dir);
    CHECK (system (cmd) != 0);
    CHECK (disk_cache_used (c) == 0);
    disk_cache_free (c);
  }
}

/* One chunk given as several buffers (torrent pieces): stored as if
 * written whole, the short last chunk too; parts that do not make up
 * exactly one chunk are refused. */
static void
test_write_parts (const char *dir)
{
  uint64_t size = 2 * CHUNK + 3 * 16384 + 100;
  struct disk_cache_validators v = { "torrent", "abc", size, NULL, NULL };
  struct disk_cache *c;
  struct disk_cache_object *o;
  char *buf = malloc (CHUNK);
  struct iovec parts[DISK_CACHE_MAX_PARTS + 1];

  CHECK (disk_cache_new (dir, 64 * CHUNK, &c) == 0);
  CHECK (disk_cache_open_object (c, &v, &o) == 0);
  /* Chunk 1 as four pieces of 256 KiB, from separate buffers. */
  fill (buf, CHUNK, CHUNK, 3);
  for (int k = 0; k < 4; k++)
    {
      parts[3 - k].iov_base = malloc (CHUNK / 4);
      memcpy (parts[3 - k].iov_base, buf + (3 - k) * (CHUNK / 4), CHUNK / 4);
      parts[3 - k].iov_len = CHUNK / 4;
    }
  CHECK (disk_cache_write_parts (o, parts, 4, CHUNK, 0) == 0);
  CHECK (read_check (o, CHUNK, CHUNK, 3) == 0);
  CHECK (!disk_cache_has (o, 0, 1));
  /* Three parts short: not one chunk. */
  CHECK (disk_cache_write_parts (o, parts, 3, 0, 0) == -EINVAL);
  CHECK (disk_cache_write_parts (o, parts, 4, 100, 0) == -EINVAL);
  CHECK (!disk_cache_has (o, 0, 1));
  for (int k = 0; k < 4; k++)
    free (parts[k].iov_base);
  /* The short last chunk in 16 KiB parts and a 100-byte tail. */
  fill (buf, 3 * 16384 + 100, 2 * CHUNK, 3);
  for (int k = 0; k < 4; k++)
    parts[k] = (struct iovec) { buf + k * 16384, k < 3 ? 16384 : 100 };
  CHECK (disk_cache_write_parts (o, parts, 4, 2 * CHUNK, 0) == 0);
  CHECK (read_check (o, 2 * CHUNK, 3 * 16384 + 100, 3) == 0);
  /* More parts than allowed. */
  for (int k = 0; k <= DISK_CACHE_MAX_PARTS; k++)
    parts[k] = (struct iovec) { buf, k == 0 ? CHUNK - DISK_CACHE_MAX_PARTS
                                            : 1 };
  CHECK (disk_cache_write_parts (o, parts, DISK_CACHE_MAX_PARTS + 1, 0, 0)
         == -EINVAL);
  disk_cache_close_object (o);
  disk_cache_free (c);
  free (buf);
}

int
main (void)
{
  char dir[] = "/tmp/dscache-test-XXXXXX";
  char sub[200];

  if (mkdtemp (dir) == NULL)
    return 2;
  snprintf (sub, sizeof sub, "%s/cache", dir);
  test_basic_and_reopen (sub);
  rm_rf (sub);
  test_write_parts (sub);
  rm_rf (sub);
  test_bound (sub);
  test_torn (sub);
  test_race (sub);
  test_huge (sub);
  test_planted_symlinks (sub);
  test_private_dir (sub);
  rm_rf (sub);
  test_blobs_bounded (sub);
  test_unusable ();
  test_pin_whole (sub);
  rm_rf (dir);
  if (check_failures)
    fprintf (stderr, "%d checks failed\n", check_failures);
  else
    printf ("disk cache: all checks passed\n");
  return check_failures ? 1 : 0;
}
