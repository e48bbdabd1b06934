/* diskshelf: sending names of replaced entries to their new inodes.
 *
 * Every version of an entry is its own inode (nodes.h), so the kernel
 * never mixes an old version's pages or size with a new one's: an inode
 * it still holds (an open file, a cached name) keeps answering from the
 * old version until the kernel forgets it.  What remains after a reload
 * replaced or dropped an entry is the kernel's cached name, which would
 * lead a new open to the old inode for up to the entry timeout.  So
 * after the swap the reloader tells the kernel to drop every such name
 * (FUSE_NOTIFY_INVAL_ENTRY); the next lookup meets the new version.
 *
 * Thread model: the reloader thread alone calls these.  retire_run does
 * the notifications on a helper thread it waits for at most 10 s: the
 * kernel may wait for a lookup in that directory, which a session that
 * stopped answering (a signal ended the loop) never finishes.
 *
 * Ownership: the prepared names are owned here until retire_run.
 */
#ifndef DISKSHELF_FS_RETIRE_H
#define DISKSHELF_FS_RETIRE_H

#include "tree.h"

struct daemon;

/* Note every entry of `old` that `fresh` does not carry over, before
 * `fresh` is swapped in.  Returns how many names are to be retired. */
size_t retire_prepare (struct fs_tree *old, struct fs_tree *fresh);

/* After the swap: make the kernel look each prepared name up again. */
void retire_run (struct daemon *d);

#endif
