/* diskshelf: what /proc/self/mountinfo says about a mountpoint.
 *
 * Thread model: no shared state; call from any thread.
 */
#ifndef DISKSHELF_MOUNTINFO_H
#define DISKSHELF_MOUNTINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Look up the topmost mount on path (absolute, canonical).  Returns true
 * and copies its file system type ("fuse.diskshelf") and source
 * ("diskshelf:/etc/catalog") when path is a mountpoint. */
bool mountinfo_find (const char *path, char *fstype, size_t fstype_size,
                     char *source, size_t source_size);

/* The device of the topmost mount on path when its type is fstype:
 * read from the mount table alone, so that it never holds the mount
 * busy (a stat in flight makes `fusermount3 -u` fail with EBUSY). */
bool mountinfo_device (const char *path, const char *fstype, dev_t *dev);

/* Refuse (EBUSY, with a message) when diskshelf already serves path, so
 * a second daemon does not silently stack on the first. */
int mount_check_not_mounted (const char *path);

#endif
