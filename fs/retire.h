/* diskshelf: giving every version of an entry its own inode.
 *
 * The kernel keeps one page cache and one set of attributes per inode,
 * and libfuse's high-level API gives a path the same inode for as long
 * as the kernel remembers it (an open file keeps it remembered).  When a
 * reload replaced or dropped an entry, a new open of the same name would
 * land on the old inode: on its cached pages and its size.  So after a
 * reload the daemon unlinks, through its own mount, every name whose
 * entry it replaced or dropped.  libfuse then hides an inode that is
 * still open under a ".fuse_hidden..." name (and forgets one that is
 * not), and the next lookup of the name gets a fresh inode for the new
 * version.
 *
 * While a name is being retired it still resolves to the old entry, for
 * everyone, so nothing opens the new version on the old inode; once its
 * unlink returned it resolves in the new tree.  A hidden name resolves
 * to the entry it was hidden with until the last file on it closes.
 *
 * Thread model: the reloader thread alone calls retire_prepare and
 * retire_run (which does the unlinks on a helper thread it waits for at
 * most 10 s); FUSE threads call the others.  All state is protected by
 * one mutex inside retire.c.
 *
 * Known limits: a lookup racing with the unlink of its name may give
 * the new inode the old version's attributes until they time out (1 s);
 * an unlink waits for a write in progress on the old inode.
 *
 * Ownership: entries returned by retire_lookup carry one reference the
 * caller drops with fs_entry_unref.
 */
#ifndef DISKSHELF_FS_RETIRE_H
#define DISKSHELF_FS_RETIRE_H

#include "tree.h"

struct daemon;

/* The FUSE session is up (INIT done) or going down: names are retired
 * only while it is up. */
void retire_set_serving (bool yes);

/* Note every entry of `old` that `fresh` does not carry over, before
 * `fresh` is swapped in.  Returns how many names are to be retired. */
size_t retire_prepare (struct fs_tree *old, struct fs_tree *fresh);

/* After the swap: unlink the prepared names through the mount, so the
 * next lookup of each gets a new inode. */
void retire_run (struct daemon *d);

/* What a path means while versions are retired: 1 and a referenced
 * *entry for a name being retired or a hidden name, 2 for a directory
 * that only a retiring name still needs, 0 when the current tree
 * decides. */
int retire_lookup (const char *path, struct fs_entry **entry);

/* libfuse hides an open inode with a rename: accept it for a name being
 * retired (0), refuse anything else (-EROFS). */
int retire_rename (const char *from, const char *to);

/* Unlinks of retiring and hidden names succeed (0); the catalog decides
 * what exists, so anything else is refused (-EROFS). */
int retire_unlink (const char *path);

/* Drop every hidden entry (at exit). */
void retire_forget_all (void);

#endif
