/* diskshelf: the inode numbers the mount shows, and the kernel's lookup
 * counts on them (libfuse's low-level API: a FUSE node id is our inode).
 *
 * Every entry version gets its own number when it is created
 * (fs_entry.ino, from nodes_new_ino), kept for the entry's life: the
 * number is stable across lookups, forgets and reloads that carry the
 * entry over, and a new version of an entry (a reload replaced it) is a
 * new number, so the kernel never mixes the old version's pages and size
 * with the new one's.  A file node exists while the kernel holds lookups
 * on it, and holds one reference on its entry, so an inode the kernel
 * still knows answers from its own version even after the tree dropped
 * it.  Directories get a number per path, kept until exit (there are
 * few), and ignore forgets.  The root is FUSE_ROOT_ID (1), the hidden
 * status file NODES_STATUS_INO (2).  Numbers are never reused, so one
 * generation (NODES_GENERATION) serves every node.
 *
 * Thread model: every function is safe from any thread; one mutex inside
 * nodes.c protects the table.
 *
 * Ownership: nodes_file_entry returns a reference the caller drops with
 * fs_entry_unref; nodes_dir_path returns a string owned by the table,
 * valid until nodes_free_all.
 */
#ifndef DISKSHELF_FS_NODES_H
#define DISKSHELF_FS_NODES_H

#include <stdbool.h>
#include <stdint.h>

struct fs_entry;

#define NODES_ROOT_INO 1
#define NODES_STATUS_INO 2
#define NODES_GENERATION 1

/* A fresh inode number, never handed out before. */
uint64_t nodes_new_ino (void);

/* The kernel learnt e's inode (a lookup answered with e->ino): count
 * it.  0, or -ENOMEM. */
int nodes_file_looked_up (struct fs_entry *e);

/* The entry of a file inode the kernel knows, referenced; NULL when ino
 * is not a file node. */
struct fs_entry *nodes_file_entry (uint64_t ino);

/* The inode number of a directory path ("/" or "/a/b"), made on first
 * use; 0 when out of memory. */
uint64_t nodes_dir_ino (const char *path);

/* The number of a directory path if it has one, else 0. */
uint64_t nodes_dir_ino_known (const char *path);

/* The path of a directory inode, or NULL when ino is not a directory. */
const char *nodes_dir_path (uint64_t ino);

/* The kernel forgot n lookups of ino. */
void nodes_forget (uint64_t ino, uint64_t n);

/* How many file nodes the kernel holds (for tests and status). */
uint64_t nodes_file_count (void);

/* Drop every node (at exit, after the session ended). */
void nodes_free_all (void);

#endif
