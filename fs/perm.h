/* diskshelf: owner, group and mode of the files the mount shows.
 *
 * An entry's `owner =`, `group =`, `mode =` win; then the daemon's
 * --owner, --group, --mode; then the daemon's own user and group and
 * 0444 (0644 when the entry is writable).  Write bits are never shown on
 * a read-only entry.  The kernel enforces them with -o
 * default_permissions; -o allow_other lets other users in at all.
 *
 * Thread model: pure; call from any thread.
 */
#ifndef DISKSHELF_FS_PERM_H
#define DISKSHELF_FS_PERM_H

#include <sys/stat.h>

struct daemon;
struct fs_entry;

/* Fill st_uid, st_gid and the permission bits of st_mode. */
void fs_entry_ownership (const struct daemon *d, const struct fs_entry *e,
                         struct stat *st);

#endif
