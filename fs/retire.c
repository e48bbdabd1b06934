/* diskshelf: retiring old versions of entries to their own inodes (see
 * retire.h for why). */
#include "retire.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "error.h"
#include "thread.h"

#define HIDDEN_PREFIX "/.fuse_hidden"
#define FUSE_SUPER_MAGIC 0x65735546
#define FUSE_ROOT_INODE 1
#define RETIRE_WAIT_S 10

/* A name being retired, or a hidden name of an old version. */
struct retired
{
  char *path;                 /* "/a/b.img" or "/a/.fuse_hidden..." */
  struct fs_entry *entry;     /* one reference */
  bool hidden;
  struct retired *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct retired *list;     /* protected by lock */
static bool serving;             /* protected by lock */
static pthread_cond_t worker_cond = PTHREAD_COND_INITIALIZER;
static bool worker_done;         /* protected by lock */

/* Record that the session is (or is no longer) answering requests. */
void
retire_set_serving (bool yes)
{
  pthread_mutex_lock (&lock);
  serving = yes;
  pthread_mutex_unlock (&lock);
}

/* Add a record; the caller holds lock.  Takes a reference on e. */
static int
add_record (const char *path, struct fs_entry *e, bool hidden)
{
  struct retired *r = calloc (1, sizeof *r);

  if (r == NULL || (r->path = strdup (path)) == NULL)
    {
      free (r);
      return -ENOMEM;
    }
  fs_entry_ref (e);
  r->entry = e;
  r->hidden = hidden;
  r->next = list;
  list = r;
  return 0;
}

/* Unlink and free the first record matching path (and kind); the caller
 * holds lock.  Returns the entry whose reference the caller drops once
 * the lock is released, or NULL. */
static struct fs_entry *
take_record (const char *path, bool hidden)
{
  for (struct retired **p = &list; *p; p = &(*p)->next)
    if ((*p)->hidden == hidden && strcmp ((*p)->path, path) == 0)
      {
        struct retired *r = *p;
        struct fs_entry *e = r->entry;
        *p = r->next;
        free (r->path);
        free (r);
        return e;
      }
  return NULL;
}

/* The record for path, or NULL; the caller holds lock. */
static struct retired *
find_record (const char *path)
{
  for (struct retired *r = list; r; r = r->next)
    if (strcmp (r->path, path) == 0)
      return r;
  return NULL;
}

struct prepare_walk
{
  struct fs_tree *fresh;
  size_t count;
};

/* Walk callback: note an old entry the fresh tree does not carry. */
static void
note_if_replaced (struct fs_entry *e, void *arg)
{
  struct prepare_walk *w = arg;
  char path[4096];
  struct fs_node *n;

  snprintf (path, sizeof path, "/%s", e->config->name);
  n = fs_tree_lookup (w->fresh, path);
  if (n && n->entry == e)
    return;
  if (find_record (path) == NULL && add_record (path, e, false) == 0)
    w->count++;
}

/* Note the entries of old that fresh replaced or dropped. */
size_t
retire_prepare (struct fs_tree *old, struct fs_tree *fresh)
{
  struct prepare_walk w = { fresh, 0 };

  pthread_mutex_lock (&lock);
  if (serving && old)
    fs_tree_for_each_entry (old, note_if_replaced, &w);
  pthread_mutex_unlock (&lock);
  return w.count;
}

/* Open the root of our own mount, making sure it is ours: a lazily
 * unmounted mountpoint shows the directory below, where nothing may be
 * unlinked. */
static int
open_own_root (struct daemon *d)
{
  struct statfs sfs;
  struct stat st;
  int fd = open (d->options.mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd < 0)
    return -1;
  if (fstatfs (fd, &sfs) < 0 || sfs.f_type != FUSE_SUPER_MAGIC
      || fstat (fd, &st) < 0 || st.st_ino != FUSE_ROOT_INODE
      || st.st_mtim.tv_sec != d->started.tv_sec
      || st.st_mtim.tv_nsec != d->started.tv_nsec)
    {
      close (fd);
      return -1;
    }
  return fd;
}

/* Thread body: unlink every prepared name through the mount, then let
 * it resolve in the current tree. */
static void *
retire_worker (void *arg)
{
  struct daemon *d = arg;
  int root = open_own_root (d);

  for (;;)
    {
      struct retired *r;
      struct fs_entry *e;
      char path[4096];

      pthread_mutex_lock (&lock);
      for (r = list; r && r->hidden; r = r->next)
        ;
      if (r)
        snprintf (path, sizeof path, "%s", r->path);
      pthread_mutex_unlock (&lock);
      if (r == NULL)
        break;
      if (root >= 0 && unlinkat (root, path + 1, 0) < 0 && errno != ENOENT)
        log_debug ("%s: the old version keeps its inode: unlink: %s",
                   path + 1, strerror (errno));
      pthread_mutex_lock (&lock);
      e = take_record (path, false);
      pthread_mutex_unlock (&lock);
      fs_entry_unref (e);
    }
  if (root >= 0)
    close (root);
  pthread_mutex_lock (&lock);
  worker_done = true;
  pthread_cond_broadcast (&worker_cond);
  pthread_mutex_unlock (&lock);
  return NULL;
}

/* Run the unlinks on a helper thread and wait for it a bounded time:
 * they are requests to our own mount, and a session that stopped
 * answering (a signal ended the loop) must not hang the reloader, which
 * the exit path joins.  A helper left behind finishes when the unmount
 * aborts its request. */
void
retire_run (struct daemon *d)
{
  struct timespec until;
  pthread_t t;
  bool done;

  pthread_mutex_lock (&lock);
  worker_done = false;
  pthread_mutex_unlock (&lock);
  if (thread_create (&t, NULL, retire_worker, d) != 0)
    {
      retire_worker (d);
      return;
    }
  clock_gettime (CLOCK_REALTIME, &until);
  until.tv_sec += RETIRE_WAIT_S;
  pthread_mutex_lock (&lock);
  while (!worker_done
         && pthread_cond_timedwait (&worker_cond, &lock, &until) == 0)
    ;
  done = worker_done;
  pthread_mutex_unlock (&lock);
  if (done)
    pthread_join (t, NULL);
  else
    {
      log_warning ("reload: the mount did not answer for %d s; changed "
                   "entries keep serving their old version until it does",
                   RETIRE_WAIT_S);
      pthread_detach (t);
    }
}

/* Resolve a path among retiring and hidden names. */
int
retire_lookup (const char *path, struct fs_entry **entry)
{
  size_t len = strlen (path);
  int kind = 0;

  *entry = NULL;
  if (__atomic_load_n (&list, __ATOMIC_ACQUIRE) == NULL)
    return 0;   /* the usual case: nothing is being retired */
  pthread_mutex_lock (&lock);
  for (struct retired *r = list; r; r = r->next)
    {
      if (strcmp (r->path, path) == 0)
        {
          fs_entry_ref (r->entry);
          *entry = r->entry;
          kind = 1;
          break;
        }
      if (!r->hidden && strncmp (r->path, path, len) == 0
          && (r->path[len] == '/' || len == 1))
        kind = 2;
    }
  pthread_mutex_unlock (&lock);
  return kind;
}

/* True if the last component of path starts with ".fuse_hidden". */
static bool
is_hidden_name (const char *path)
{
  const char *slash = strrchr (path, '/');

  return slash && strncmp (slash, HIDDEN_PREFIX, strlen (HIDDEN_PREFIX)) == 0;
}

/* Accept libfuse's hiding rename of a retiring name. */
int
retire_rename (const char *from, const char *to)
{
  struct retired *r;
  int ret = -EROFS;

  if (!is_hidden_name (to))
    return -EROFS;
  pthread_mutex_lock (&lock);
  r = find_record (from);
  if (r && !r->hidden)
    ret = add_record (to, r->entry, true);
  pthread_mutex_unlock (&lock);
  return ret;
}

/* Accept unlinks of retiring and hidden names. */
int
retire_unlink (const char *path)
{
  struct fs_entry *e;
  int ret = -EROFS;

  pthread_mutex_lock (&lock);
  e = take_record (path, true);
  if (e || is_hidden_name (path) || find_record (path))
    ret = 0;
  pthread_mutex_unlock (&lock);
  fs_entry_unref (e);
  return ret;
}

/* Drop every record. */
void
retire_forget_all (void)
{
  for (;;)
    {
      struct retired *r;

      pthread_mutex_lock (&lock);
      r = list;
      if (r)
        list = r->next;
      pthread_mutex_unlock (&lock);
      if (r == NULL)
        return;
      fs_entry_unref (r->entry);
      free (r->path);
      free (r);
    }
}
