/* diskshelf: making a whole image local (`diskshelf prefetch`), daemon
 * side.
 *
 * A prefetch job reads an entry's whole stack once, front to back, on a
 * thread of its own: remote bytes land in the disk cache and a
 * single-block xz image is decoded into it, so later reads need no
 * network.  There is at most one job per entry; asking again joins it.
 *
 * The command talks to the daemon with ioctls on the image itself, opened
 * read-only (the structure and numbers below).  An ioctl needs only read
 * permission and works on read-only (-o ro) mounts; it costs nothing when
 * unused (a getxattr handler would add a GETXATTR round trip to every
 * write(2), for security.capability); and there is no socket to find or
 * secure: whoever may read the image may make it local.  A job runs
 * while at least one started-and-not-stopped request remains (a
 * --background start never leaves), so one user's Ctrl-C does not stop
 * another's prefetch of the same file.
 *
 * Thread model: every function may be called from any FUSE thread; the
 * job list is protected by one mutex.  Jobs hold a reference on their
 * entry until reaped (a minute after they finish) or prefetch_stop_all.
 */
#ifndef DISKSHELF_FS_PREFETCH_H
#define DISKSHELF_FS_PREFETCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>

struct fs_entry;

/* What every prefetch ioctl answers. */
enum prefetch_state
{
  PREFETCH_IDLE, PREFETCH_RUNNING, PREFETCH_DONE, PREFETCH_FAILED,
  PREFETCH_STOPPED,
};

struct prefetch_progress
{
  uint32_t state;        /* enum prefetch_state */
  uint32_t waiters;      /* requests that started and did not stop */
  uint64_t done;         /* bytes read so far */
  uint64_t total;        /* the image's size */
  char reason[488];      /* why it failed or stopped; NUL-terminated */
};

/* Start (or join) the job; answer its progress. */
#define PREFETCH_IOC_START _IOR ('D', 0x70, struct prefetch_progress)
/* Leave the job (it stops when nobody waits); answer its progress. */
#define PREFETCH_IOC_STOP _IOR ('D', 0x71, struct prefetch_progress)
/* Answer the progress only. */
#define PREFETCH_IOC_PROGRESS _IOR ('D', 0x72, struct prefetch_progress)

/* The FUSE ioctl operation on an open entry: the prefetch ioctls;
 * -ENOTTY for any other command. */
int fs_prefetch_ioctl (struct fs_entry *e, unsigned int cmd, void *data);

/* Stop every job and wait for it (before the stacks are closed). */
void prefetch_stop_all (void);

#endif
