/* diskshelf: making a whole image local (`diskshelf prefetch`), daemon
 * side.
 *
 * A prefetch job reads an entry's whole stack once, front to back, on a
 * thread of its own: remote bytes land in the disk cache and a
 * single-block xz image is decoded into it, so later reads need no
 * network.  There is at most one job per entry; asking again joins it.
 *
 * The command talks to the daemon through extended attributes of the
 * file in the mount, read with getxattr:
 *
 *   user.diskshelf.prefetch         progress, no side effect
 *   user.diskshelf.prefetch-start   start (or join) the job; progress
 *   user.diskshelf.prefetch-stop    leave the job; progress
 *
 * getxattr, not setxattr, because it needs only read permission and works
 * on read-only (-o ro) mounts, where the kernel refuses every setxattr:
 * whoever may read the file may make it local.  Progress is one line
 * "STATE DONE TOTAL WAITERS[ REASON]" with STATE one of idle, running,
 * done, failed, stopped.  A job runs while at least one started-and-not-
 * stopped request remains (a --background start never leaves), so one
 * user's Ctrl-C does not stop another's prefetch of the same file.
 *
 * Thread model: every function may be called from any FUSE thread; the
 * job list is protected by one mutex.  Jobs hold a reference on their
 * entry until reaped (a minute after they finish) or prefetch_stop_all.
 */
#ifndef DISKSHELF_FS_PREFETCH_H
#define DISKSHELF_FS_PREFETCH_H

#include <stddef.h>

struct daemon;

#define PREFETCH_XATTR "user.diskshelf.prefetch"
#define PREFETCH_XATTR_START "user.diskshelf.prefetch-start"
#define PREFETCH_XATTR_STOP "user.diskshelf.prefetch-stop"

/* The FUSE getxattr operation for path: the prefetch attributes of
 * entries; -ENODATA for anything else. */
int fs_prefetch_getxattr (struct daemon *d, const char *path,
                          const char *name, char *value, size_t size);

/* Stop every job and wait for it (before the stacks are closed). */
void prefetch_stop_all (void);

#endif
