/* diskshelf: noticing that our mount is gone while the daemon still runs.
 *
 * After a lazy unmount (`fusermount3 -uz`, `umount -l`) the FUSE session
 * lives on until the last open file closes, and a reader blocked on a
 * silent server would wait for the entry's whole timeout.  A watcher
 * thread follows /proc/self/mountinfo (poll wakes on every mount table
 * change) and, once no mount has our device number, calls
 * layer_abort_waits (backends/layer.h): blocked reads fail with EIO,
 * readers close their files, and the session ends.  The same happens
 * after a plain unmount, so no worker thread keeps the exit waiting.
 *
 * Thread model: start and stop are called from the FUSE session's init
 * and destroy; the watcher thread owns everything else.
 */
#ifndef DISKSHELF_FS_MOUNT_WATCH_H
#define DISKSHELF_FS_MOUNT_WATCH_H

/* Start the watcher for the mount at mountpoint (absolute; borrowed and
 * kept valid until mount_watch_stop).  Returns 0 or a negative errno
 * with a recorded message. */
int mount_watch_start (const char *mountpoint);

/* Stop and join the watcher, if running. */
void mount_watch_stop (void);

#endif
