/* diskshelf: the FUSE session (libfuse's low-level API): init, destroy,
 * notifications sent from other threads, and the operations table (see
 * ops.h for which file answers what). */
#include "ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "mount_watch.h"
#include "nodes.h"

struct daemon *
ops_daemon (fuse_req_t req)
{
  return fuse_req_userdata (req);
}

struct fs_tree *
ops_current_tree (struct daemon *d)
{
  struct fs_tree *t;

  pthread_rwlock_rdlock (&d->tree_lock);
  t = d->tree;
  fs_tree_ref (t);
  pthread_rwlock_unlock (&d->tree_lock);
  return t;
}

char *
ops_status_text (struct daemon *d, size_t *len)
{
  char *text = NULL;
  struct fs_tree *t;
  FILE *mem = open_memstream (&text, len);

  if (mem == NULL)
    return NULL;
  t = ops_current_tree (d);
  fprintf (mem, "catalog: %s\nmountpoint: %s\npid: %d\n",
           d->options.catalog, d->options.mountpoint, (int) getpid ());
  /* The settings in force, so an fstab line can be checked. */
  fprintf (mem, "cache-dir: %s\ncache-size: %llu\nmemory-cache-size: %llu\n"
           "read-only: %s\n",
           d->options.cache_dir ? d->options.cache_dir : "none",
           (unsigned long long) d->options.cache_size,
           (unsigned long long) d->options.memory_cache_size,
           d->options.readonly ? "yes" : "no");
  /* How many entry inodes the kernel holds (lookups not yet forgotten). */
  fprintf (mem, "kernel-inodes: %llu\n",
           (unsigned long long) nodes_file_count ());
  fs_tree_status (t, mem);
  fs_tree_unref (t);
  fclose (mem);
  return text;
}

/* The session, for notifications sent from other threads; set between
 * init and destroy, protected by serving_lock (held across a
 * notification, so destroy waits for one in progress).  While INIT is
 * answered through the passthrough negotiation, the session's fd is a
 * stand-in socket whose next message must be libfuse's INIT answer: a
 * notification written then went to the kernel as that answer (seen in
 * CI: the INIT answer stayed unread, and every access to the mount hung).
 * So init only parks the session (held_session) until
 * ops_hold_notifications (false); the kernel caches nothing before INIT
 * is answered, so nothing is lost. */
static pthread_mutex_t serving_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fuse_session *serving_session;
static struct fuse_session *held_session;
static bool holding;

void
ops_hold_notifications (bool hold)
{
  pthread_mutex_lock (&serving_lock);
  holding = hold;
  if (!hold && held_session)
    {
      serving_session = held_session;
      held_session = NULL;
    }
  pthread_mutex_unlock (&serving_lock);
}

/* Drop the kernel's cached attributes and pages of an entry's inode,
 * and its name (an entry that broke leaves the mount). */
void
fs_entry_attributes_changed (struct fs_entry *e)
{
  pthread_mutex_lock (&serving_lock);
  /* -ENOENT: the kernel does not know the inode; nothing cached. */
  if (serving_session)
    fuse_lowlevel_notify_inval_inode (serving_session, e->ino, 0, 0);
  pthread_mutex_unlock (&serving_lock);
  __atomic_store_n (&e->bytes_to_page_cache, 0, __ATOMIC_RELAXED);
  fs_forget_name (e->config->name);
}

/* Make the kernel look a name up again ("a/b.img", relative to the
 * mount), so it meets the inode the name now means. */
int
fs_forget_name (const char *name)
{
  const char *slash = strrchr (name, '/');
  char dir[4096];
  uint64_t parent;
  int r = 0;

  if (slash == NULL)
    snprintf (dir, sizeof dir, "/");
  else
    snprintf (dir, sizeof dir, "/%.*s", (int) (slash - name), name);
  parent = nodes_dir_ino_known (dir);
  if (parent == 0)
    return 0;   /* the kernel never looked into that directory */
  pthread_mutex_lock (&serving_lock);
  if (serving_session)
    {
      const char *last = slash ? slash + 1 : name;
      r = fuse_lowlevel_notify_inval_entry (serving_session, parent, last,
                                            strlen (last));
    }
  pthread_mutex_unlock (&serving_lock);
  return r == -ENOENT ? 0 : r;
}

/* init: parallel reads from one file reach us in parallel; the session
 * starts serving notifications. */
static void
ops_init (void *userdata, struct fuse_conn_info *conn)
{
  struct daemon *d = userdata;

  if (conn->capable & FUSE_CAP_ASYNC_READ)
    conn->want |= FUSE_CAP_ASYNC_READ;
  pthread_mutex_lock (&serving_lock);
  if (holding)
    held_session = d->session;
  else
    serving_session = d->session;
  pthread_mutex_unlock (&serving_lock);
  if (mount_watch_start (d->options.mountpoint) < 0)
    log_warning ("%s", error_message ());
}

/* destroy: the session ends; no more notifications through it. */
static void
ops_destroy (void *userdata)
{
  pthread_mutex_lock (&serving_lock);
  serving_session = NULL;
  held_session = NULL;
  pthread_mutex_unlock (&serving_lock);
  mount_watch_stop ();
}

static const struct fuse_lowlevel_ops operations = {
  .init = ops_init,
  .destroy = ops_destroy,
  .lookup = ops_lookup,
  .forget = ops_forget,
  .forget_multi = ops_forget_multi,
  .getattr = ops_getattr,
  .setattr = ops_setattr,
  .opendir = ops_opendir,
  .readdir = ops_readdir,
  .readdirplus = ops_readdirplus,
  .releasedir = ops_releasedir,
  .open = ops_open,
  .release = ops_release,
  .read = ops_read,
  .write = ops_write,
  .fsync = ops_fsync,
  .fallocate = ops_fallocate,
  .lseek = ops_lseek,
  .statfs = ops_statfs,
  .ioctl = ops_ioctl,
  .unlink = ops_unlink,
  .rename = ops_rename,
};

const struct fuse_lowlevel_ops *
fs_operations (void)
{
  return &operations;
}
