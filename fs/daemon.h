/* diskshelf: the state one mounted daemon shares between its FUSE
 * operations, the catalog reloader and main.
 *
 * Thread model: `tree` is swapped under tree_lock (a read lock is held
 * only while looking up a node and taking references).  The rest is set
 * before FUSE starts and read-only afterwards.
 */
#ifndef DISKSHELF_DAEMON_H
#define DISKSHELF_DAEMON_H

#include <pthread.h>

#include "options.h"
#include "stack.h"
#include "tree.h"

struct fuse_session;

#define STATUS_FILE_NAME ".diskshelf-status"

struct daemon
{
  struct daemon_options options;
  struct services services;
  struct stack_context base;        /* entry is NULL; filled per entry */
  pthread_rwlock_t tree_lock;
  struct fs_tree *tree;             /* protected by tree_lock */
  struct timespec started;          /* directory times */
  uid_t uid;
  gid_t gid;
  struct fuse_session *session;     /* set before the loop starts */
};

/* The FUSE operations (fs/ops.c), for fuse_session_new; userdata is
 * the daemon. */
struct fuse_lowlevel_ops;
const struct fuse_lowlevel_ops *fs_operations (void);

/* Make the kernel look a name ("a/b.img") up again, so that it meets
 * the inode the name means now (after a reload replaced its entry).
 * Call outside any FUSE request.  0, or a negative errno. */
int fs_forget_name (const char *name);

/* Free the file handles still open after the FUSE loop ended. */
void fs_release_all (void);

/* Re-read the catalog and swap in a new tree (fs/reload.c).  Entries
 * whose files did not change keep their open stacks. */
int daemon_reload (struct daemon *d);

/* Start watching the catalog (inotify) and SIGHUP; call before the
 * catalog is first read so no change is missed. */
void daemon_prepare_watch (struct daemon *d);

/* Start the thread that reloads on catalog changes (inotify) and on
 * SIGHUP.  Must be called after the daemon forked. */
int daemon_watch_catalog (struct daemon *d);

/* Stop the watcher thread. */
void daemon_stop_watching (void);

#endif
